"""`extAuthz` in the reference's form: each request is checked by Envoy's ext_authz v3 service
(`envoy.service.auth.v3.Authorization/Check`) over gRPC at `host`.

The CheckRequest carries what the reference sends: the caller's and the listener's addresses, the
request's method, path (with query), host, scheme and headers (all of them plus the `:authority`,
`:method`, `:path` and `:scheme` pseudo-headers by default, else those in `includeRequestHeaders`),
the body when `includeRequestBody` says so (413 when too large and `allowPartialMessage` is false),
`protocol.grpc.context` as `context_extensions` and `protocol.grpc.metadata` (CEL) as
`metadata_context.filter_metadata` (by default, the caller's JWT claims under
`envoy.filters.http.jwt_authn.jwt_payload`, as the reference does).

agentplex adds the MCP message: for a JSON-RPC POST, `context_extensions` gets `mcp.method` and, for
tools/call, prompts/get and resources/read, `mcp.name` (the tool or prompt name, or resource URI, as the
client sent it), or `mcp.unread: too-large` when the body is over the route's limit. These keys are the
gateway's: a configured `context` may not use them, and clients cannot forge them (headers can be).

The answer: an OK status applies `ok_response` to the request on its way upstream (`headers` set or
appended per their append action, `headers_to_remove`, `query_parameters_to_set`/`_to_remove`); a
non-OK status denies with `denied_response` (its status, default 403, its headers and body) or a bare
403. A service that is down or slow (`policies.http.requestTimeout`, default 2 s): `failureMode` deny
answers 403 "external authorization failed" (the reference's answer), `{denyWithStatus: N}` answers N,
`allow` lets the request through. Not supported (config errors): `cache`. Not applied: the
answer's `response_headers_to_add` and `dynamic_metadata`; no `tls_session` is sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.guard import Access
from gateway.config import ConfigError
from gateway.config.policies import DenyWithStatus, ExtAuthz
from gateway.policies.cel_context import EvalError, Expr
from gateway.policies.envoy_protos import (
    CHECK,
    Address,
    AttributeContext,
    CheckRequest,
    Metadata,
    SocketAddress,
    Struct,
)
from gateway.policies.ext_authz import mcp_fields
from gateway.policies.grpc_service import GrpcService, failure_reason, service_target, service_timeout
from gateway.policies.http import Identity, headers_changed, request_body

logger = logging.getLogger("agentplex.ext_authz")

MCP_KEYS = ("mcp.method", "mcp.name", "mcp.unread")
PSEUDO = (":authority", ":method", ":path", ":scheme")
_HTTP = Access("")
_APPEND, _ADD_IF_ABSENT, _OVERWRITE_OR_ADD, _OVERWRITE_IF_EXISTS = 0, 1, 2, 3
_UNSETTABLE = {"host", "content-length", "transfer-encoding", "connection"}


class GrpcExtAuthzStep:
    def __init__(self, cfg: ExtAuthz, where: str, body_limit: int) -> None:
        if cfg.cache is not None:
            raise ConfigError(f"{where}.cache: not supported by agentplex (every request is checked)")
        grpc_cfg = cfg.protocol.grpc
        assert grpc_cfg is not None  # protocol.http: ext_authz_http_protocol.py
        self.cfg = cfg
        self.where = where
        self.body_limit = body_limit
        self.context = dict(grpc_cfg.context or {})
        for key in MCP_KEYS:
            if key in self.context:
                raise ConfigError(f"{where}.protocol.grpc.context.{key}: reserved for the gateway's MCP facts")
        self.metadata = (
            {k: Expr(v) for k, v in (grpc_cfg.metadata or {}).items()} if grpc_cfg.metadata is not None else None
        )
        self.include = [h.lower() for h in cfg.includeRequestHeaders] if cfg.includeRequestHeaders else None
        target = service_target(cfg.host, cfg.backend, cfg.service, where)
        timeout = service_timeout(cfg.policies, where)
        self.service = GrpcService(target, CHECK, timeout)

    async def aclose(self) -> None:
        await self.service.aclose()

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        check = await self._check_request(scope, identity)
        if not isinstance(check, CheckRequest):
            return check
        timeout = self.service.timeout
        try:
            with anyio.fail_after(timeout + 1):
                answer = await self.service.call(check, timeout)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            return unavailable(self.cfg, self.where, failure_reason(exc))
        if answer.status.code != 0:
            if answer.HasField("denied_response"):
                denied = answer.denied_response
                headers: list[tuple[bytes, bytes]] = []
                for option in denied.headers:
                    headers = _apply_option(headers, option)
                return Answer(
                    denied.status.code if 100 <= denied.status.code <= 599 else 403, headers, denied.body.encode()
                )
            return Answer(403, [], b"external authorization failed")
        if answer.HasField("ok_response"):
            _apply_ok(scope, answer.ok_response)
        return None

    async def _check_request(self, scope: Scope, identity: Identity) -> CheckRequest | ASGIApp:
        method = scope.get("method", "")
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope.get("path", "") + (f"?{query}" if query else "")
        authority = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        pseudo = {":authority": authority, ":method": method, ":path": path, ":scheme": scope.get("scheme", "http")}
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1")
            if self.include is not None and name not in self.include:
                continue
            text = value.decode("latin-1")
            if name in headers:
                text = headers[name] + ("; " if name == "cookie" else ", ") + text
            headers[name] = text
        for name, value in pseudo.items():
            if self.include is None or name in self.include:
                headers[name] = value

        http = AttributeContext.HttpRequest(
            id=uuid.uuid4().hex,
            method=method,
            headers=headers,
            path=path,
            host=authority,
            scheme=scope.get("scheme", "http"),
            protocol="HTTP/" + scope.get("http_version", "1.1"),
        )
        if self.cfg.includeRequestBody is not None:
            options = self.cfg.includeRequestBody
            body = await request_body(scope, max(self.body_limit, options.maxRequestBytes))
            if body is None or (len(body) > options.maxRequestBytes and not options.allowPartialMessage):
                return Answer(413, [], b"request body too large for external authorization")
            http.size = len(body) if len(body) <= options.maxRequestBytes else -1
            body = body[: options.maxRequestBytes]
            if options.packAsBytes:
                http.raw_body = body
            else:
                http.body = body.decode("utf-8", "replace")

        context = dict(self.context)
        if method == "POST":
            mcp, unread = await mcp_fields(scope, self.body_limit)
            for key, value in (mcp or {}).items():
                context[f"mcp.{key}"] = value
            if unread:
                context["mcp.unread"] = unread

        attributes = AttributeContext(
            source=AttributeContext.Peer(address=_address(scope.get("client"))),
            destination=AttributeContext.Peer(address=_address(scope.get("server"))),
            request=AttributeContext.Request(http=http),
            context_extensions=context,
            metadata_context=self._metadata(scope, identity),
        )
        attributes.request.time.FromNanoseconds(time.time_ns())
        return CheckRequest(attributes=attributes)

    def _metadata(self, scope: Scope, identity: Identity) -> Metadata:
        out = Metadata()
        if self.metadata is None:
            if identity.jwt is not None:
                out.filter_metadata["envoy.filters.http.jwt_authn"].update({"jwt_payload": identity.jwt})
            return out
        for key, expr in self.metadata.items():
            try:
                value = expr.evaluate(scope, _HTTP)
            except EvalError:
                continue  # as the reference: a value that cannot be computed is left out
            entry = Struct()
            try:
                entry.update(value if isinstance(value, dict) else {"value": value})
            except (ValueError, TypeError):
                continue
            out.filter_metadata[key].CopyFrom(entry)
        return out


def unavailable(cfg: ExtAuthz, where: str, reason: str) -> ASGIApp | None:
    """The answer `failureMode` gives when the service is down or slow (None: let the request through)."""
    mode = cfg.failureMode
    if mode == "allow":
        logger.warning("%s: authorization service unavailable (%s); request allowed (failureMode allow)", where, reason)
        return None
    logger.error("%s: authorization service unavailable (%s); request refused", where, reason)
    if isinstance(mode, DenyWithStatus):
        return Answer(mode.denyWithStatus, [], b"Authorization service unavailable")
    return Answer(403, [], b"external authorization failed")


def _address(peer: Any) -> Address:
    if not peer:
        return Address()
    host, port = peer[0], peer[1]
    return Address(socket_address=SocketAddress(address=str(host), port_value=int(port or 0)))


def _apply_option(headers: list[tuple[bytes, bytes]], option: Any) -> list[tuple[bytes, bytes]]:
    """One HeaderValueOption applied as the reference does (append_action, else the deprecated `append`)."""
    name = option.header.key.lower()
    if not name or name.startswith(":"):
        return headers
    raw = option.header.raw_value or option.header.value.encode("latin-1", "replace")
    if not raw:
        return headers
    key = name.encode("latin-1")
    action = option.append_action
    if action == _APPEND:
        action = _APPEND if option.HasField("append") and option.append.value else _OVERWRITE_OR_ADD
    present = any(k == key for k, _ in headers)
    if action == _APPEND:
        return [*headers, (key, raw)]
    if action == _ADD_IF_ABSENT:
        return headers if present else [*headers, (key, raw)]
    if action == _OVERWRITE_IF_EXISTS and not present:
        return headers
    return [(k, v) for k, v in headers if k != key] + [(key, raw)]


def _apply_ok(scope: Scope, ok: Any) -> None:
    headers = list(scope.get("headers", ()))
    for name in ok.headers_to_remove:
        lowered = name.lower()
        if not lowered.startswith(":") and lowered != "host":
            key = lowered.encode("latin-1")
            headers = [(k, v) for k, v in headers if k != key]
    for option in ok.headers:
        if option.header.key.lower() not in _UNSETTABLE:
            headers = _apply_option(headers, option)
    scope["headers"] = headers
    if ok.query_parameters_to_set or ok.query_parameters_to_remove:
        removed = set(ok.query_parameters_to_remove)
        pairs = [
            (k, v)
            for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            if k not in removed
        ]
        for param in ok.query_parameters_to_set:
            pairs = [(k, v) for k, v in pairs if k != param.key] + [(param.key, param.value)]
        scope["query_string"] = urlencode(pairs).encode("latin-1")
    headers_changed(scope)  # rules and limits evaluated from now on read the service's headers


class Answer:
    """The service's (or the policy's) refusal: a status, headers and a body, as given."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.body = body
        self.headers = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
        if not any(k == b"content-type" for k, _ in self.headers):
            self.headers.append((b"content-type", b"text/plain; charset=utf-8"))
        self.headers.append((b"content-length", b"%d" % len(body)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})
