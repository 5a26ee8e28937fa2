"""extAuthz over HTTP against a real authorization service (starlette on uvicorn, loopback, in this event loop)."""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from gateway.config.policies import ExtAuthz
from gateway.policies.ext_authz import ExtAuthzStep
from gateway.policies.http import PolicyApp, identity_of
from tests.conftest import HEADERS, INIT, free_port, http_target, mcp_yaml, run_gateway
from tests.gateway.tokens import AUDIENCE, ISSUER, Signer

pytestmark = pytest.mark.anyio

SIGNER = Signer()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns signals
        yield


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port in this event loop; yields its base URL."""
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@dataclass
class Authz:
    """The authorization service: what it was asked, and where."""

    base: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base}/check"

    @property
    def last(self) -> dict[str, Any]:
        return self.seen[-1]

    def mcp(self) -> list[tuple[str | None, str | None]]:
        """(method, name) of every check, from headers or body."""
        out = []
        for check in self.seen:
            body = check["body"] or {}
            if body.get("mcp") is not None:
                out.append((body["mcp"].get("method"), body["mcp"].get("name")))
            else:
                out.append(
                    (check["headers"].get("x-agentplex-mcp-method"), check["headers"].get("x-agentplex-mcp-name"))
                )
        return out


@contextlib.asynccontextmanager
async def authz_service() -> AsyncIterator[Authz]:
    """Denies tool `grow` (403 + JSON reason) and caller `x-user: mallory` (401); allows the rest with x-tier."""
    seen: list[dict[str, Any]] = []

    async def check(request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        seen.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        user = request.headers.get("x-user") or ((body or {}).get("request", {}).get("headers", {}).get("x-user"))
        name = request.headers.get("x-agentplex-mcp-name") or ((body or {}).get("mcp") or {}).get("name")
        if user == "mallory":
            return PlainTextResponse("who are you?", 401, headers={"www-authenticate": 'Bearer realm="corp"'})
        if name == "grow":
            return JSONResponse({"error": "forbidden", "reason": f"{user} may not call grow"}, 403)
        tier = "gold" if user == "alice" else "silver"
        return Response(status_code=200, headers={"x-tier": tier, "x-internal": "not for upstream"})

    async def slow(request: Request) -> Response:
        await request.body()
        seen.append({"path": request.url.path, "headers": dict(request.headers), "body": None})
        await anyio.sleep(1)
        return Response(status_code=200)

    async def chatty(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("x" * 100_000, 403)

    app = Starlette(
        routes=[
            Route("/check", check, methods=["POST"]),
            Route("/slow", slow, methods=["POST"]),
            Route("/chatty", chatty, methods=["POST"]),
        ]
    )
    async with serve(app) as base:
        yield Authz(base, seen)


def policies(url: str, *, jwt: bool = False, timeout: str = "2s", **ext: Any) -> str:
    """A policies block (JSON is YAML) with extAuthz and, optionally, jwtAuth."""
    doc: dict[str, Any] = {"extAuthz": {"http": {"url": url, "timeout": timeout}, **ext}}
    if jwt:
        doc["jwtAuth"] = {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": {"inline": SIGNER.jwks_json()}}
    return json.dumps(doc)


def call(tool: str, request_id: int = 2, **arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


def rpc(method: str, request_id: int = 3, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


async def session(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, str]:
    init = await http.post(url, json=INIT, headers=headers)
    assert init.status_code == 200, init.text
    out = {**headers, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    note = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=out)
    assert note.status_code == 202, note.text
    return out


def message(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer, sent as JSON or as the one event of an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


async def tool_names(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> set[str]:
    answer = await http.post(url, json=rpc("tools/list"), headers=headers)
    return {t["name"] for t in message(answer)["result"]["tools"]}


async def test_allows_and_denies_per_tool_and_caller(upstream: Any) -> None:
    async with authz_service() as authz:
        yaml = mcp_yaml(
            http_target("web", upstream("web", "mcp")),
            policies=policies(authz.url, jwt=True, includeRequestHeaders=["x-user", "host"]),
        )
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            token = SIGNER.token("alice-sub")
            alice = await session(http, gw.url, {**HEADERS, "authorization": f"Bearer {token}", "x-user": "alice"})
            assert authz.mcp()[:2] == [("initialize", None), ("notifications/initialized", None)]
            first = authz.seen[0]["headers"]
            assert first["x-agentplex-request-method"] == "POST" and first["x-agentplex-request-path"] == "/mcp"
            assert first["x-user"] == "alice" and first["x-forwarded-host"] == f"127.0.0.1:{gw.port}"
            assert first["x-agentplex-jwt-sub"] == "alice-sub"
            assert "authorization" not in first and token not in json.dumps(authz.seen)  # not listed: never sent
            assert "x-agentplex-mcp-unread" not in first

            answer = await http.post(gw.url, json=call("echo", text="hi"), headers=alice)
            assert answer.status_code == 200 and "web: hi" in answer.text
            assert authz.mcp()[-1] == ("tools/call", "echo")

            denied = await http.post(gw.url, json=call("grow", name="sneaky"), headers=alice)
            assert denied.status_code == 403
            assert denied.json() == {"error": "forbidden", "reason": "alice may not call grow"}
            assert authz.mcp()[-1] == ("tools/call", "grow")
            for leak in ("127.0.0.1", authz.base.rsplit(":", 1)[1], "Traceback"):
                assert leak not in denied.text
            assert "sneaky" not in await tool_names(http, gw.url, alice)  # the upstream never ran grow

            prompt = await http.post(
                gw.url, json=rpc("prompts/get", name="greet", arguments={"name": "Ada"}), headers=alice
            )
            assert "Hello, Ada" in prompt.text and authz.mcp()[-1] == ("prompts/get", "greet")
            read = await http.post(gw.url, json=rpc("resources/read", uri="mem://static"), headers=alice)
            assert "static from web" in read.text and authz.mcp()[-1] == ("resources/read", "mem://static")

            # another caller is refused by the service (its status, body and challenge), alice is not affected
            mallory = {**alice, "x-user": "mallory"}
            refused = await http.post(gw.url, json=call("echo", text="x"), headers=mallory)
            assert refused.status_code == 401 and refused.text == "who are you?"
            assert refused.headers["www-authenticate"] == 'Bearer realm="corp"'
            assert "web: again" in (await http.post(gw.url, json=call("echo", text="again"), headers=alice)).text

            # a name that is not printable ASCII reaches the service percent-encoded
            await http.post(gw.url, json=call("échø\r\nx-evil: 1"), headers=alice)
            assert authz.last["headers"]["x-agentplex-mcp-name"] == "%C3%A9ch%C3%B8%0D%0Ax-evil: 1"
            assert "x-evil" not in authz.last["headers"]


async def test_mcp_fields_and_caller_in_a_json_body(upstream: Any) -> None:
    async with authz_service() as authz:
        doc = json.loads(policies(authz.url, includeMcp="body", includeRequestHeaders=["x-user"]))
        doc["apiKey"] = {"keys": [{"key": "sk-ann", "metadata": {"name": "ann", "team": "blue"}}]}
        yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=json.dumps(doc))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            ann = await session(http, gw.url, {**HEADERS, "authorization": "Bearer sk-ann", "x-user": "ann"})
            assert "web: hi" in (await http.post(gw.url, json=call("echo", text="hi"), headers=ann)).text
            check = authz.last
            assert check["headers"]["content-type"] == "application/json"
            assert "x-agentplex-mcp-method" not in check["headers"] and "x-agentplex-mcp-name" not in check["headers"]
            assert check["body"] == {
                "request": {"method": "POST", "path": "/mcp", "headers": {"x-user": "ann"}},
                "caller": {"apiKey": {"name": "ann", "team": "blue"}},
                "mcp": {"method": "tools/call", "name": "echo"},
            }
            assert json.loads(check["headers"]["x-agentplex-api-key"]) == {"name": "ann", "team": "blue"}
            assert "sk-ann" not in json.dumps(authz.seen)
            denied = await http.post(gw.url, json=call("grow", name="x"), headers=ann)
            assert denied.status_code == 403 and denied.json()["reason"] == "ann may not call grow"
            # a GET (the SSE stream) is checked too, without MCP fields
            async with http.stream("GET", gw.url, headers={**ann, "accept": "text/event-stream"}) as stream:
                assert stream.status_code == 200
            assert authz.last["body"]["request"]["method"] == "GET" and authz.last["body"]["mcp"] is None


async def test_propagated_headers_replace_the_clients_and_reach_rules(upstream: Any) -> None:
    async with authz_service() as authz:
        doc = json.loads(policies(authz.url, includeRequestHeaders=["x-user"], propagateHeaders=["x-tier"]))
        doc["mcpAuthorization"] = {"rules": ['mcp.tool.name != "add" || request.headers["x-tier"] == "gold"']}
        yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=json.dumps(doc))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            alice = await session(http, gw.url, {**HEADERS, "x-user": "alice"})
            bob = await session(http, gw.url, {**HEADERS, "x-user": "bob", "x-tier": "gold"})  # bob claims gold
            added = await http.post(gw.url, json=call("add", a=2, b=3), headers=alice)
            assert message(added)["result"]["content"][0]["text"] == "5"
            assert "add" in await tool_names(http, gw.url, alice)
            assert "add" not in await tool_names(http, gw.url, bob)  # the service said silver
            refused = await http.post(gw.url, json=call("add", a=2, b=3), headers=bob)
            assert "Unknown tool: add" in refused.text


async def test_rules_see_propagated_headers_even_after_an_earlier_rate_limit_read_them(upstream: Any) -> None:
    """A listener's whole-request rate limit keyed on a header runs before the route's extAuthz (and caches the
    `request.*` variables); the route's rules must still see the header as the service set it."""
    async with authz_service() as authz:
        limit = {"maxTokens": 100, "tokensPerFill": 100, "fillInterval": "1s", "key": 'request.headers["x-tier"]'}
        route = json.loads(policies(authz.url, includeRequestHeaders=["x-user"], propagateHeaders=["x-tier"]))
        route["mcpAuthorization"] = {"rules": ['mcp.tool.name != "add" || request.headers["x-tier"] == "gold"']}
        yaml = f"""
binds:
- port: 0
  listeners:
  - name: main
    policies: {{ localRateLimit: [{json.dumps(limit)}] }}
    routes:
    - name: tools
      matches: [{{path: {{exact: /mcp}}}}]
      policies: {json.dumps(route)}
      backends:
      - mcp: {{ targets: [{{name: web, mcp: {{host: "{upstream("web", "mcp")}"}}}}] }}
"""
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            alice = await session(http, gw.url, {**HEADERS, "x-user": "alice", "x-tier": "silver"})  # the service: gold
            assert "add" in await tool_names(http, gw.url, alice)
            added = await http.post(gw.url, json=call("add", a=2, b=3), headers=alice)
            assert message(added)["result"]["content"][0]["text"] == "5"


async def test_service_down_or_slow_fail_closed_or_open(upstream: Any, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}/check"
    async with authz_service() as authz:
        url = upstream("web", "mcp")
        for where in (dead, f"{authz.base}/slow"):
            yaml = mcp_yaml(http_target("web", url), policies=policies(where, timeout="300ms"))
            async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
                with anyio.fail_after(10):
                    refused = await http.post(gw.url, json=INIT, headers=HEADERS)
                assert refused.status_code == 503
                assert refused.json() == {
                    "error": "authorization_unavailable",
                    "error_description": "the authorization service is unavailable; try again later",
                }
            yaml = mcp_yaml(http_target("web", url), policies=policies(where, timeout="300ms", failureMode="failOpen"))
            async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
                with anyio.fail_after(10):
                    opened = await session(http, gw.url, HEADERS)
                    answer = await http.post(gw.url, json=call("echo", text="open"), headers=opened)
                assert "web: open" in answer.text
        assert any(check["path"] == "/slow" for check in authz.seen)
    assert "request allowed (failOpen)" in caplog.text and "request refused (failClosed)" in caplog.text
    assert "timed out" in caplog.text and "ConnectError" in caplog.text


async def test_a_long_denial_is_capped(upstream: Any) -> None:
    async with authz_service() as authz:
        yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies(f"{authz.base}/chatty"))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(gw.url, json=INIT, headers=HEADERS)
            assert refused.status_code == 403 and refused.content == b"x" * 4096


async def test_other_routes_are_not_checked(upstream: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/check"
    target = f'{{ name: web, mcp: {{ host: "{upstream("web", "mcp")}" }} }}'
    config = textwrap.dedent(
        f"""
        binds:
        - port: 0
          listeners:
          - name: main
            routes:
            - name: guarded
              matches: [{{ path: {{ pathPrefix: /guarded }} }}]
              policies: {policies(dead)}
              backends: [{{ mcp: {{ targets: [{target}] }} }}]
            - name: open
              matches: [{{ path: {{ pathPrefix: /open }} }}]
              backends: [{{ mcp: {{ targets: [{target}] }} }}]
        """
    )
    async with run_gateway(config) as gw, httpx.AsyncClient(timeout=30) as http:
        base = f"http://127.0.0.1:{gw.port}"
        assert (await http.post(f"{base}/guarded/mcp", json=INIT, headers=HEADERS)).status_code == 503
        opened = await session(http, f"{base}/open/mcp", HEADERS)
        assert "web: ok" in (await http.post(f"{base}/open/mcp", json=call("echo", text="ok"), headers=opened)).text


# -- the step and PolicyApp directly: the body replay, Identity.headers --------------------------


async def _recorder(scope: Scope, receive: Receive, send: Send) -> None:
    """The route: reports the body it received, its x-tier headers and the identity's headers."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    body = b"".join(chunks)
    identity = identity_of(scope)
    report = {
        "length": len(body),
        "body_head": body[:200].decode(),
        "tiers": [v.decode() for k, v in scope["headers"] if k == b"x-tier"],
        "identity_headers": identity.headers if identity else None,
    }
    data = json.dumps(report).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


async def test_the_route_gets_the_body_the_step_read() -> None:
    async with authz_service() as authz:
        cfg = ExtAuthz.model_validate(
            {"http": {"url": authz.url}, "includeRequestHeaders": ["x-user"], "propagateHeaders": ["X-Tier"]}
        )
        step = ExtAuthzStep(cfg, "test", body_limit=1024 * 1024)
        try:
            async with serve(PolicyApp(_recorder, [step])) as base, httpx.AsyncClient(timeout=30) as http:
                message = json.dumps(call("echo", text="chunked")).encode()

                async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
                    for i in range(0, len(data), size):
                        yield data[i : i + size]

                # chunked, in small pieces: read whole, then replayed as it came
                headers = {"x-user": "alice", "x-tier": "platinum", "content-type": "application/json"}
                answer = await http.post(f"{base}/mcp", content=pieces(message, 7), headers=headers)
                report = answer.json()
                assert report["length"] == len(message) and report["body_head"] == message.decode()
                assert report["tiers"] == ["gold"]  # the client's own x-tier is gone
                assert report["identity_headers"] == {"x-tier": "gold"}  # x-internal was not asked for
                assert authz.mcp()[-1] == ("tools/call", "echo")

                # over the 1 MiB cap without a length: MCP fields skipped (and flagged), body intact
                big = json.dumps(call("echo", text="y" * (2 * 1024 * 1024))).encode()
                answer = await http.post(f"{base}/mcp", content=pieces(big, 64 * 1024), headers=headers)
                assert answer.json()["length"] == len(big)
                assert authz.last["headers"]["x-agentplex-mcp-unread"] == "too-large"
                assert "x-agentplex-mcp-method" not in authz.last["headers"]

                # with a Content-Length over the cap the step does not even start reading
                answer = await http.post(f"{base}/mcp", content=big, headers=headers)
                assert answer.json()["length"] == len(big) and authz.last["headers"]["x-agentplex-mcp-unread"]

                # not JSON-RPC: no MCP fields; a GET is not read at all
                answer = await http.post(f"{base}/mcp", content=b"[1, 2]", headers=headers)
                assert answer.json()["length"] == 6 and authz.mcp()[-1] == (None, None)
                answer = await http.get(f"{base}/mcp", headers={"x-user": "bob"})
                assert (
                    answer.json()["tiers"] == ["silver"]
                    and authz.last["headers"]["x-agentplex-request-method"] == "GET"
                )
        finally:
            await step.aclose()


def test_config_problems_are_clear() -> None:
    for key, name in (("includeRequestHeaders", "content-length"), ("propagateHeaders", "host")):
        doc = {"extAuthz": {"http": {"url": "http://127.0.0.1:1/check"}, key: [name]}}
        config = parse_config(
            mcp_yaml('\n  - { name: a, mcp: { host: "http://127.0.0.1:1/mcp" } }', policies=json.dumps(doc)), "<t>"
        )
        with pytest.raises(ConfigError, match=f"extAuthz.{key}: '{name}' cannot be passed on"):
            Gateway(config)
