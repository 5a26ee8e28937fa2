"""What the federation's handlers share about a call: the message being observed, the era a request is in,
typed messages as JSON-RPC dicts, and the questions a target may ask a client."""

from __future__ import annotations

import contextvars
from typing import Any

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from federation.observer import Message as Observed
from protocols.mcp.relay import Message

# The request being served, as the observer will be told of it; the guard checks fill in its item.
OBSERVED: contextvars.ContextVar[Observed | None] = contextvars.ContextVar("observed", default=None)

RESULT_TYPES: dict[str, type[Any]] = {
    "sampling/createMessage": types.CreateMessageResult,
    "elicitation/create": types.ElicitResult,
    "roots/list": types.ListRootsResult,
}


ASKED: dict[str, tuple[type[Any], Any, str]] = {  # a target's question: its type, its answer's, what it is
    "sampling/createMessage": (
        types.CreateMessageRequest,
        types.CreateMessageResult | types.CreateMessageResultWithTools,
        "sampling",
    ),
    "elicitation/create": (types.ElicitRequest, types.ElicitResult, "elicitation"),
    "roots/list": (types.ListRootsRequest, types.ListRootsResult, "roots"),
}


async def parked_answer(parked: Any, request: Any, result_type: Any, what: str) -> Any:
    """A parked call's question to its 2026-07-28 client, answered through InputRequiredResult and a retry."""
    return checked_answer(await parked.ask(request), result_type, what)


def checked_answer(answer: Any, result_type: Any, what: str) -> Any:
    if isinstance(answer, types.ErrorData | result_type):
        return answer
    return types.ErrorData(code=types.INVALID_PARAMS, message=f"the client answered {what} with the wrong kind")


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def wire(message: Any) -> Message:
    """A typed request or notification as a JSON-RPC dict (for the relay's downstream)."""
    return {"jsonrpc": "2.0", **message.model_dump(by_alias=True, mode="json", exclude_none=True)}


async def ask_client(ctx: ServerRequestContext[Any], request: Any) -> Any:
    """A server-to-client request on a handshake-era client's back-channel, tied to its request."""
    return await ctx.session.send_request(
        request, RESULT_TYPES[request.method], metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
    )


def scope_of(ctx: ServerRequestContext[Any] | None) -> Any:
    """The ASGI scope of the HTTP request that carried this message (None on stdio): what policy reads."""
    request = ctx.request if ctx is not None else None
    return getattr(request, "scope", None)


def is_modern(ctx: ServerRequestContext[Any]) -> bool:
    return is_modern_version(ctx.protocol_version)


def is_modern_version(version: str | None) -> bool:
    return version in MODERN_PROTOCOL_VERSIONS


RESERVED_META = "io.modelcontextprotocol/"  # the prefix of the 2026-07-28 envelope's `_meta` keys


def forwarded_meta(meta: Any) -> dict[str, Any]:
    """What of a client's `tools/call` `_meta` goes on to the target: its own keys, not the protocol's (the
    progress token and the 2026-07-28 envelope are the gateway's to set on its own request)."""
    if meta is None:
        return {}
    raw = meta if isinstance(meta, dict) else meta.model_dump(by_alias=True, exclude_none=True)
    return {k: v for k, v in raw.items() if k != "progressToken" and not k.startswith(RESERVED_META)}
