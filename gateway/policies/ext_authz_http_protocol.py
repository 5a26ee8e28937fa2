"""`extAuthz` in the reference's form with `protocol: {http: {...}}`: the request is checked by asking
the service at `host` over plain HTTP, as the reference does.

The check is the client's method at the client's path and query (or the CEL `path`), carrying the
client's headers named in `includeRequestHeaders` (default: only Authorization), the `addRequestHeaders`
computed by CEL, and a body: the CEL `body` (strings as they are, other values as JSON), or the client's
body when `includeRequestBody` says so (with `x-envoy-auth-partial-body`), else none. A 2xx answer
allows: the headers named in `includeResponseHeaders` are copied onto the request (replacing the
client's). A 401 or 403 with `redirect` set answers 302 to the CEL `redirect` URL. Any other answer
is passed to the client as it is (status, headers, body). A service that is down or slow
(`policies.http.requestTimeout`, default 2 s): `failureMode` as in the gRPC protocol.

Not supported (config errors): `metadata` (the reference exposes it as an `extauthz` CEL variable that
agentplex does not have).
"""

from __future__ import annotations

import json

import anyio
import httpx
from starlette.types import ASGIApp, Scope

from federation.guard import Access
from gateway.config import ConfigError
from gateway.config.policies import ExtAuthz, ExtAuthzHttpProtocol
from gateway.policies.cel_context import EvalError, Expr
from gateway.policies.ext_authz_grpc import Answer, unavailable
from gateway.policies.grpc_service import service_target, service_timeout
from gateway.policies.http import Identity, LazyHttpClient, headers_changed, request_body

ANSWER_LIMIT = 1024 * 1024  # how much of a denying answer's body is passed on
_HTTP = Access("")
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"content-length"}


class HttpProtocolExtAuthzStep(LazyHttpClient):
    def __init__(self, cfg: ExtAuthz, where: str, body_limit: int) -> None:
        proto = cfg.protocol.http
        assert proto is not None
        if cfg.cache is not None:
            raise ConfigError(f"{where}.cache: not supported by agentplex (every request is checked)")
        if proto.metadata:
            raise ConfigError(
                f"{where}.protocol.http.metadata: not supported by agentplex (it has no `extauthz` CEL variable)"
            )
        self.cfg = cfg
        self.proto: ExtAuthzHttpProtocol = proto
        self.where = where
        self.body_limit = body_limit
        self.base = "http://" + service_target(cfg.host, cfg.backend, cfg.service, where)
        self.timeout = service_timeout(cfg.policies, where)
        self.include = [h.lower() for h in (cfg.includeRequestHeaders or ["authorization"]) if not h.startswith(":")]
        self.path = Expr(proto.path) if proto.path else None
        self.redirect = Expr(proto.redirect) if proto.redirect else None
        self.body = Expr(proto.body) if proto.body else None
        self.add = {name.lower(): Expr(src) for name, src in proto.addRequestHeaders.items()}
        self.copy = [h.lower().encode("latin-1") for h in proto.includeResponseHeaders]
        self.client_timeout = self.timeout

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        method = scope.get("method", "GET")
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope.get("path", "/") + (f"?{query}" if query else "")
        if self.path is not None:
            computed = self._string(self.path, scope)
            if computed is None:
                return Answer(403, [], b"external authorization failed")
            path = computed
        headers: list[tuple[str, bytes]] = [
            (k.decode("latin-1"), v) for k, v in scope.get("headers", ()) if k.decode("latin-1") in self.include
        ]
        content = b""
        if self.body is not None:
            try:
                value = self.body.evaluate(scope, _HTTP)
            except EvalError:
                return Answer(403, [], b"external authorization failed")
            content = (
                value
                if isinstance(value, bytes)
                else value.encode()
                if isinstance(value, str)
                else json.dumps(value).encode()
            )
        elif self.cfg.includeRequestBody is not None:
            options = self.cfg.includeRequestBody
            body = await request_body(scope, max(self.body_limit, options.maxRequestBytes))
            partial = body is not None and len(body) > options.maxRequestBytes
            if body is None or (partial and not options.allowPartialMessage):
                return Answer(413, [], b"request body too large for external authorization")
            content = body[: options.maxRequestBytes]
            headers.append(("x-envoy-auth-partial-body", b"true" if partial else b"false"))
        for name, expr in self.add.items():
            text = self._string(expr, scope)
            if text is not None:
                headers = [(k, v) for k, v in headers if k != name] + [(name, text.encode("latin-1", "replace"))]
        try:
            with anyio.fail_after(self.timeout + 1):
                request = self.client.build_request(method, self.base + path, headers=headers, content=content)
                response = await self.client.send(request, stream=True)
                try:
                    answer = await _read_capped(response, ANSWER_LIMIT)
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError | httpx.TimeoutException) else type(exc).__name__
            return unavailable(self.cfg, self.where, reason)
        if 200 <= response.status_code < 300:
            if self.copy:
                kept = [(k, v) for k, v in scope.get("headers", ()) if k not in self.copy]
                for name in self.copy:
                    value = response.headers.get(name.decode("latin-1"))
                    if value is not None:
                        kept.append((name, value.encode("latin-1", "replace")))
                scope["headers"] = kept
                headers_changed(scope)
            return None
        if response.status_code in (401, 403) and self.redirect is not None:
            location = self._string(self.redirect, scope)
            if location is None:
                return Answer(403, [], b"external authorization failed")
            return Answer(302, [(b"location", location.encode("latin-1", "replace"))], b"")
        passed = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
        return Answer(response.status_code, passed, answer)

    @staticmethod
    def _string(expr: Expr, scope: Scope) -> str | None:
        try:
            value = expr.evaluate(scope, _HTTP)
        except EvalError:
            return None
        return value if isinstance(value, str) else None


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit]
