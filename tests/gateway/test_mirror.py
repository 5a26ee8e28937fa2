"""`requestMirror` on plain HTTP and A2A routes: a copy goes to the mirror, and the mirror never slows or fails the caller."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.a2a.harness import V1, message, rpc
from tests.conftest import free_port, http_route_yaml, run_gateway, stdio_target
from tests.fixtures.a2a_agent import Recorder, echo_agent, serve

pytestmark = pytest.mark.anyio


def recording_app(seen: list[dict[str, Any]], delay: float = 0.0) -> Starlette:
    """Answers every request (after `delay` seconds) and records what it got."""

    async def record(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(
            {"method": request.method, "path": request.url.path, "query": request.url.query, "body": body,
             "headers": dict(request.headers)}
        )
        await anyio.sleep(delay)
        return JSONResponse({"from": "backend"})

    return Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST", "PUT", "DELETE"])])


def mirror_policy(host: str, percentage: float) -> str:
    return f'{{requestMirror: {{backend: {{host: "{host}"}}, percentage: {percentage}}}}}'


@contextlib.asynccontextmanager
async def setup(percentage: float = 1.0, mirror_delay: float = 0.0, mirror_down: bool = False) -> AsyncIterator[Any]:
    real: list[dict[str, Any]] = []
    copies: list[dict[str, Any]] = []
    async with (
        serve(lambda base: recording_app(real)) as backend,  # type: ignore[arg-type,return-value]
        serve(lambda base: recording_app(copies, mirror_delay)) as mirror,  # type: ignore[arg-type,return-value]
    ):
        mirror_host = f"127.0.0.1:{free_port()}" if mirror_down else mirror.url
        async with (
            run_gateway(http_route_yaml(backend.url, mirror_policy(mirror_host, percentage))) as gw,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=20) as http,
        ):
            yield http, real, copies


async def until(count: int, seen: list[Any]) -> None:
    with anyio.fail_after(10):
        while len(seen) < count:
            await anyio.sleep(0.02)


async def test_the_mirror_gets_the_same_request_without_the_callers_credentials() -> None:
    async with setup() as (http, real, copies):
        answer = await http.post(
            "/api/items?x=1", content=b"payload", headers={"authorization": "Bearer secret", "x-custom": "kept"}
        )
        assert answer.json() == {"from": "backend"}
        await until(1, copies)
        copy = copies[0]
        assert (copy["method"], copy["path"], copy["query"], copy["body"]) == ("POST", "/api/items", "x=1", b"payload")
        assert copy["headers"]["x-custom"] == "kept" and "authorization" not in copy["headers"]
        assert copy["headers"]["x-forwarded-proto"] == "http"
        assert real[0]["body"] == b"payload"
        await http.get("/api/plain")  # no body: mirrored at once
        await until(2, copies)
        assert (copies[1]["method"], copies[1]["path"], copies[1]["body"]) == ("GET", "/api/plain", b"")


async def test_percentage_one_mirrors_all_and_zero_none() -> None:
    async with setup(1.0) as (http, real, copies):
        for i in range(10):
            await http.put(f"/api/{i}", content=b"x")
        await until(10, copies)
        assert sorted(c["path"] for c in copies) == sorted(f"/api/{i}" for i in range(10))
        large = b"y" * (1024 * 1024 + 1)  # over the mirror's body bound: the real backend only
        assert (await http.post("/api/large", content=large)).status_code == 200
        assert real[-1]["body"] == large
        await http.get("/api/after")
        await until(11, copies)
        assert [c["path"] for c in copies[10:]] == ["/api/after"]
    async with setup(0.0) as (http, real, copies):
        for i in range(10):
            await http.get(f"/api/{i}")
        await anyio.sleep(0.3)
        assert len(real) == 10 and copies == []


async def test_a_slow_mirror_does_not_slow_the_caller() -> None:
    with anyio.fail_after(10):  # and the gateway's shutdown does not wait for the mirror either
        async with setup(mirror_delay=60) as (http, _, copies):
            with anyio.fail_after(3):
                for i in range(5):
                    assert (await http.post(f"/api/{i}", content=b"z")).status_code == 200
            await until(5, copies)  # the copies arrived and hang there


async def test_a_dead_mirror_does_not_fail_the_caller() -> None:
    async with setup(mirror_down=True) as (http, real, _):
        for i in range(5):
            assert (await http.post(f"/api/{i}", content=b"z")).json() == {"from": "backend"}
        assert len(real) == 5


def test_mcp_routes_and_the_a2a_block_refuse_a_mirror() -> None:
    mcp = f"mcp:\n  port: 0\n  policies: {{requestMirror: {{backend: '127.0.0.1:1'}}}}\n  targets:{stdio_target('x')}\n"
    with pytest.raises(ConfigError, match=r"mcp\.policies\.requestMirror: applies to plain HTTP routes and one-agent"):
        Gateway(parse_config(mcp, "x.yaml"))
    block = "a2a:\n  port: 0\n  registry: {sqlite: null, healthInterval: 0}\n  agents: []\n"
    block += "  policies: {requestMirror: {backend: '127.0.0.1:1'}}\n"
    with pytest.raises(ConfigError, match=r"a2a\.policies\.requestMirror: .* not to the a2a block's routes"):
        Gateway(parse_config(block, "x.yaml"))


async def test_an_a2a_route_mirrors_the_calls_that_passed_its_checks() -> None:
    """The copy goes to the path the agent sees, with the body the route already read for its checks;
    a call the route's rules deny is not copied."""
    bodies: list[bytes] = []
    async with serve(echo_agent) as agent, serve(lambda base: Recorder(_shadow(bodies))) as shadow:  # type: ignore[arg-type]
        policies = (
            "{a2a: {}, urlRewrite: {path: {prefix: /}}, requestMirror: {backend: {host: 'SHADOW'}, percentage: 1},"
            " apiKey: {keys: [{key: alice-key, metadata: {user: alice}}, {key: bob-key, metadata: {user: bob}}]},"
            " mcpAuthorization: {rules: [{deny: 'a2a.method == \"SendMessage\" && apiKey.user == \"bob\"'}]}}"
        ).replace("SHADOW", shadow.url.removeprefix("http://"))
        yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: echo
      matches: [{{path: {{pathPrefix: /team/echo}}}}]
      policies: {policies}
      backends: [{{host: "{agent.url}"}}]
"""
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            url = f"http://127.0.0.1:{gw.port}/team/echo/"
            call = rpc("SendMessage", {"message": message("hello")})
            ok = await http.post(url, json=call, headers={"authorization": "Bearer alice-key", **V1})
            assert "result" in ok.json(), ok.text
            denied = await http.post(url, json=call, headers={"authorization": "Bearer bob-key", **V1})
            assert "error" in denied.json()
            with anyio.fail_after(10):
                while not shadow.seen:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            assert [(method, path) for method, path, _ in shadow.seen] == [("POST", "/")]  # alice's only
            headers = shadow.seen[0][2]
            assert "authorization" not in headers
            assert [json.loads(body) for body in bodies] == [call]


def _shadow(bodies: list[bytes]) -> Starlette:
    async def record(request: Request) -> JSONResponse:
        bodies.append(await request.body())
        return JSONResponse({})

    return Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])])
