"""Era bridge for server-to-client requests: a handshake-era upstream asks mid-call, a 2026-07-28 client
can only answer through `InputRequiredResult` and a retry.

The upstream call is parked: it keeps running in the background while the gateway answers the client
with the question and its own `request_state`; the client's retry carries the answer back to the
waiting upstream request. The SDK has no helper for this direction (sdk-notes §1.5).

Every `request_state` a client gets (a parked call's, or a 2026-07-28 target's passed through) is sealed
by the SDK's `RequestStateBoundary`, bound to the request and its caller: the gateway is one client to
its targets, so only it can tell whose state is whose.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity, compact_json
from mcp.shared.exceptions import MCPError

from protocols.mcp.streamable_http import principal

PREFIX = "agentplex-park-"
ANSWER_WAIT = 300.0  # seconds a parked call waits for the client's retry before giving up


def state_boundary(audience: str) -> RequestStateBoundary:
    """The server middleware that seals `request_state` under a key of this process (parked calls live
    here too), so another caller, or a forged or expired state, gets -32602 and nothing else."""
    security = RequestStateSecurity.ephemeral()
    security.bind_principal = _caller
    return RequestStateBoundary(security, default_audience=audience)


def _caller(ctx: ServerRequestContext[Any]) -> str | None:
    who = principal(getattr(ctx.request, "scope", None))
    return compact_json(who, sort_keys=True) if who is not None else None


class Parked:
    """One upstream call running on behalf of a modern client, with at most one open question."""

    def __init__(self) -> None:
        self.id = PREFIX + secrets.token_urlsafe(16)
        self._outcomes, self._outcomes_in = _channel()
        self._answers: dict[str, Any] = {}
        self.collected = anyio.Event()
        self.scope = anyio.CancelScope()  # the upstream call's: cancelled when the client gives up on it

    async def ask(self, request: Any) -> Any:
        """From the upstream's callback: hand the question to the client, wait for its retry."""
        key = f"q{len(self._answers) + 1}"
        answered = anyio.Event()
        self._answers[key] = answered
        await self._outcomes.send(("ask", key, request))
        with anyio.move_on_after(ANSWER_WAIT):
            await answered.wait()
        answer = self._answers.get(key)
        if answer is answered:
            return types.ErrorData(code=types.INTERNAL_ERROR, message="the client did not answer in time")
        return answer

    def answer(self, responses: dict[str, Any]) -> None:
        for key, response in responses.items():
            waiting = self._answers.get(key)
            if isinstance(waiting, anyio.Event):
                self._answers[key] = response
                waiting.set()

    async def next_outcome(self) -> Any:
        """What to tell the client now: the call's result, or an `InputRequiredResult`.

        A client that gives up waiting (it cancelled its request, or went away) gives up the call: the
        upstream call is cancelled too, which tells the target (notifications/cancelled), as when the
        call is not parked."""
        try:
            kind, key, value = await self._outcomes_in.receive()
        except anyio.get_cancelled_exc_class():
            self.scope.cancel()
            raise
        if kind == "ask":
            return types.InputRequiredResult(input_requests={key: value}, request_state=self.id)
        self.collected.set()
        if kind == "error":
            raise value
        return value

    async def run(self, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            outcome: tuple[str, Any, Any] = ("done", None, await call())
        except MCPError as exc:
            outcome = ("error", None, exc)
        await self._outcomes.send(outcome)


class ParkedCalls:
    """Parked calls by `request_state`, each removed once its result is collected or it expires."""

    def __init__(self) -> None:
        self._calls: dict[str, Parked] = {}

    def get(self, state: str | None) -> Parked | None:
        return self._calls.get(state) if state else None

    async def start(self, tg: anyio.abc.TaskGroup, call: Callable[[Parked], Awaitable[Any]]) -> Parked:
        parked = Parked()
        self._calls[parked.id] = parked

        async def run() -> None:
            try:
                with parked.scope, anyio.move_on_after(ANSWER_WAIT * 4):  # nobody coming back: it ends eventually
                    await parked.run(lambda: call(parked))
                    await parked.collected.wait()
            finally:
                self._calls.pop(parked.id, None)

        tg.start_soon(run)
        return parked


def _channel() -> tuple[Any, Any]:
    return anyio.create_memory_object_stream[tuple[str, Any, Any]](8)
