"""Plain HTTP backends: a route with a `host:` backend proxies ordinary HTTP, streaming both ways."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import free_port, http_route_yaml, run_gateway
from tests.fixtures.a2a_agent import Recorder, serve

pytestmark = pytest.mark.anyio


def backend_app(base: str, release: anyio.Event) -> Starlette:
    """Echoes what it got; `/api/events` sends one SSE event, then waits for `release` before the second."""

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {"method": request.method, "path": request.url.path, "query": request.url.query, "body": body.decode(),
             "headers": dict(request.headers)},
            headers={"x-backend": "yes", "connection": "close, x-private", "x-private": "hop only"},
        )

    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await release.wait()
            yield b"data: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/api/events", events), Route("/{path:path}", echo, methods=["GET", "POST", "PUT"])])


@contextlib.asynccontextmanager
async def backend() -> AsyncIterator[tuple[str, anyio.Event]]:
    release = anyio.Event()
    async with serve(lambda base: backend_app(base, release)) as running:  # type: ignore[arg-type]
        yield running.url, release


async def test_requests_reach_the_backend_with_forwarded_headers() -> None:
    async with (
        backend() as (url, _),
        run_gateway(http_route_yaml(url.removeprefix("http://"))) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        answer = await http.post(
            f"http://127.0.0.1:{gw.port}/api/items?x=1",
            content=b"payload",
            headers={"authorization": "Bearer callers", "x-custom": "kept", "connection": "keep-alive"},
        )
        got = answer.json()
        assert (got["method"], got["path"], got["query"], got["body"]) == ("POST", "/api/items", "x=1", "payload")
        assert got["headers"]["x-custom"] == "kept" and "authorization" not in got["headers"]
        assert got["headers"]["x-forwarded-host"] == f"127.0.0.1:{gw.port}"
        assert got["headers"]["x-forwarded-proto"] == "http"
        assert answer.headers["x-backend"] == "yes" and "x-private" not in answer.headers


async def test_a_stream_is_not_buffered() -> None:
    async with backend() as (url, release), run_gateway(http_route_yaml(url)) as gw, httpx.AsyncClient(timeout=20) as http:
        assert (await http.get(f"http://127.0.0.1:{gw.port}/events")).status_code == 404  # outside the route
        async with http.stream("GET", f"http://127.0.0.1:{gw.port}/api/events") as r:
            lines = r.aiter_lines()
            with anyio.fail_after(5):  # the first event arrives while the backend still holds the second
                while await lines.__anext__() != "data: first":
                    pass
            release.set()
            with anyio.fail_after(5):
                while await lines.__anext__() != "data: second":
                    pass


async def test_backend_auth_and_a_backend_that_is_down() -> None:
    async with backend() as (url, _):
        policies = "{backendAuth: {key: {value: backend-secret}}}"
        async with run_gateway(http_route_yaml(url, policies)) as gw, httpx.AsyncClient(timeout=20) as http:
            got = (await http.get(f"http://127.0.0.1:{gw.port}/api/x")).json()
            assert got["headers"]["authorization"] == "Bearer backend-secret"
    async with run_gateway(http_route_yaml(f"127.0.0.1:{free_port()}")) as gw, httpx.AsyncClient(timeout=20) as http:
        down = await http.get(f"http://127.0.0.1:{gw.port}/api/x")
        assert down.status_code == 502 and json.loads(down.text)["error"].startswith("backend 'api' is unreachable")


def _named(name: str) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"backend": name, "authorization": request.headers.get("authorization")})

    return Starlette(routes=[Route("/{path:path}", whoami)])


async def test_named_and_weighted_backends() -> None:
    """Backends defined once at the top level are used by name (with their backend-level policies), and
    a route with several backends shares its requests among them by weight."""
    async with (
        serve(lambda base: Recorder(_named("blue"))) as blue,  # type: ignore[arg-type]
        serve(lambda base: Recorder(_named("green"))) as green,  # type: ignore[arg-type]
        serve(lambda base: Recorder(_named("idle"))) as idle,  # type: ignore[arg-type]
        serve(lambda base: Recorder(_named("shadow"))) as shadow,  # type: ignore[arg-type]
    ):
        text = f"""
backends:
- name: blue
  host: "{blue.url}"
  policies: {{backendAuth: {{key: blue-secret}}}}
binds:
- port: 0
  listeners:
  - routes:
    - name: split
      matches: [{{path: {{pathPrefix: /split}}}}]
      policies: {{requestMirror: {{backend: {{host: "{shadow.url}"}}, percentage: 1}}}}
      backends:
      - {{backend: blue, weight: 3}}
      - {{host: "{green.url}", weight: 1}}
      - {{host: "{idle.url}", weight: 0}}
"""
        async with run_gateway(text) as gw, httpx.AsyncClient(timeout=20) as http:
            seen: dict[str, int] = {}
            for _ in range(200):
                got = (await http.get(f"http://127.0.0.1:{gw.port}/split/x")).json()
                seen[got["backend"]] = seen.get(got["backend"], 0) + 1
                if got["backend"] == "blue":
                    assert got["authorization"] == "Bearer blue-secret"  # the named backend's backendAuth
                else:
                    assert got["authorization"] is None
            assert set(seen) == {"blue", "green"}  # weight 0: never
            assert 110 <= seen["blue"] <= 185  # 3:1 of 200 is 150:50
            with anyio.fail_after(10):  # the route's mirror copies every request, whichever backend served it
                while len(shadow.seen) < 200:
                    await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ("- backends: [{backend: nope}]", "routes[0].backends[0].backend: unknown backend 'nope'"),
        (
            "- backends: [{mcp: {targets: [{name: a, mcp: {host: 'http://127.0.0.1:1/mcp'}}]}}, {host: '127.0.0.1:2'}]",
            "routes[0].backends: an MCP route has one backend (it federates its targets), found 2",
        ),
        ("- backends: [{host: '127.0.0.1:2', weight: 0}]", "routes[0].backends: every backend has weight 0"),
    ],
)
def test_backend_list_errors(routes: str, problem: str) -> None:
    text = f"binds:\n- port: 0\n  listeners:\n  - routes:\n    {routes}\n"
    with pytest.raises(ConfigError) as error:
        Gateway(parse_config(text, "x.yaml"))
    assert f"x.yaml: binds[0].listeners[0].{problem}" in str(error.value)


def test_a_named_backend_takes_only_backend_policies() -> None:
    text = "backends:\n- {name: api, host: '127.0.0.1:1', policies: {cors: {allowOrigins: ['*']}}}\n" + http_route_yaml("127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"x.yaml: backends\[0\].policies.cors: a backend's policies are those toward it"):
        parse_config(text, "x.yaml")


async def test_the_gateways_own_cookies_never_reach_a_backend() -> None:
    """Browsers send a host's cookies to all its ports: the admin UI's sign-in reaches the routes too."""
    async with (
        backend() as (url, _),
        run_gateway(http_route_yaml(url.removeprefix("http://"))) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        mixed = await http.get(
            f"http://127.0.0.1:{gw.port}/api/x", headers={"cookie": "a=1; agentplex-admin=s3ss10n; b=2"}
        )
        assert mixed.json()["headers"]["cookie"] == "a=1; b=2"
        only = await http.get(f"http://127.0.0.1:{gw.port}/api/x", headers={"cookie": "agentplex-admin=s3ss10n"})
        assert "cookie" not in only.json()["headers"]
        theirs = await http.get(f"http://127.0.0.1:{gw.port}/api/x", headers={"cookie": "session=abc"})
        assert theirs.json()["headers"]["cookie"] == "session=abc"
