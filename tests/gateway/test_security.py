"""Security as a suite: hostile requests against one protected gateway, each refused the right way.

One gateway serves a protected route (`/mcp`, its SSE pair `/sse` + `/messages/`: strict jwtAuth and
mcpAuthorization) in front of two targets (`web`, streamable HTTP, whose calls take the raw relay; `local`,
stdio, served by the SDK path), and an unauthenticated route under `/public` with a target of its own.

Every row of CASES sends one bad request and says how it must be answered: the HTTP status (None: the
connection was dropped without an answer), the JSON-RPC error code, words the answer must carry. Every
answer is also checked for what must never be in one: a stack trace, the upstream's address, a secret
from a target's environment, anybody's token, another caller's session id, a hidden tool's description.
After every row the legitimate caller's call still works and no target ran anything it should not have:
hostile calls ask `grow` to add a tool named `pwned`, so a call that got through leaves a trace that
`root`'s tool list shows (the last test proves that trace, and the secret canary, would be seen).

Callers: alice may use web_echo and local_echo; admin sees everything except what the deny rules take
from everyone but root (web_grow, local_getenv); mallory has a valid token and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from joserfc import jwt

from tests.conftest import HEADERS, INIT, PY, ROOT, http_server, run_gateway
from tests.gateway.test_auth import SIGNER, session
from tests.gateway.tokens import AUDIENCE, ISSUER, Signer, unsigned

pytestmark = pytest.mark.anyio

SECRET = "canary-7f3a91-do-not-leak"  # in the local target's environment; only local_getenv can read it
BODY_LIMIT = 64 * 1024
PROTOCOL = "2025-11-25"
PWNED = "pwned"  # the name every hostile `grow` asks for: it must never show up in a tool list
RULES = [
    # As in the reference, `mcp.tool.name` is the name the target uses (its exposed name is `exposedName`)
    {"deny": 'mcp.tool.target == "web" && mcp.tool.name == "grow" && jwt.sub != "root"'},
    {"deny": 'mcp.tool.exposedName == "local_getenv" && jwt.sub != "root"'},
    'jwt.sub == "admin" || jwt.sub == "root"',
    'mcp.tool.name == "echo" && mcp.tool.target in ["web", "local"]',
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def config(web_url: str) -> str:
    jwks = json.dumps(SIGNER.jwks_json())
    stdio = f'cmd: "{PY}", cwd: "{ROOT}", args: ["-m", "tests.fixtures.upstream", "--transport", "stdio", "--name"'
    return f"""
binds:
- port: 0
  listeners:
  - name: main
    routes:
    - name: protected
      matches: [{{path: {{exact: /mcp}}}}, {{path: {{exact: /sse}}}}, {{path: {{pathPrefix: /messages}}}}]
      policies:
        jwtAuth: {{mode: strict, issuer: "{ISSUER}", audiences: ["{AUDIENCE}"], jwks: {{inline: {jwks}}}}}
        mcpAuthorization: {{rules: {json.dumps(RULES)}}}
      backends:
      - mcp:
          maxRequestBodySize: {BODY_LIMIT}
          targets:
          - {{name: web, mcp: {{host: "{web_url}"}}}}
          - {{name: local, sharing: shared, stdio: {{{stdio}, "local"], env: {{CANARY: "{SECRET}"}}}}}}
    - name: public
      matches: [{{path: {{pathPrefix: /public}}}}]
      backends:
      - mcp:
          statefulMode: stateless
          targets:
          - {{name: pub, stdio: {{{stdio}, "pub"]}}}}
"""


# -- the running gateway and its callers --------------------------------------------------------------


@dataclass
class Reply:
    status: int | None  # None: the connection ended without a response
    headers: dict[str, str]
    text: str

    def message(self) -> dict[str, Any]:
        """The JSON-RPC response in the reply, plain JSON or the first response event of an SSE stream."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            for line in self.text.splitlines():
                if line.startswith("data:") and line[5:].strip():
                    message = json.loads(line[5:])
                    if "result" in message or "error" in message:
                        return message
            raise AssertionError(f"no JSON-RPC response in {self.text[:300]!r}")
        return json.loads(self.text)

    def everything(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.headers.items()) + "\n\n" + self.text


@dataclass
class Env:
    port: int
    http: httpx.AsyncClient
    web_url: str
    tokens: dict[str, str]
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)  # who -> headers of their session

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, who: str) -> dict[str, str]:
        """Request headers as `who`: anon (no token), alice/admin/root (their session), mallory@alice
        (alice's session id with mallory's token), nobody@alice (alice's session id, no token)."""
        if who == "anon":
            return dict(HEADERS)
        user, _, owner = who.partition("@")
        if owner:
            theirs = {**self.sessions[owner]}
            del theirs["authorization"]
            return theirs if user == "nobody" else {**theirs, "authorization": f"Bearer {self.tokens[user]}"}
        return dict(self.sessions[who])

    async def post(self, path: str, content: bytes, headers: dict[str, str]) -> Reply:
        response = await self.http.post(self.base + path, content=content, headers=headers)
        return Reply(response.status_code, dict(response.headers), response.text)

    async def call(self, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
        reply = await self.post("/mcp", _json(call(tool, **arguments)), self.headers(who))
        assert reply.status == 200, (who, tool, reply)
        return reply.message()

    async def tool_names(self, who: str) -> list[str]:
        reply = await self.post("/mcp", _json(request("tools/list")), self.headers(who))
        return [tool["name"] for tool in reply.message()["result"]["tools"]]

    def secrets(self, who: str) -> list[str]:
        """What no answer to `who` may carry: everybody's tokens, everybody else's session ids, the canary."""
        own = "" if "@" in who else who  # mallory@alice owns no session
        ids = [s["mcp-session-id"] for name, s in self.sessions.items() if name != own]
        return [*self.tokens.values(), *ids, SECRET]


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[Env]:
    with http_server("tests.fixtures.upstream", "--name", "web", "--transport", "http") as web_url:
        async with run_gateway(config(web_url)) as gw, httpx.AsyncClient(timeout=30) as http:
            tokens = {who: SIGNER.token(who, expires_in=3600) for who in ("alice", "admin", "root", "mallory")}
            env = Env(gw.port, http, web_url, tokens)
            for who in ("alice", "admin", "root"):
                env.sessions[who] = await session(http, f"{env.base}/mcp", bearer(tokens[who]))
                await env.tool_names(who)  # the catalog is known: web's calls take the raw relay from now on
            yield env


# -- building requests ------------------------------------------------------------------------------------

Send = Callable[[Env], Awaitable[Reply]]


def bearer(token: str) -> dict[str, str]:
    return {**HEADERS, "authorization": f"Bearer {token}"}


def request(method: str, request_id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def call(tool: Any, request_id: Any = 2, **arguments: Any) -> dict[str, Any]:
    return request("tools/call", request_id, name=tool, arguments=arguments)


def grow(tool: str, request_id: Any = 2) -> dict[str, Any]:
    """A call that, if it ever ran, would leave a tool named `pwned` on its target."""
    return call(tool, request_id, name=PWNED)


def _json(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def post(body: Any, who: str = "alice", *, path: str = "/mcp", headers: dict[str, str] | None = None) -> Send:
    async def send(env: Env) -> Reply:
        merged = {**env.headers(who), **(headers or {})}
        return await env.post(path, _json(body), {k: v for k, v in merged.items() if v})

    send.who = who  # type: ignore[attr-defined]
    return send


def initialize(headers: dict[str, str], path: str = "/mcp") -> Send:
    async def send(env: Env) -> Reply:
        return await env.post(path, _json(INIT), headers)

    return send


def chunked(body: bytes, who: str = "alice") -> Send:
    """A body without a Content-Length: the limit must hold on what arrives."""

    async def send(env: Env) -> Reply:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 8192):
                yield body[i : i + 8192]

        response = await env.http.post(f"{env.base}/mcp", content=pieces(), headers=env.headers(who))
        return Reply(response.status_code, dict(response.headers), response.text)

    send.who = who  # type: ignore[attr-defined]
    return send


def raw(
    target: str,
    headers: list[tuple[str, str]] | Callable[[Env], list[tuple[str, str]]] = (),
    body: Any = b"",
    *,
    method: str = "POST",
    length: int | None = None,
    split_at: int | None = None,
) -> Send:
    """A request written byte by byte on its own connection: paths, headers and lengths exactly as given.

    `split_at` sends the first bytes, pauses, then the rest (so the server reads the head in pieces).
    """

    async def send(env: Env) -> Reply:
        content = _json(body)
        extra = headers(env) if callable(headers) else list(headers)
        lines = [f"{method} {target} HTTP/1.1", f"host: 127.0.0.1:{env.port}", "connection: close"]
        lines += [f"{k}: {v}" for k, v in extra]
        lines.append(f"content-length: {len(content) if length is None else length}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content
        return await _exchange(env.port, data, split_at)

    return send


async def _exchange(port: int, data: bytes, split_at: int | None) -> Reply:
    out = b""
    with anyio.fail_after(20):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            try:
                if split_at is None:
                    await stream.send(data)
                else:
                    await stream.send(data[:split_at])
                    position = split_at
                    while position < len(data):  # small pieces first, so the server reads a part of the head
                        step = 2048 if position < split_at + 65536 else 65536
                        await anyio.sleep(0.05 if position == split_at else 0.002 if step == 2048 else 0)
                        await stream.send(data[position : position + step])
                        position += step
            except (anyio.BrokenResourceError, ConnectionError):
                pass  # the server hung up on us: whatever it said is read below
            try:
                while True:
                    out += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                pass
    if not out:
        return Reply(None, {}, "")
    head, _, body = out.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    if parsed.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Reply(int(status_line.split()[1]), parsed, body.decode("utf-8", "replace"))


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


# -- tokens that must not get in --------------------------------------------------------------------------


def _b64(data: Any) -> str:
    raw_bytes = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw_bytes).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 3600, **extra}


def hs256_with_the_public_key() -> str:
    """Key confusion: HMAC-signed with the RSA public key (as PEM) as the secret."""
    secret = SIGNER.key.as_pem(private=False)
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': SIGNER.kid})}.{_b64(_claims())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


ATTACKER = Signer(SIGNER.kid)  # the gateway's key id, somebody else's key


def with_header(**header: Any) -> str:
    """Signed by the attacker, whose header points at the attacker's key (embedded `jwk`, or a `jku` URL)."""
    return jwt.encode({"alg": ATTACKER.alg, "kid": ATTACKER.kid, **header}, _claims(), ATTACKER.key)


GOOD = SIGNER.token("alice", expires_in=3600)  # only ever sent beside something wrong
LEAKS_TOKENS = (GOOD,)


def two_authorizations(first: str, second: str) -> Callable[[Env], list[tuple[str, str]]]:
    def headers(env: Env) -> list[tuple[str, str]]:
        return [*HEADERS.items(), ("authorization", first), ("authorization", second)]

    return headers


# -- the table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    label: str
    send: Send
    status: int | tuple[int | None, ...] | None
    error: int | None = None  # the JSON-RPC error code the answer carries
    says: str = ""  # words the answer must carry
    error_message: str = ""  # the JSON-RPC error message, exactly
    leaks: tuple[str, ...] = ()  # more words the answer must not carry
    xfail: str = ""  # a known hole: strict xfail, with the reason


def unknown_tool(label: str, name: str, who: str = "alice", via: Callable[..., Any] = call) -> Case:
    return Case(label, post(via(name), who), 200, -32602, error_message=f"Unknown tool: {name}")


PATH_PROBE = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
PROBE_HEADERS = [*HEADERS.items(), ("mcp-protocol-version", PROTOCOL)]
NOT_PROTECTED = ("web_", "local_")  # an answer from the public route must not list the protected route's tools
SMUGGLED = b" " * (BODY_LIMIT + 16384) + json.dumps(call("web_echo", 77, text="smuggled")).encode()
PINGS = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(1000)]

CASES: list[Case] = [
    # -- tokens: every request to the protected route needs a good one ------------------------------------
    Case("token missing", initialize(HEADERS), 401, says="authentication required"),
    Case("token garbage", initialize(bearer("not.a.token")), 401, says="token is malformed"),
    Case("token expired", initialize(bearer(SIGNER.token(expires_in=-120))), 401, says="token expired"),
    Case("token not yet valid", initialize(bearer(SIGNER.token(nbf=int(time.time()) + 3600, expires_in=7200))), 401, says="not yet"),
    Case("token alg none", initialize(bearer(unsigned())), 401, says="algorithm that is not allowed"),
    Case("token HS256 keyed with the RSA public key", initialize(bearer(hs256_with_the_public_key())), 401),
    Case("token wrong key, same kid", initialize(bearer(ATTACKER.token())), 401, says="signature is invalid"),
    Case("token embeds its own jwk", initialize(bearer(with_header(jwk=ATTACKER.jwks()["keys"][0]))), 401),
    Case("token points at its own jku", initialize(bearer(with_header(jku="http://127.0.0.1:9/jwks"))), 401),
    Case("token wrong audience", initialize(bearer(SIGNER.token(aud="someone-else"))), 401, says="wrong aud"),
    Case("token wrong issuer", initialize(bearer(SIGNER.token(iss="https://evil.test"))), 401, says="wrong iss"),
    Case("token with trailing junk", initialize(bearer(GOOD + "x")), 401, leaks=LEAKS_TOKENS),
    Case("token of 12 KB", initialize(bearer("a" * 12_000)), 401, says="malformed"),
    # uvicorn (h11) refuses a request head over 16 KiB with 400, but only when it arrives in more than
    # one read; in one read it is served (and refused here for its token): either way, never a 2xx or 5xx.
    Case("token of 100 KB", initialize(bearer("a" * 100_000)), (400, 401, 431)),
    Case("token empty after Bearer", raw("/mcp", [*HEADERS.items(), ("authorization", "Bearer")], INIT), 401),
    Case(
        "token in the Basic scheme",
        initialize({**HEADERS, "authorization": f"Basic {GOOD}"}),
        401,
        says="authentication required",
        leaks=LEAKS_TOKENS,
    ),
    Case("token in the query string", initialize(HEADERS, f"/mcp?access_token={GOOD}"), 401, leaks=LEAKS_TOKENS),
    Case(
        "two Authorization headers, good one first",
        raw("/mcp", two_authorizations(f"Bearer {GOOD}", "Bearer not.a.token"), INIT),
        400,
        says="more than one Authorization header",
        leaks=LEAKS_TOKENS,
    ),
    Case(
        "two Authorization headers, good one second",
        raw("/mcp", two_authorizations("Bearer not.a.token", f"Bearer {GOOD}"), INIT),
        400,
        says="more than one Authorization header",
        leaks=LEAKS_TOKENS,
    ),
    Case(
        "2026-07-28 request without a token",
        post(PATH_PROBE, "anon", headers={"mcp-protocol-version": "2026-07-28"}),
        401,
    ),
    # -- sessions belong to the caller who opened them ---------------------------------------------------
    Case("alice's session, no token", post(call("web_echo", text="x"), "nobody@alice"), 401),
    Case(
        "alice's session, her expired token",
        post(
            call("web_echo", text="x"),
            "nobody@alice",
            headers={"authorization": f"Bearer {SIGNER.token(expires_in=-60)}"},
        ),
        401,
    ),
    Case("alice's session, mallory's token, relay path", post(call("web_echo", text="x"), "mallory@alice"), 404),
    Case("alice's session, mallory's token, SDK path", post(request("tools/list"), "mallory@alice"), 404),
    Case(
        "alice's session, mallory's token, DELETE",
        lambda env: _delete(env, "mallory@alice"),
        404,
    ),
    Case("alice's session, mallory's token, GET stream", lambda env: _get_stream(env, "mallory@alice"), 404),
    Case(
        "made-up session id",
        post(request("tools/list"), "alice", headers={"mcp-session-id": "0" * 32}),
        404,
    ),
    # -- headers ----------------------------------------------------------------------------------------
    Case(
        "100 KB header in one piece", raw("/mcp", [*HEADERS.items(), ("x-big", "a" * 100_000)], INIT), (400, 401, 431)
    ),
    Case(
        "100 KB header read in pieces",
        raw("/mcp", [*HEADERS.items(), ("x-big", "a" * 100_000)], INIT, split_at=15_000),
        (400, 431, None),
    ),
    Case(
        "10 MB header",
        raw("/mcp", [*HEADERS.items(), ("x-big", "a" * 10_000_000)], INIT, split_at=15_000),
        (400, 431, None),
    ),
    Case(
        "5000 headers",
        raw("/mcp", [*HEADERS.items(), *((f"x-h{i}", "v") for i in range(5000))], INIT),
        (400, 401, 431, None),
    ),
    Case(
        "foreign Host on the relay path",
        post(call("web_echo", text="x"), "alice", headers={"host": "evil.example"}),
        421,
    ),
    Case(
        "foreign Origin on the relay path",
        post(call("web_echo", text="x"), "alice", headers={"origin": "http://evil.example"}),
        403,
    ),
    # -- bodies -----------------------------------------------------------------------------------------
    Case("body over maxRequestBodySize", post(b"x" * (BODY_LIMIT + 1)), 413),
    Case(
        "body over the limit, unauthenticated (refused before it is read)",
        post(b"x" * (BODY_LIMIT + 1), "anon"),
        401,
    ),
    # Over the limit, chunked: the relay reads up to the limit and must hand all of it on (the SDK then
    # answers 413), never let the SDK take the rest of the body as a request of its own.
    Case("chunked body over the limit", chunked(SMUGGLED), 413, leaks=("smuggled",)),
    Case(
        "declared length over the limit, small body",
        raw("/mcp", lambda env: list(env.headers("alice").items()), call("web_echo", text="x"), length=10**9),
        413,
    ),
    Case("malformed JSON", post(b'{"jsonrpc": "2.0", "id": 1, "method": '), 400, -32700),
    Case("empty body", post(b""), 400, -32700),
    Case("JSON nested 5000 deep", post(b'{"a":' * 5000 + b"1" + b"}" * 5000), 400, -32700),
    Case("not JSON-RPC 2.0", post({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}), 400, -32600),
    Case("no jsonrpc member", post({"id": 1, "method": "tools/list"}), 400, -32600),
    Case("params as an array", post({**call("web_echo"), "params": ["web_echo"]}), 400, -32600),
    Case(
        "Content-Type text/plain",
        post(call("web_echo", text="x"), headers={"content-type": "text/plain"}),
        (400, 415),  # 400 from the loopback bind's Host/Origin/Content-Type check, else 415
    ),
    Case("Accept without event streams", post(call("web_echo", text="x"), headers={"accept": "application/json"}), 406),
    Case(
        "duplicate name member, the hidden one last",
        post(
            b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":'
            b'{"name":"web_echo","arguments":{"name":"pwned","text":"x"},"name":"local_grow"}}'
        ),
        200,
        -32602,
        "Unknown tool: local_grow",
    ),
    # -- JSON-RPC batches (2025-11-25 has none): refused whole, nothing in them runs ----------------------
    Case(
        "batch: an allowed call and a hidden one",
        post([call("web_echo", 5, text="batched"), grow("local_grow", 6)]),
        400,
        -32600,
        leaks=("web: batched",),
    ),
    Case("batch: one hidden call", post([grow("local_grow")]), 400, -32600),
    Case("batch: admin's denied call", post([grow("web_grow")], "admin"), 400, -32600),
    Case("batch: empty", post([]), 400, -32600),
    Case("batch: nested", post([[grow("local_grow")]]), 400, -32600),
    Case("batch: 1000 pings", post(PINGS), 400, -32600),
    Case("batch: over the body limit", post([grow("local_grow", i) for i in range(2000)]), 413),
    Case("batch: with initialize, unauthenticated", post([INIT, grow("local_grow")], "anon"), 401),
    # -- methods and ids -----------------------------------------------------------------------------
    Case("unknown method", post(request("tools/execute")), 200, -32601),
    Case("method in another case", post({**call("web_echo", text="x"), "method": "Tools/Call"}), 200, -32601),
    Case("method with a trailing space", post({**call("web_echo", text="x"), "method": "tools/call "}), 200, -32601),
    Case("notification method with an id", post(request("notifications/initialized", 9)), 200, -32601),
    Case(
        "tools/call without an id (a notification)",
        post({k: v for k, v in grow("local_grow").items() if k != "id"}),
        202,
    ),
    Case("tools/call with id null", post(grow("local_grow", None)), 202),
    Case("tools/call with a float id, relay path", post(call("web_echo", 1.5, text="x")), 202, leaks=("web: x",)),
    Case("tools/call with id true, relay path", post(call("web_echo", True, text="x")), 202, leaks=("web: x",)),
    Case(
        "tools/call with an object id, relay path", post(call("web_echo", {"a": 1}, text="x")), 202, leaks=("web: x",)
    ),
    Case("tools/call with a list id, relay path", post(call("web_echo", [1], text="x")), 202, leaks=("web: x",)),
    Case("tools/call with a list name", post(call(["web_echo"], text="x")), 200, -32602),
    Case("tools/call with an object name", post(call({"name": "web_echo"}, text="x")), 200, -32602),
    Case("tools/call with a number name", post(call(7, text="x")), 200, -32602),
    Case(
        "tools/call with arguments as a string",
        post({**call("web_echo"), "params": {"name": "web_echo", "arguments": "x"}}),
        200,
        -32602,
    ),
    Case(
        "cancel with an object requestId",
        post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"a": 1}}}),
        202,
    ),
    Case(
        "a response to a request nobody sent",
        post({"jsonrpc": "2.0", "id": "agentplex-1", "result": {}}),
        202,
    ),
    # -- hidden tools and names that look like allowed or hidden ones ------------------------------------
    unknown_tool("hidden tool (SDK path)", "local_grow", via=grow),
    unknown_tool("denied tool (relay path)", "web_grow", via=grow),
    unknown_tool("denied tool for admin (relay path)", "web_grow", "admin", via=grow),
    unknown_tool("denied tool for admin (SDK path)", "local_getenv", "admin"),
    unknown_tool("hidden tool, unprefixed", "grow", via=grow),
    *(
        unknown_tool(f"look-alike of web_echo: {label}", name)
        for label, name in [
            ("upper case", "WEB_ECHO"),
            ("separator doubled", "web__echo"),
            ("other separator", "web-echo"),
            ("dot separator", "web.echo"),
            ("fullwidth separator", "web\uff3fecho"),
            ("Cyrillic e", "web_\u0435cho"),
            ("fullwidth letters", "\uff57\uff45\uff42_echo"),
            ("trailing space", "web_echo "),
            ("leading space", " web_echo"),
            ("trailing NUL", "web_echo\x00"),
            ("trailing newline", "web_echo\n"),
            ("zero-width space", "web_echo\u200b"),
            ("combining accent", "web_echo\u0301"),
            ("unprefixed", "echo"),
            ("10 000 characters", "web_" + "e" * 10_000),
        ]
    ),
    *(
        unknown_tool(f"look-alike of a denied tool, as admin: {label}", name, "admin", via=grow)
        for label, name in [
            ("upper case", "WEB_GROW"),
            ("separator doubled", "web__grow"),
            ("fullwidth separator", "web\uff3fgrow"),
            ("Cyrillic o", "web_gr\u043ew"),
            ("fullwidth letters", "\uff57\uff45\uff42_grow"),
            ("trailing space", "web_grow "),
            ("trailing NUL", "web_grow\x00"),
            ("zero-width joiner", "web_\u200dgrow"),
        ]
    ),
    *(
        unknown_tool(f"look-alike of local_getenv, as admin: {label}", name, "admin")
        for label, name in [
            ("upper case", "LOCAL_GETENV"),
            ("Cyrillic e", "local_g\u0435tenv"),
            ("tab", "local_getenv\t"),
        ]
    ),
    Case(
        "hidden resource",
        post(request("resources/read", uri="local+mem://static")),
        200,
        -32002,
        "Resource not found: local+mem://static",
    ),
    Case(
        "hidden prompt",
        post(request("prompts/get", name="local_greet", arguments={"name": "x"})),
        200,
        -32602,
        "Unknown prompt: local_greet",
    ),
    Case(
        "completion for a hidden prompt",
        post(
            request(
                "completion/complete",
                ref={"type": "ref/prompt", "name": "local_greet"},
                argument={"name": "name", "value": "A"},
            )
        ),
        200,
        -32602,
        "Unknown prompt: local_greet",
    ),
    # -- paths around the protected route: never its endpoint without a token ------------------------------
    *(
        Case(f"path {target!r}", raw(target, PROBE_HEADERS, PATH_PROBE), 404)
        for target in [
            "/MCP",
            "/mcp%2F",
            "/mcp/",
            "/mcp;x",
            "/mcp%00",
            "/mcp%20",
            "*",
        ]
    ),
    Case("path '\\mcp' (not a request target)", raw("\\mcp", PROBE_HEADERS, PATH_PROBE), 400),  # llhttp refuses it
    *(
        Case(f"path {target!r} (still the protected route)", raw(target, PROBE_HEADERS, PATH_PROBE), 401)
        for target in ["/%6dcp", "/%6D%63%70", "/mcp?x=/public", "/mcp#x"]  # (llhttp drops a fragment)
    ),
    *(  # dot segments and empty segments route differently behind a normalizing proxy: refused outright
        Case(f"path {target!r} (not normalized)", raw(target, PROBE_HEADERS, PATH_PROBE), 400)
        for target in [
            "//mcp",
            "/mcp/../mcp",
            "/mcp/%2e%2e/mcp",
            "/./mcp",
            "/sse/../mcp",
            "/messages/../mcp",
            "/messages/%2e%2e/mcp",
            "/public/../mcp",
            "/public/%2e%2e/mcp",
            "/public%2F..%2Fmcp",
            "/public/..%2Fmcp",
            "http://evil.example/mcp",  # absolute form: uvicorn hands it over as the path
        ]
    ),
    Case("GET /sse without a token", raw("/sse", [("accept", "text/event-stream")], method="GET"), 401),
    Case("POST /messages/ without a token", raw("/messages/?session_id=" + "0" * 32, PROBE_HEADERS, PATH_PROBE), 401),
]


async def _delete(env: Env, who: str) -> Reply:
    response = await env.http.delete(f"{env.base}/mcp", headers=env.headers(who))
    return Reply(response.status_code, dict(response.headers), response.text)


async def _get_stream(env: Env, who: str) -> Reply:
    headers = {**env.headers(who), "accept": "text/event-stream"}
    with anyio.fail_after(10):
        async with env.http.stream("GET", f"{env.base}/mcp", headers=headers) as response:
            if response.status_code == 200:  # a stream was opened: do not wait for it to end
                return Reply(200, dict(response.headers), "")
            return Reply(response.status_code, dict(response.headers), (await response.aread()).decode())


def _params() -> list[Any]:
    labels = [case.label for case in CASES]
    assert len(labels) == len(set(labels)), "case labels must be unique"
    return [
        pytest.param(
            case, id=case.label, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        )
        for case in CASES
    ]


@pytest.mark.parametrize("case", _params())
async def test_hostile_request_is_refused(env: Env, case: Case) -> None:
    reply = await case.send(env)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert reply.status in expected, (case.label, reply.status, reply.text[:300])
    if case.error is not None:
        assert reply.message()["error"]["code"] == case.error, reply.text[:300]
    if case.error_message:
        assert reply.message()["error"]["message"] == case.error_message, reply.text[:300]
    if case.status == 200 and case.error is None and reply.headers.get("content-type", "").startswith("text/event"):
        assert "result" in reply.message(), reply.text[:300]
    if case.says:
        assert case.says in reply.everything(), reply.everything()[:500]
    everything = reply.everything()
    web_address = env.web_url.split("//", 1)[1].rsplit("/", 1)[0]
    who = getattr(case.send, "who", "anon")  # whose own session id may be in the answer
    # A tool list of the protected route would carry whoami, which no case asks for.
    never = ["Traceback", 'File "', web_address, "web_whoami", "local_whoami", *env.secrets(who), *case.leaks]
    for word in never:
        assert word not in everything, (case.label, word[:40], everything[:500])
    if reply.status is not None and reply.status >= 400:
        assert "mcp-session-id" not in reply.headers or who != "anon", reply.headers
    await _still_fine(env)


async def _still_fine(env: Env) -> None:
    """The legitimate caller is served as before, and no target ran a hostile call."""
    echoed = await env.call("alice", "web_echo", text="still ok")
    assert echoed["result"]["content"][0]["text"] == "web: still ok", echoed
    assert not [name for name in await env.tool_names("root") if PWNED in name]


async def test_sse_messages_need_the_stream_owner(env: Env) -> None:
    """The legacy transport: POST /messages/ with somebody's session id is refused unless it is theirs."""
    alice = {"authorization": f"Bearer {env.tokens['alice']}"}
    plain = {"content-type": "application/json"}
    with anyio.fail_after(30):
        async with env.http.stream(
            "GET", f"{env.base}/sse", headers={**alice, "accept": "text/event-stream"}
        ) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()

            async def answer() -> dict[str, Any]:
                async for line in lines:
                    if line.startswith("data:") and line[5:].strip().startswith("{"):
                        return json.loads(line[5:])
                raise AssertionError("the stream ended")

            endpoint = ""
            async for line in lines:
                if line.startswith("data:") and "session_id=" in line:
                    endpoint = line[5:].strip()
                    break
            assert endpoint.startswith("/messages/?session_id=")
            assert (await env.post(endpoint, _json(INIT), {**plain, **alice})).status == 202
            assert "serverInfo" in json.dumps(await answer())
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await env.post(endpoint, _json(initialized), {**plain, **alice})).status == 202

            hostile = _json(grow("local_grow", 41))
            assert (await env.post(endpoint, hostile, plain)).status == 401  # no token
            mallory = {**plain, "authorization": f"Bearer {env.tokens['mallory']}"}
            assert (await env.post(endpoint, hostile, mallory)).status == 404  # somebody else's session
            # Another route's transport does not know the session (and the public route asks for no token).
            assert (await env.post(f"/public{endpoint}", hostile, plain)).status == 404
            own = await env.post(endpoint, _json(call("local_echo", 42, text="over sse")), {**plain, **alice})
            assert own.status == 202
            answered = await answer()  # the first answer on alice's stream is her own call's: nothing else ran
            assert answered["id"] == 42 and "local: over sse" in json.dumps(answered), answered
    await _still_fine(env)


async def test_2026_clients_meet_the_same_rules(env: Env) -> None:
    """The sessionless era goes through the same authorization: hidden is unknown, denied is unknown."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    for who, tool in (
        ("alice", "local_grow"),
        ("alice", "web_grow"),
        ("admin", "web_grow"),
        ("admin", "web\uff3fgrow"),
    ):
        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {env.tokens[who]}"}, timeout=30) as http,
            streamable_http_client(f"{env.base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.discover()
            listed = {t.name for t in (await client.list_tools()).tools}
            assert tool not in listed
            with pytest.raises(MCPError, match=f"Unknown tool: {tool}"):
                await client.call_tool(tool, {"name": PWNED})
    await _still_fine(env)


async def test_controls_the_suite_relies_on(env: Env) -> None:
    """Runs last: what the table's checks would notice is real. root may grow and read the canary; alice is
    served on both paths; the leak checks would have seen the canary, and a tool that got grown."""
    assert set(await env.tool_names("alice")) == {"web_echo", "local_echo"}
    assert (await env.call("alice", "local_echo", text="sdk"))["result"]["content"][0]["text"] == "local: sdk"
    assert (await env.call("alice", "web_echo", text="relay"))["result"]["content"][0]["text"] == "web: relay"
    canary = await env.call("root", "local_getenv", name="CANARY")
    assert canary["result"]["content"][0]["text"] == SECRET  # the secret is there to be leaked
    denied = await env.call("admin", "local_getenv", name="CANARY")
    assert denied["error"]["message"] == "Unknown tool: local_getenv"
    grown = await env.call("root", "local_grow", name="control")
    assert "added control" in json.dumps(grown)
    assert "local_control" in await env.tool_names("root")  # the trace the table looks for would show
