"""Plain HTTP backends: a route whose backend is `host:` (and no `a2a` policy) is reverse-proxied.

The same streaming proxy as A2A agents (protocols/a2a/proxy.py): bodies flow both ways as they come,
hop-by-hop headers stay on their hop, X-Forwarded-* are added, and neither the caller's Authorization nor
any header, cookie or query parameter authentication read a credential from is passed on (backendAuth
says what the backend gets instead). The path and query go to the backend as the client sent them,
unless urlRewrite changed the path (in the scope) or the Host to send (gateway/policies/rewrite.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.policies.backend_auth import request_auth
from gateway.policies.http import without_credentials
from gateway.policies.mcp_authn import public_base
from gateway.policies.rewrite import UPSTREAM_AUTHORITY, replace_authority
from protocols.a2a import proxy

if TYPE_CHECKING:
    from gateway.observability.exchange import Observability

logger = logging.getLogger("agentplex.http")


class HttpBackend:
    """The ASGI app of one plain HTTP route: every request goes to `url` + its own path and query."""

    delivery: proxy.Sending | None = None  # retries and requestTimeout (gateway/policies/retry.py)
    observe: Observability | None = None  # a trace span per proxied request, when tracing is on

    def __init__(self, name: str, url: str, *, timeout: float | None, auth: Any = None, tls: Any = None) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.auth = auth
        self.tls = tls
        self.client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HttpBackend]:
        async with proxy.new_client(self.tls if self.tls is not None else True) as client:
            self.client = client
            try:
                yield self
            finally:
                self.client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.client is None:
            return
        scope = without_credentials(scope)  # what authentication consumed stays here
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = self.url + raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        headers: dict[str, str] = {}
        state = scope.get("state")
        authority = state.get(UPSTREAM_AUTHORITY) if isinstance(state, dict) else None
        if authority is not None:
            headers["host"] = replace_authority(urlsplit(self.url).netloc, authority)
        if self.auth is not None:
            try:
                headers.update(await self.auth.headers(scope))
            except Exception as exc:  # the credential could not be had: this request fails, naming the backend
                await _error(scope, receive, send, 502, f"backend {self.name!r}: backendAuth failed: {exc}")
                return
        upstream = proxy.Upstream(self.name, url, headers, self.timeout, "backend", *request_auth(self.auth, scope))
        traced = self.observe.proxied(scope, self.name, url, send) if self.observe is not None else nullcontext(send)
        with traced as send:
            try:
                await proxy.forward(
                    self.client, upstream, scope, receive, send, public=public_base(scope), sending=self.delivery
                )
            except proxy.AgentUnavailable as exc:
                logger.warning("%s", exc.message)
                await _error(scope, receive, send, exc.status, exc.message)


async def _error(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
