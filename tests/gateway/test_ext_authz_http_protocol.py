"""extAuthz in the reference's form with `protocol: {http: {...}}`, against a real HTTP authorization
service (starlette on uvicorn, loopback) and a real plain HTTP backend that echoes what it got."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import free_port, http_route_yaml, run_gateway
from tests.gateway.test_ext_authz import serve
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio


def authz_app(seen: list[dict[str, Any]]) -> Starlette:
    async def check(request: Request) -> Response:
        body = await request.body()
        seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body": body.decode(),
            }
        )
        who = request.headers.get("authorization", "")
        if who == "Bearer alice":
            return Response(status_code=200, headers={"x-user": "alice", "x-internal": "no"})
        if who == "Bearer lost":
            return Response(status_code=401)
        return PlainTextResponse("no entry", 418, headers={"x-why": "teapot"})

    return Starlette(routes=[Route("/{path:path}", check, methods=["GET", "POST"])])


def policy(port: int, **http: Any) -> str:
    return json.dumps({"extAuthz": {"host": f"127.0.0.1:{port}", "protocol": {"http": http}}})


async def test_checks_over_http_in_the_reference_shape() -> None:
    seen: list[dict[str, Any]] = []
    async with serve(authz_app(seen)) as base, backend() as (url, _):
        port = int(base.rsplit(":", 1)[1])
        policies = policy(
            port,
            path='"/check" + request.path',
            includeResponseHeaders=["x-user"],
            addRequestHeaders={"x-original-method": "request.method"},
            redirect='"https://login.example/?to=" + request.path',
        )
        async with (
            run_gateway(http_route_yaml(url.removeprefix("http://"), policies)) as gw,
            httpx.AsyncClient(timeout=20) as http,
        ):
            api = f"http://127.0.0.1:{gw.port}/api/items?q=1"
            allowed = await http.post(
                api, content=b"data", headers={"authorization": "Bearer alice", "x-user": "forged", "x-other": "o"}
            )
            assert allowed.status_code == 200
            got = allowed.json()["headers"]
            assert got["x-user"] == "alice" and "x-internal" not in got  # only includeResponseHeaders
            check = seen[-1]
            assert (check["method"], check["path"], check["body"]) == ("POST", "/check/api/items", "")
            assert check["headers"]["authorization"] == "Bearer alice"  # the default includeRequestHeaders
            assert "x-other" not in check["headers"] and check["headers"]["x-original-method"] == "POST"

            lost = await http.get(api, headers={"authorization": "Bearer lost"})
            assert lost.status_code == 302 and lost.headers["location"] == "https://login.example/?to=/api/items"
            other = await http.get(api, headers={"authorization": "Bearer eve"})
            assert other.status_code == 418 and other.text == "no entry" and other.headers["x-why"] == "teapot"

        down = policy(free_port())
        async with (
            run_gateway(http_route_yaml(url.removeprefix("http://"), down)) as gw,
            httpx.AsyncClient(timeout=20) as http,
        ):
            answer = await http.get(f"http://127.0.0.1:{gw.port}/api/x")
            assert answer.status_code == 403 and answer.text == "external authorization failed"


def test_metadata_is_refused_clearly() -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway(parse_config(http_route_yaml("127.0.0.1:9100", policy(9000, metadata={"a": "1"})), "x.yaml"))
    assert str(caught.value) == (
        "x.yaml: binds[0].listeners[0].routes[0].policies.extAuthz.protocol.http.metadata: not supported by "
        "agentplex (it has no `extauthz` CEL variable)"
    )
