"""The `requestMirror` policy: a copy of each request (or of `percentage` of them) to another backend.

Fire and forget: the copy leaves once the caller's body has passed through to the real backend (the
body is teed as it streams, never held back), and its answer is read by no one. A body over 1 MiB is
not mirrored; at most 64 copies are in flight per route (more are dropped, so a dead or slow mirror
cannot pile up work) and each is abandoned after 30 s or at shutdown. The copy has the caller's
method, path, query and headers, minus hop-by-hop ones, Authorization and whatever authentication consumed
(as the real request).

Plain HTTP routes, and A2A routes with one agent: there the copy is taken after the route's per-method
and per-skill checks (a denied call is not copied) and goes to the path the agent sees. Not on MCP
routes: each message belongs to a session the mirror never opened.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import ConfigError
from gateway.config.policies import Policies
from gateway.policies.http import without_credentials
from gateway.policies.mcp_authn import public_base
from protocols import redaction
from protocols.a2a import proxy

logger = logging.getLogger("agentplex.mirror")

MAX_MIRRORED_BODY = 1024 * 1024
MAX_IN_FLIGHT = 64
MIRROR_TIMEOUT = 30.0


class Mirror:
    """One route's mirror: its own client and the task group its copies run in (see `running()`)."""

    def __init__(self, route: str, url: str, percentage: float) -> None:
        self.route = route
        self.url = url.rstrip("/")
        self.percentage = percentage
        self.in_flight = 0
        self.dropped = 0  # copies not sent: too many in flight
        self._client: httpx.AsyncClient | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Mirror]:
        """Copies run while this is open; the ones still running at exit are cancelled."""
        async with proxy.new_client() as client, anyio.create_task_group() as tg:
            self._client, self._tg = client, tg
            try:
                yield self
            finally:
                self._client = self._tg = None
                tg.cancel_scope.cancel()

    def tee(self, scope: Scope, receive: Receive, *, path: str | None = None, body: bytes | None = None) -> Receive:
        """The `receive` to give the real backend: the copy is sent when the body has gone by (at once
        without a body, or with `body` when the caller already read it), unless this request is not in
        the mirrored percentage. `path`: the path the copy goes to (default: the request's)."""
        if self._tg is None or random.random() >= self.percentage:
            return receive
        if body is not None or not proxy.has_body(scope):
            if len(body or b"") <= MAX_MIRRORED_BODY:
                self._launch(scope, body or b"", path)
            return receive
        body = bytearray()
        copying = True

        async def teeing() -> Message:
            nonlocal copying
            message = await receive()
            if copying and message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if len(body) > MAX_MIRRORED_BODY:
                    copying = False
                    body.clear()
                elif not message.get("more_body", False):
                    copying = False
                    self._launch(scope, bytes(body), path)
            elif message["type"] == "http.disconnect":
                copying = False  # a request the caller abandoned is not mirrored
            return message

        return teeing

    def _launch(self, scope: Scope, body: bytes, path: str | None = None) -> None:
        if self._tg is None:
            return
        if self.in_flight >= MAX_IN_FLIGHT:
            self.dropped += 1
            logger.debug("route %s: mirror %s busy, copy dropped", self.route, redaction.url(self.url))
            return
        if path is None:
            path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"")
        url = self.url + path + (f"?{query.decode('latin-1')}" if query else "")
        headers = [(k, v) for k, v in proxy.request_headers(scope, {}, public_base(scope)) if k != b"content-length"]
        request = httpx.Request(scope["method"], url, headers=headers, content=body or None)
        self.in_flight += 1
        self._tg.start_soon(self._send, request)

    async def _send(self, request: httpx.Request) -> None:
        client = self._client
        try:
            if client is None:
                return
            with anyio.move_on_after(MIRROR_TIMEOUT):
                response = await client.send(request, stream=True)
                await response.aclose()  # nobody reads the mirror's answer
        except httpx.HTTPError as exc:
            logger.debug(
                "route %s: mirror %s failed: %s", self.route, redaction.url(self.url), redaction.text(str(exc))
            )
        finally:
            self.in_flight -= 1


class Mirrored:
    """A route's app behind its mirror: the copy is taken whichever of the route's backends serves."""

    def __init__(self, app: ASGIApp, mirror: Mirror) -> None:
        self.app = app
        self.mirror = mirror

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            receive = self.mirror.tee(without_credentials(scope), receive)
        await self.app(scope, receive, send)


def build(route: str, levels: Sequence[tuple[str, Policies]]) -> Mirror | None:
    """The route's mirror: the innermost level's `requestMirror` wins."""
    config = next((p.requestMirror for _, p in reversed(levels) if p.requestMirror is not None), None)
    if config is None or config.percentage == 0:
        return None
    return Mirror(route, config.backend.host, config.percentage)


_WHY_NOT = {
    "MCP": "an MCP message belongs to a session the mirror never opened",
    "the a2a block's": "it serves many agents; mirror a route with one agent",
}


def refuse(levels: Sequence[tuple[str, Policies]], kind: str) -> None:
    """requestMirror is for plain HTTP and one-agent A2A routes; say so at load rather than ignore it on others."""
    for where, policies in levels:
        if policies.requestMirror is not None:
            raise ConfigError(
                f"{where}.requestMirror: applies to plain HTTP routes and one-agent A2A routes, not to {kind}"
                f" routes ({_WHY_NOT[kind]})"
            )
