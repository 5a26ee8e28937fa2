"""`requestHeaderModifier` and `responseHeaderModifier`: add (append), set (replace) or remove headers.

The request's are changed before the route's endpoint sees it (after authentication, which reads the
headers as the client sent them); the response's as the answer starts, whoever answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config.policies import HeaderModifier
from gateway.policies.http import Identity, headers_changed

Headers = list[tuple[bytes, bytes]]


def modify(headers: Headers, cfg: HeaderModifier) -> Headers:
    drop = {name.lower().encode("latin-1") for name in (*cfg.remove, *cfg.set)}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in cfg.set.items()]
    out += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in cfg.add.items()]
    return out


class RequestHeadersStep:
    def __init__(self, cfg: HeaderModifier) -> None:
        self.cfg = cfg

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        scope["headers"] = modify(list(scope.get("headers", [])), self.cfg)
        headers_changed(scope)
        return None


class ResponseHeaders:
    """Wraps a route's app: every response it starts gets the modifiers, in order."""

    def __init__(self, app: ASGIApp, modifiers: Sequence[HeaderModifier]) -> None:
        self.app = app
        self.modifiers = list(modifiers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def modified(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for cfg in self.modifiers:
                    headers = modify(headers, cfg)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, modified)
