"""`extAuthz` over HTTP: every request on the route is allowed or denied by an external service.

The check is `POST <http.url>` on one pooled connection pool per policy, carrying:

- `x-agentplex-request-method` / `x-agentplex-request-path`: the client's request (no query string:
  it can hold credentials);
- the client's headers named in `includeRequestHeaders`, and only those (Authorization only when listed;
  `host` travels as `x-forwarded-host`);
- who the caller is, when an authentication step found out: `x-agentplex-jwt-sub`, `x-agentplex-basic-user`,
  `x-agentplex-api-key` (the key's metadata as compact JSON);
- when the body is a JSON-RPC message (read up to the route's maxRequestBodySize, then replayed to the route): the MCP method
  and, for tools/call, prompts/get and resources/read, the tool or prompt name or the resource URI —
  as `x-agentplex-mcp-method` / `x-agentplex-mcp-name` (`includeMcp: headers`; values outside printable
  ASCII, and '%', are percent-encoded UTF-8), or in a JSON body (`includeMcp: body`):
  `{"request": {"method", "path", "headers"}, "caller": {...}, "mcp": {"method", "name"} | null}`.
  A body too large to look into is flagged (`x-agentplex-mcp-unread: too-large`, `"mcpUnread": "too-large"`),
  so a strict service can refuse what it cannot see.

The answer: 2xx allows; the headers named in `propagateHeaders` are copied from it into the caller's
`Identity.headers` and onto the request (replacing anything the client sent under those names, so
rules reading `request.headers` see the service's word). Any other status denies: the client gets
that status and the service's body (at most 4 KiB) with its content type and WWW-Authenticate /
Retry-After / Location. A service that cannot be reached or does not answer within `http.timeout`:
`failClosed` answers 503, `failOpen` lets the request through and logs a warning.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pydantic_core
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import ConfigError
from gateway.config.policies import ExtAuthz
from gateway.policies.http import Identity, LazyHttpClient, Refusal, headers_changed, request_body

logger = logging.getLogger("agentplex.ext_authz")

BODY_LIMIT = 4 * 1024 * 1024  # default: how much of a body is read for the MCP method and name (the route's limit)
ANSWER_LIMIT = 4096  # how much of a denying answer's body reaches the client
PREFIX = "x-agentplex-"
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_FRAMING = {"connection", "content-length", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
_PASSED_ON_DENY = ("www-authenticate", "retry-after", "location")
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class ExtAuthzStep(LazyHttpClient):
    def __init__(self, cfg: ExtAuthz, where: str, body_limit: int = BODY_LIMIT) -> None:
        self.cfg = cfg
        self.body_limit = body_limit
        self.where = where
        self.include = [h.lower() for h in cfg.includeRequestHeaders or ()]
        self.propagate = [h.lower() for h in cfg.propagateHeaders]
        for key, names, banned in (
            ("includeRequestHeaders", self.include, _FRAMING),
            ("propagateHeaders", self.propagate, {*_FRAMING, "host"}),
        ):
            for name in names:
                if name in banned or name.startswith(PREFIX):
                    raise ConfigError(f"{where}.{key}: {name!r} cannot be passed on (framing or gateway header)")
        if cfg.http.timeout <= 0:
            raise ConfigError(f"{where}.http.timeout: must be greater than 0")
        self.client_timeout = cfg.http.timeout

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        headers, document = await self._check_request(scope, identity)
        try:
            with anyio.fail_after(self.cfg.http.timeout):
                async with self.client.stream("POST", self.cfg.http.url, headers=headers, content=document) as response:
                    body, truncated = await _read_capped(response, ANSWER_LIMIT)  # read: the connection goes back
                    if 200 <= response.status_code < 300:
                        self._allow(scope, identity, response.headers)
                        return None
                    return Denial(response.status_code, body, truncated, response.headers)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError | httpx.TimeoutException) else type(exc).__name__
            if self.cfg.failureMode == "failOpen":
                logger.warning(
                    "%s: authorization service unavailable (%s); request allowed (failOpen)", self.where, reason
                )
                self._allow(scope, identity, httpx.Headers())
                return None
            logger.error("%s: authorization service unavailable (%s); request refused (failClosed)", self.where, reason)
            return Refusal(
                503, "authorization_unavailable", "the authorization service is unavailable; try again later"
            )

    async def _check_request(
        self, scope: Scope, identity: Identity
    ) -> tuple[list[tuple[str, str | bytes]], bytes | None]:
        method, path = scope.get("method", ""), scope.get("path", "")
        headers: list[tuple[str, str | bytes]] = [
            (PREFIX + "request-method", method),
            (PREFIX + "request-path", _encode(path)),
        ]
        included: dict[str, list[bytes]] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1")
            if name in self.include:
                included.setdefault(name, []).append(value)
        for name, values in included.items():
            headers += [("x-forwarded-host" if name == "host" else name, v) for v in values]  # raw bytes, as received
        caller = _caller(identity)
        if "jwt" in caller:
            headers.append((PREFIX + "jwt-sub", _encode(str(caller["jwt"]["sub"]))))
        if "apiKey" in caller:
            headers.append((PREFIX + "api-key", json.dumps(caller["apiKey"], separators=(",", ":"), default=str)))
        if "basicAuth" in caller:
            headers.append((PREFIX + "basic-user", _encode(caller["basicAuth"]["username"])))

        mcp: dict[str, str] | None = None
        unread: str | None = None
        if self.cfg.includeMcp != "none" and method == "POST":
            mcp, unread = await mcp_fields(scope, self.body_limit)
        if self.cfg.includeMcp == "headers":
            if mcp is not None:
                headers += [(PREFIX + "mcp-" + key, _encode(value)) for key, value in mcp.items()]
            if unread:
                headers.append((PREFIX + "mcp-unread", unread))
            return headers, None
        if self.cfg.includeMcp == "none":
            return headers, None
        document: dict[str, Any] = {
            "request": {
                "method": method,
                "path": path,
                "headers": {k: ", ".join(v.decode("latin-1") for v in vs) for k, vs in included.items()},
            },
            "caller": caller,
            "mcp": mcp,
        }
        if unread:
            document["mcpUnread"] = unread
        headers.append(("content-type", "application/json"))
        return headers, json.dumps(document, default=str).encode()

    def _allow(self, scope: Scope, identity: Identity, answer: httpx.Headers) -> None:
        if not self.propagate:
            return
        kept = [(k, v) for k, v in scope.get("headers", ()) if k.decode("latin-1") not in self.propagate]
        for name in self.propagate:
            values = answer.get_list(name)
            if values:
                identity.headers[name] = ", ".join(values)
                kept += [(name.encode("latin-1"), v.encode("latin-1", "replace")) for v in values]
        scope["headers"] = kept
        headers_changed(scope)  # an earlier rate-limit step may have read (and cached) the client's headers


async def mcp_fields(scope: Scope, limit: int) -> tuple[dict[str, str] | None, str | None]:
    """The MCP method (and name/URI) of a JSON-RPC body, or why it was not read."""
    length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
    if length is not None and length.isdigit() and int(length) > limit:
        return None, "too-large"
    body = await request_body(scope, limit)
    if body is None:
        return None, "too-large"  # or the client is gone, in which case nobody reads the answer
    try:
        message = pydantic_core.from_json(body)  # the SDK's parser: both read duplicate keys alike
    except ValueError:
        return None, None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        return None, None
    method: str = message["method"]
    fields = {"method": method}
    params = message.get("params")
    key = _NAMED.get(method)
    if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
        fields["name"] = params[key]
    return fields, None


def _caller(identity: Identity) -> dict[str, Any]:
    caller: dict[str, Any] = {}
    if identity.jwt is not None and identity.jwt.get("sub") is not None:
        caller["jwt"] = {"sub": identity.jwt["sub"]}
    if identity.api_key is not None:
        caller["apiKey"] = {k: v for k, v in identity.api_key.items() if not k.startswith("_")}
    if identity.basic is not None:
        caller["basicAuth"] = {"username": identity.basic["username"]}
    return caller


def _encode(value: str) -> str:
    """A header-safe value: printable ASCII as is, anything else (and '%') percent-encoded UTF-8."""
    return quote(value, safe=_SAFE)


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


class Denial:
    """The service's refusal, passed on: its status, its (capped) body and a few of its headers."""

    def __init__(self, status: int, body: bytes, truncated: bool, answer: httpx.Headers) -> None:
        self.status = status
        self.body = body
        kind = answer.get("content-type") if not truncated else None
        self.headers = [(b"content-type", (kind or "text/plain; charset=utf-8").encode("latin-1", "replace"))]
        self.headers.append((b"content-length", b"%d" % len(body)))
        for name in _PASSED_ON_DENY:
            self.headers += [(name.encode(), v.encode("latin-1", "replace")) for v in answer.get_list(name)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})
