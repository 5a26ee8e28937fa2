"""`cors`: browsers may call a route from the origins it allows.

The policy wraps the route outside its other HTTP-stage policies: a preflight (OPTIONS with Origin
and Access-Control-Request-Method) carries no credentials, so the gateway answers it before any
authentication runs and it never reaches the backend; every other answer from an allowed origin,
refusals included (a 401 the browser must read to start OAuth), gets the CORS headers. A
disallowed origin's preflight gets 403 without CORS headers; its other requests pass on untouched.

On MCP routes the protocol's own headers are always allowed and exposed, whatever the policy lists:
a browser client cannot speak streamable HTTP without sending `Mcp-Session-Id`,
`Mcp-Protocol-Version`, `Last-Event-ID`, `Content-Type` and (with auth) `Authorization`, nor
without reading `Mcp-Session-Id` and `WWW-Authenticate`; and GET, POST and DELETE are its methods.
Listing them adds no reach: only origins the policy allows get any of it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config.policies import Cors
from gateway.policies.http import header

MCP_METHODS = ("GET", "POST", "DELETE")
MCP_REQUEST_HEADERS = ("content-type", "authorization", "mcp-session-id", "mcp-protocol-version", "last-event-id")
MCP_EXPOSED_HEADERS = ("mcp-session-id", "mcp-protocol-version", "www-authenticate")
_OURS = frozenset(
    {b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-expose-headers"}
)

Headers = list[tuple[bytes, bytes]]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class CorsPolicy:
    """The policy compiled: origin tests and ready header lists, so a request only looks them up."""

    def __init__(self, cfg: Cors, *, mcp: bool = False) -> None:
        self.mcp = mcp
        self.any_origin = "*" in cfg.allowOrigins
        self.origins = frozenset(o for o in cfg.allowOrigins if "*" not in o)
        self.wildcards = [tuple(o.split("*", 1)) for o in cfg.allowOrigins if o != "*" and "*" in o]
        self.credentials = cfg.allowCredentials
        # `*` is only sent when the answer is the same for every origin (never with credentials).
        self.echo = not self.any_origin or self.credentials
        methods = _unique([m.upper() for m in cfg.allowMethods] + (list(MCP_METHODS) if mcp else []))
        headers = _unique([h.lower() for h in cfg.allowHeaders] + (list(MCP_REQUEST_HEADERS) if mcp else []))
        exposed = _unique([h.lower() for h in cfg.exposeHeaders] + (list(MCP_EXPOSED_HEADERS) if mcp else []))
        self.any_method, self.any_header = "*" in methods, "*" in headers
        self.preflight: Headers = []
        if methods and not self.any_method:
            self.preflight.append((b"access-control-allow-methods", ", ".join(methods).encode("latin-1")))
        if headers and not self.any_header:
            self.preflight.append((b"access-control-allow-headers", ", ".join(headers).encode("latin-1")))
        if cfg.maxAge is not None:
            self.preflight.append((b"access-control-max-age", b"%d" % int(cfg.maxAge)))
        self.common: Headers = [(b"access-control-allow-credentials", b"true")] if self.credentials else []
        self.actual: Headers = list(self.common)
        if exposed:
            self.actual.append((b"access-control-expose-headers", ", ".join(exposed).encode("latin-1")))

    def allows(self, origin: str) -> bool:
        origin = origin.lower()
        if self.any_origin or origin in self.origins:
            return True
        return any(
            origin.startswith(head) and origin.endswith(tail) and "/" not in origin[len(head) : -len(tail)]
            and len(origin) > len(head) + len(tail)
            for head, tail in self.wildcards
        )

    def allow_origin(self, origin: str) -> Headers:
        return [(b"access-control-allow-origin", origin.encode("latin-1") if self.echo else b"*")]


class CorsApp:
    """Wraps a route (outside its PolicyApp): answers preflights, adds CORS headers to the rest."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        origin = header(scope, "origin")
        if scope["method"] == "OPTIONS" and origin is not None and header(scope, "access-control-request-method"):
            await self.preflight(scope, send, origin)
            return
        added: Headers = []
        if origin is not None and policy.allows(origin):
            added = policy.allow_origin(origin) + policy.actual
            if policy.mcp:
                # The gateway has judged this origin; the MCP SDK's DNS-rebinding guard on loopback binds
                # would refuse any origin but localhost (its Host check still holds).
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"origin"]
        if not added and not policy.echo:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: Headers = list(message.get("headers", []))
                if added:
                    headers = [(k, v) for k, v in headers if k.lower() not in _OURS] + added
                if policy.echo:
                    headers = _vary(headers, b"Origin")
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_cors)

    async def preflight(self, scope: Scope, send: Send, origin: str) -> None:
        policy = self.policy
        headers: Headers = [(b"content-length", b"0")]
        if policy.echo:
            headers = _vary(headers, b"Origin")
        if not policy.allows(origin):
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += policy.allow_origin(origin) + policy.common + policy.preflight
        if policy.any_method:
            method = header(scope, "access-control-request-method") or ""
            headers.append((b"access-control-allow-methods", method.encode("latin-1")))
            headers = _vary(headers, b"Access-Control-Request-Method")
        if policy.any_header:
            asked = header(scope, "access-control-request-headers")
            if asked:
                headers.append((b"access-control-allow-headers", asked.encode("latin-1")))
            headers = _vary(headers, b"Access-Control-Request-Headers")
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _vary(headers: Headers, name: bytes) -> Headers:
    """Add `name` to Vary (one Vary header, existing values kept)."""
    current = [v for k, v in headers if k.lower() == b"vary"]
    values = [t.strip() for v in current for t in v.split(b",") if t.strip()]
    if any(t == b"*" or t.lower() == name.lower() for t in values):
        return headers
    return [(k, v) for k, v in headers if k.lower() != b"vary"] + [(b"vary", b", ".join([*values, name]))]
