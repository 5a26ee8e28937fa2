"""Portable sessions: the Mcp-Session-Ids a streamable HTTP front end hands out are sealed, so any replica with
the key can resume a handshake-era session it never saw.

The SDK keeps its own random session ids; clients only ever see sealed ones (each maps to the SDK's id of the
session on this replica). A sealed id carries who may use it (a hash of the principal), the route and the set of
targets it was opened against, what the client said at initialize, and each streamable-HTTP upstream session
opened for it (federation/portable.py, the `SessionCarrier`, says which and takes them up again).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import anyio
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from protocols.mcp.session_seal import SessionSeal

__all__ = [
    "SESSION_HANDOFF",
    "CapturedAnswer",
    "PortableSessions",
    "SessionCarrier",
    "client_of",
    "discard",
    "in_process_body",
    "session_not_found",
    "with_session_id",
]

# ASGI scope key: what an opening session takes over (its upstream sessions), from the carrier to the server side.
SESSION_HANDOFF = "agentplex.session_handoff"
_FORMAT = 1


class SessionCarrier(Protocol):
    """The server side's part of a portable session: the upstream sessions that travel in its id."""

    def fingerprint(self) -> str:
        """The set of targets sessions are opened against: a sealed id made for another set is not resumed."""
        ...

    async def opening(self, scope: Any) -> Any:
        """Before a session opens: open what will travel in its id; the handoff goes in the scope."""
        ...

    def sealed(self, handoff: Any) -> list[Any]:
        """What of `handoff` travels (JSON-able)."""
        ...

    async def resuming(self, sealed: list[Any], scope: Any) -> Any | None:
        """A handoff rebuilt from what travelled; None if it cannot be taken up here (targets changed)."""
        ...

    async def dropped(self, handoff: Any) -> None:
        """The session did not open (or never took the handoff): close what `opening` opened."""
        ...


class PortableSessions:
    """Sealed ids for one route's sessions: minting them, opening them, and the map to the SDK's own ids."""

    def __init__(self, seal: SessionSeal, carrier: SessionCarrier, route: str) -> None:
        self.seal = seal
        self.carrier = carrier
        self.route = route
        self._inward: dict[str, str] = {}  # sealed id -> the SDK's id of the session here
        self._outward: dict[str, str] = {}  # and back

    def mint(self, internal: str, who: dict[str, Any] | None, client: dict[str, Any], handoff: Any) -> str:
        """The sealed id of a session the SDK opened here as `internal`."""
        state = {
            "f": _FORMAT,
            "p": principal_hash(who),
            "r": self.route,
            "g": self.carrier.fingerprint(),
            "c": client,
            "u": self.carrier.sealed(handoff) if handoff is not None else [],
        }
        external = self.seal.seal(state)
        self.remember(external, internal)
        return external

    def remember(self, external: str, internal: str) -> None:
        self._inward[external] = internal
        self._outward[internal] = external

    def internal(self, external: str) -> str | None:
        return self._inward.get(external)

    def external(self, internal: str) -> str | None:
        return self._outward.get(internal)

    def forget(self, internal: Any) -> None:
        """The SDK forgot the session: so does the map (the sealed id may still be resumed, here or elsewhere)."""
        external = self._outward.pop(internal, None)
        if external is not None:
            self._inward.pop(external, None)

    def opened(self, external: str, who: dict[str, Any] | None) -> dict[str, Any] | None:
        """What a sealed id says, if it opens with our keys and belongs to this caller, route and set of
        targets; None otherwise (the caller is told no more than for any unknown session)."""
        state = self.seal.open(external)
        if (
            state is None
            or state.get("f") != _FORMAT
            or state.get("p") != principal_hash(who)
            or state.get("r") != self.route
            or state.get("g") != self.carrier.fingerprint()
            or not isinstance(state.get("c"), dict)
            or not isinstance(state.get("u"), list)
        ):
            return None
        return state


def principal_hash(who: dict[str, Any] | None) -> str:
    """Who a session belongs to (streamable_http.principal: as the SDK tells them apart; None: anonymous)."""
    text = json.dumps(who, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def client_of(message: Any) -> dict[str, Any] | None:
    """What a resumed session needs of an `initialize` request: the version the SDK will settle on (as its
    `_negotiate_initialize` does), the client's capabilities and info. None if it is no initialize."""
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return None
    params = message.get("params")
    if not isinstance(params, dict):
        return None
    requested = params.get("protocolVersion")
    version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    capabilities = params.get("capabilities") if isinstance(params.get("capabilities"), dict) else {}
    info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
    return {"protocolVersion": version, "capabilities": capabilities, "clientInfo": info}


async def session_not_found(send: Any) -> None:
    """404 with the body the SDK answers an unknown session with."""
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message="Session not found"))
    data = body.model_dump_json(by_alias=True, exclude_unset=True).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def with_session_id(start: dict[str, Any], internal: str, external: str) -> dict[str, Any]:
    """A response start with the SDK's session id, where it names one, replaced by the sealed one."""
    inner, outer = internal.encode("latin-1"), external.encode("latin-1")
    headers = [(k, outer if k.lower() == b"mcp-session-id" and v == inner else v) for k, v in start["headers"]]
    return {**start, "headers": headers}


def in_process_body(message: dict[str, Any] | None) -> Any:
    """A `receive` for an in-process request: its JSON body (None: none), then nothing until the exchange is over."""
    data = json.dumps(message).encode() if message is not None else b""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


async def discard(message: dict[str, Any]) -> None:
    """The `send` of an in-process request whose answer nobody reads."""


class CapturedAnswer:
    """The `send` of an in-process request whose answer is judged, not read by a client (or replayed to one)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)

    def answered(self, request_id: str) -> bool:
        """Whether the body (JSON, or an event stream) holds a JSON-RPC result for `request_id`."""
        body = b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        lines = [line[5:] for line in body.splitlines() if line.startswith(b"data:")] or [body]
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("id") == request_id and "result" in message:
                return True
        return False

    async def replay(self, send: Any) -> None:
        for message in self.messages:
            await send(message)
