"""backendAuth toward HTTP MCP targets: static keys, OAuth client credentials, token exchange, passthrough.

Everything is real and on 127.0.0.1: the upstream MCP servers (served by uvicorn in this event loop,
behind a recorder that sees every request's headers and can demand a valid token), the OAuth token
endpoint (a small Starlette app that counts its requests), and the gateway.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from protocols.mcp.upstream import RELAY_CALLER, NoEvents, TargetSpec, Upstream
from tests.conftest import HEADERS, INIT, free_port, mcp_yaml, run_gateway
from tests.fixtures.upstream import build_server, sse_app

pytestmark = pytest.mark.anyio

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


# -- real servers in this event loop ---------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest owns the signals
        yield


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, sni: list[str] | None = None, **ssl: Any) -> AsyncIterator[int]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port (TLS with uvicorn's ssl_* options); yields the port.

    With `sni`, the TLS server names clients send are appended to it.
    """
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **ssl)
    config.load()
    if sni is not None:
        config.ssl.sni_callback = lambda _obj, name, _ctx: sni.append(name)  # type: ignore[union-attr]
    server = _Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield port
        finally:
            server.should_exit = True


class Recorder:
    """In front of an upstream: records (method, authorization, x-api-key) of every request and, with
    `accept`, answers 401 to a request whose Authorization header `accept` rejects."""

    def __init__(self, app: ASGIApp, accept: Callable[[str | None], bool] | None = None) -> None:
        self.app = app
        self.accept = accept
        self.seen: list[tuple[str, str | None, str | None]] = []
        self.refused: list[str | None] = []  # the Authorization headers answered with 401

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            auth = headers.get("authorization")
            self.seen.append((scope["method"], auth, headers.get("x-api-key")))
            if self.accept is not None and not self.accept(auth):
                self.refused.append(auth)
                await JSONResponse({"error": "invalid_token"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @property
    def authorizations(self) -> set[str | None]:
        return {auth for _, auth, _ in self.seen}


def upstream_app(name: str, transport: str = "mcp") -> ASGIApp:
    """The test upstream server plus a tool that returns the Authorization header its call arrived with."""
    mcp = build_server(name)

    @mcp.tool(description="The Authorization header of the HTTP request that carried this call")
    def authorization(ctx: Context) -> str:
        request = ctx.request_context.request
        return getattr(request, "headers", {}).get("authorization", "") if request is not None else "<no request>"

    return mcp.streamable_http_app() if transport == "mcp" else sse_app(mcp)


@contextlib.asynccontextmanager
async def upstream_server(
    name: str, transport: str = "mcp", accept: Callable[[str | None], bool] | None = None
) -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder(upstream_app(name, transport), accept)
    async with serve(recorder) as port:
        yield f"http://127.0.0.1:{port}/{'mcp' if transport == 'mcp' else 'sse'}", recorder


class TokenServer:
    """An OAuth token endpoint: client_credentials and RFC 8693 token exchange for client gw/secret."""

    def __init__(self, lifetime: int = 300) -> None:
        self.lifetime = lifetime
        self.requests: list[tuple[str | None, dict[str, str]]] = []  # (Authorization, form)
        self.issued: dict[str, float] = {}  # token -> expiry (monotonic)
        self.revoked: set[str] = set()
        self.failing: str | None = None  # "invalid_client" or "down" (HTTP 503)

    async def token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.requests.append((request.headers.get("authorization"), form))
        if self.failing == "down":
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        expected = "Basic " + base64.b64encode(b"gw:secret").decode()
        if self.failing == "invalid_client" or request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client", "error_description": "unknown client"}, status_code=401)
        n = len(self.issued) + 1
        if form.get("grant_type") == "client_credentials":
            token = f"cc-{n}"
        elif form.get("grant_type") == TOKEN_EXCHANGE:
            token = f"exchanged-{n}-for-{form['subject_token'][-6:]}"
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        self.issued[token] = time.monotonic() + self.lifetime
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        if form.get("grant_type") == TOKEN_EXCHANGE:
            body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
        return JSONResponse(body)

    def valid(self, authorization: str | None) -> bool:
        token = (authorization or "").removeprefix("Bearer ")
        return token in self.issued and token not in self.revoked and time.monotonic() < self.issued[token]

    @property
    def grants(self) -> list[str]:
        return [form.get("grant_type", "") for _, form in self.requests]


@contextlib.asynccontextmanager
async def token_server(lifetime: int = 300) -> AsyncIterator[tuple[str, TokenServer]]:
    tokens = TokenServer(lifetime)
    app = Starlette(routes=[Route("/token", tokens.token, methods=["POST"])])
    async with serve(app) as port:
        yield f"http://127.0.0.1:{port}/token", tokens


# -- a downstream client -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def legacy_session(url: str, authorization: str | None = None) -> AsyncIterator[ClientSession]:
    """A handshake-era client session over streamable HTTP (its plain calls take the raw relay)."""
    headers = {"authorization": authorization} if authorization else None
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def modern_session(url: str, authorization: str) -> AsyncIterator[ClientSession]:
    """A 2026-07-28 client (stateless: served by the gateway's shared upstreams)."""
    async with (
        httpx2.AsyncClient(headers={"authorization": authorization}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.discover()
        yield session


@contextlib.asynccontextmanager
async def sse_session(base: str, authorization: str | None = None) -> AsyncIterator[ClientSession]:
    """A client on the gateway's legacy SSE front end (its calls take the SDK path)."""
    headers = {"authorization": authorization} if authorization else None
    async with sse_client(f"{base}/sse", headers=headers) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def text(session: ClientSession, tool: str, arguments: dict[str, Any] | None = None) -> str:
    with anyio.fail_after(20):
        result = await session.call_tool(tool, arguments or {})
    assert not result.is_error, result.content
    return result.content[0].text  # type: ignore[union-attr]


def refusal(response: httpx.Response) -> str:
    """The JSON-RPC error message of a refused initialize (a JSON body or one SSE event)."""
    text = response.text
    data = (
        text
        if text.lstrip().startswith("{")
        else next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    )
    return json.loads(data)["error"]["message"]


def target(name: str, url: str, kind: str = "mcp") -> str:
    return f"""
  - name: {name}
    {kind}: {{ host: "{url}" }}"""


# -- key -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mcp", "sse"])
async def test_key_is_sent_upstream_and_the_callers_authorization_is_not(kind: str) -> None:
    async with upstream_server("api", kind) as (url, recorder):
        yaml = mcp_yaml(target("api", url, kind), policies='{ backendAuth: { key: "s3cret" } }')
        async with run_gateway(yaml) as gw:
            base = f"http://127.0.0.1:{gw.port}"
            async with legacy_session(gw.url, "Bearer inbound-token") as session:
                assert await text(session, "authorization") == "Bearer s3cret"  # relay path (mcp targets)
                assert await text(session, "echo", {"text": "x"}) == "api: x"
            async with sse_session(base, "Bearer inbound-token") as session:
                assert await text(session, "authorization") == "Bearer s3cret"  # SDK path
        assert recorder.seen and recorder.authorizations == {"Bearer s3cret"}  # every request, none inbound


async def test_without_backend_auth_nothing_is_forwarded() -> None:
    async with upstream_server("open") as (url, recorder):
        async with run_gateway(mcp_yaml(target("open", url))) as gw:
            async with legacy_session(gw.url, "Bearer inbound-token") as session:
                assert await text(session, "authorization") == ""
            async with sse_session(f"http://127.0.0.1:{gw.port}", "Bearer inbound-token") as session:
                assert await text(session, "authorization") == ""
        assert recorder.seen and recorder.authorizations == {None}


async def test_key_in_a_custom_header_has_no_prefix_and_replaces_configured_headers() -> None:
    async with upstream_server("api") as (url, recorder):
        yaml = f"""
mcp:
  port: 0
  policies:
    backendAuth: {{ key: {{ value: "k-123", header: X-Api-Key }} }}
  targets:
  - name: api
    mcp: {{ host: "{url}", headers: {{ x-api-key: configured }} }}
"""
        async with run_gateway(yaml) as gw, legacy_session(gw.url, "Bearer inbound-token") as session:
            assert await text(session, "authorization") == ""
        assert {key for _, _, key in recorder.seen} == {"k-123"}
        assert recorder.authorizations == {None}


# -- oauth2 client credentials ----------------------------------------------------------------------------


def oauth2(token_url: str, kind: str = "oauth2", **extra: str) -> str:
    more = "".join(f", {k}: {v}" for k, v in extra.items())
    return f'{{ backendAuth: {{ {kind}: {{ tokenUrl: "{token_url}", clientId: gw, clientSecret: secret{more} }} }} }}'


async def test_client_credentials_token_is_fetched_once_and_refreshed_before_expiry() -> None:
    async with token_server(lifetime=4) as (token_url, tokens):
        async with upstream_server("api", accept=tokens.valid) as (url, recorder):
            policy = oauth2(token_url, scopes="[mcp.read, mcp.write]", audience="api", resource='"https://api/mcp"')
            async with (
                run_gateway(mcp_yaml(target("api", url), policies=policy)) as gw,
                legacy_session(gw.url, "Bearer inbound-token") as session,
            ):
                for _ in range(5):
                    assert await text(session, "authorization") == "Bearer cc-1"
                async with sse_session(f"http://127.0.0.1:{gw.port}") as other:
                    assert await text(other, "authorization") == "Bearer cc-1"
                assert tokens.grants == ["client_credentials"]  # one token for every session and request
                basic, form = tokens.requests[0]
                assert basic == "Basic " + base64.b64encode(b"gw:secret").decode()
                assert form == {
                    "grant_type": "client_credentials",
                    "scope": "mcp.read mcp.write",
                    "audience": "api",
                    "resource": "https://api/mcp",
                }
                issued = tokens.issued["cc-1"] - 4
                await anyio.sleep(issued + 3.2 - time.monotonic())  # past 3/4 of its life: refreshed before expiry
                assert await text(session, "authorization") == "Bearer cc-2"
                assert tokens.grants == ["client_credentials"] * 2
        assert recorder.authorizations == {"Bearer cc-1", "Bearer cc-2"} and not recorder.refused


async def test_a_token_the_upstream_rejects_is_replaced_and_the_request_retried_once() -> None:
    async with token_server() as (token_url, tokens), upstream_server("api", accept=tokens.valid) as (url, recorder):
        async with run_gateway(mcp_yaml(target("api", url), policies=oauth2(token_url))) as gw:
            async with legacy_session(gw.url) as session:
                assert await text(session, "authorization") == "Bearer cc-1"
                tokens.revoked.add("cc-1")
                assert await text(session, "authorization") == "Bearer cc-2"  # relay path
            async with sse_session(f"http://127.0.0.1:{gw.port}") as session:
                tokens.revoked.add("cc-2")
                assert await text(session, "authorization") == "Bearer cc-3"  # SDK path
        assert tokens.grants == ["client_credentials"] * 3
        assert set(recorder.refused) == {"Bearer cc-1", "Bearer cc-2"}  # tried, refused, then replaced


@pytest.mark.parametrize("kind", ["mcp", "sse"])
async def test_a_refusing_token_endpoint_is_a_clear_error_naming_the_target(kind: str) -> None:
    async with token_server() as (token_url, tokens), upstream_server("api", kind) as (url, recorder):
        tokens.failing = "invalid_client"
        yaml = mcp_yaml(target("api", url, kind), policies=oauth2(token_url))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            response = await http.post(gw.url, json=INIT, headers=HEADERS)  # failClosed: the session is refused
            message = refusal(response)
            assert "target 'api'" in message, message
            assert f"the token endpoint {token_url} refused: invalid_client: unknown client" in message
        assert all(method != "POST" for method, _, _ in recorder.seen)  # nothing went out without credentials


@pytest.mark.parametrize("kind", ["mcp", "sse"])
async def test_a_token_endpoint_failing_mid_session_fails_calls_clearly_and_recovers(kind: str) -> None:
    async with token_server(lifetime=2) as (token_url, tokens):
        async with upstream_server("api", kind, accept=tokens.valid) as (url, recorder):
            yaml = mcp_yaml(target("api", url, kind), policies=oauth2(token_url))
            async with run_gateway(yaml) as gw, sse_session(f"http://127.0.0.1:{gw.port}") as session:
                assert await text(session, "authorization") == "Bearer cc-1"
                tokens.failing = "down"
                await anyio.sleep(1.6)  # cc-1 is due for refresh; the endpoint answers 503
                with anyio.fail_after(15), pytest.raises(MCPError) as err:
                    await session.call_tool("authorization", {})
                message = err.value.error.message
                assert "target 'api'" in message, message
                assert f"the token endpoint {token_url} answered HTTP 503" in message, message
                tokens.failing = None
                await anyio.sleep(2.1)  # a failed fetch is not retried for 2 s
                assert await text(session, "authorization") == "Bearer cc-2"  # same upstream session, recovered
        assert "Bearer cc-1" in recorder.authorizations


async def test_unreachable_token_endpoint() -> None:
    token_url = f"http://127.0.0.1:{free_port()}/token"
    async with (
        upstream_server("api") as (url, _),
        run_gateway(mcp_yaml(target("api", url), policies=oauth2(token_url))) as gw,
        httpx.AsyncClient(timeout=30) as http,
    ):
        message = refusal(await http.post(gw.url, json=INIT, headers=HEADERS))
    assert "target 'api'" in message and f"cannot reach the token endpoint {token_url}: ConnectError" in message


# -- the caller an upstream request is made for ---------------------------------------------------------


class CallerHeader:
    """An UpstreamAuth that says which caller it was asked for (the caller is opaque to upstream.py)."""

    async def headers(self, caller: Any) -> dict[str, str]:
        return {"authorization": f"Bearer for-{caller['user']}"} if caller else {}


async def test_relay_caller_wins_over_the_upstreams_own_caller_on_every_path() -> None:
    async with upstream_server("api") as (url, recorder):
        spec = TargetSpec(name="api", transport="mcp", url=url, auth=CallerHeader())
        async with Upstream(spec, NoEvents()).running() as up:

            async def call() -> str:
                result = await up.request("tools/call", lambda s: s.call_tool("authorization", {}))
                return result.content[0].text

            token = RELAY_CALLER.set({"user": "alice"})
            try:
                assert await call() == "Bearer for-alice"  # the SDK sends in the caller's context
                assert recorder.seen[0] == ("POST", None, None)  # but the connection it opened is nobody's
                assert up.can_relay
                request = {"jsonrpc": "2.0", "id": "r1", "method": "tools/call"}
                request["params"] = {"name": "authorization", "arguments": {}}
                response = await up.relay(request, _no_messages)
                assert response["result"]["content"][0]["text"] == "Bearer for-alice"
            finally:
                RELAY_CALLER.reset(token)
            assert await call() == ""  # nobody in particular (a shared upstream)
            up.caller = {"user": "owner"}  # a per-session upstream's client
            assert await call() == "Bearer for-owner"
            await up.close()
            assert await call() == "Bearer for-owner"
            with anyio.fail_after(10):  # the new connection's GET stream is the owner's too
                while ("GET", "Bearer for-owner", None) not in recorder.seen:
                    await anyio.sleep(0.05)
        assert recorder.authorizations == {None, "Bearer for-alice", "Bearer for-owner"}


async def _no_messages(message: Any) -> None:
    return None


# -- the caller's own token: passthrough and token exchange (jwtAuth validates it first) --------------------


def jwt_auth(signer: Any) -> str:
    from tests.gateway.tokens import AUDIENCE, ISSUER

    return f"jwtAuth: {{ issuer: '{ISSUER}', audiences: ['{AUDIENCE}'], jwks: {{ inline: '{signer.jwks_json()}' }} }}"


async def test_passthrough_forwards_each_callers_validated_token() -> None:
    from tests.gateway.tokens import Signer

    signer = Signer()
    alice, bob = signer.token("alice"), signer.token("bob")
    async with upstream_server("api") as (url, recorder), upstream_server("plain", "sse") as (sse_url, _):
        policies = f"{{ {jwt_auth(signer)}, backendAuth: {{ passthrough: {{}} }} }}"
        async with run_gateway(mcp_yaml(target("api", url) + target("plain", sse_url, "sse"), policies=policies)) as gw:
            async with legacy_session(gw.url, f"Bearer {alice}") as a, legacy_session(gw.url, f"Bearer {bob}") as b:
                assert await text(a, "api_authorization") == f"Bearer {alice}"  # relay path
                assert await text(b, "api_authorization") == f"Bearer {bob}"
                assert await text(a, "plain_authorization") == f"Bearer {alice}"  # an SSE target: SDK path
            async with sse_session(f"http://127.0.0.1:{gw.port}", f"Bearer {bob}") as s:
                assert await text(s, "api_authorization") == f"Bearer {bob}"
            async with modern_session(gw.url, f"Bearer {alice}") as m, modern_session(gw.url, f"Bearer {bob}") as n:
                assert await text(m, "api_authorization") == f"Bearer {alice}"  # a shared upstream, per call
                assert await text(n, "api_authorization") == f"Bearer {bob}"
        assert {alice, bob} <= {(auth or "").removeprefix("Bearer ") for _, auth, _ in recorder.seen}


async def test_token_exchange_swaps_each_callers_token_once() -> None:
    from tests.gateway.tokens import Signer

    signer = Signer()
    alice, bob = signer.token("alice"), signer.token("bob")
    async with token_server() as (token_url, tokens), upstream_server("api") as (url, _):
        exchange = oauth2(
            token_url, "tokenExchange", audience="api", requestedTokenType="urn:ietf:params:oauth:token-type:jwt"
        )[1:-1]
        policies = f"{{ {jwt_auth(signer)}, {exchange} }}"
        async with (
            run_gateway(mcp_yaml(target("api", url), policies=policies)) as gw,
            legacy_session(gw.url, f"Bearer {alice}") as a,
            legacy_session(gw.url, f"Bearer {bob}") as b,
        ):
            first = await text(a, "authorization")
            assert first.startswith("Bearer exchanged-") and first.endswith(alice[-6:])
            assert await text(a, "authorization") == first  # cached
            other = await text(b, "authorization")
            assert other.startswith("Bearer exchanged-") and other.endswith(bob[-6:])
        exchanges = [form for _, form in tokens.requests]
        assert [form["subject_token"] for form in exchanges] == [alice, bob]
        assert exchanges[0] == {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": alice,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "requested_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "audience": "api",
        }
