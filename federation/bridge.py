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
from types import SimpleNamespace
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

    def __init__(self, scope: anyio.CancelScope | None = None) -> None:
        self.id = PREFIX + secrets.token_urlsafe(16)
        self._outcomes, self._outcomes_in = _channel()
        self._answers: dict[str, Any] = {}
        self.collected = anyio.Event()
        # The upstream call's: cancelled when the client gives up on it.
        self.scope = scope if scope is not None else anyio.CancelScope()

    async def ask(self, request: Any) -> Any:
        """From the upstream's callback: hand the question to the client, wait for its retry."""
        key = self.question()
        await self._outcomes.send(("ask", key, request))
        return await self.answer_to(key)

    def question(self) -> str:
        """A new open question's key (what the client's `inputResponses` answers it under)."""
        key = f"q{len(self._answers) + 1}"
        self._answers[key] = anyio.Event()
        return key

    async def answer_to(self, key: str) -> Any:
        """The client's answer to question `key`, once a retry brings it (an error if none comes in time)."""
        answered = self._answers[key]
        with anyio.move_on_after(ANSWER_WAIT):
            await answered.wait()
        answer = self._answers.get(key)
        if answer is answered:
            return types.ErrorData(code=types.INTERNAL_ERROR, message="the client did not answer in time")
        return answer

    async def finish(self, result: Any = None, error: MCPError | None = None) -> None:
        """The call's end, for the client's next retry to collect."""
        await self._outcomes.send(("error", None, error) if error is not None else ("done", None, result))

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
            result = await call()
        except MCPError as exc:
            await self.finish(error=exc)
            return
        await self.finish(result)


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

    def adopt(self, scope: anyio.CancelScope) -> Parked:
        """A call already running (a relayed one, under `scope`) parked from now on; `release` it when it ends."""
        parked = Parked(scope)
        self._calls[parked.id] = parked
        return parked

    async def release(self, parked: Parked) -> None:
        """Forget an adopted call once its outcome is collected (or nobody came for it in time)."""
        try:
            with anyio.move_on_after(ANSWER_WAIT):
                await parked.collected.wait()
        finally:
            self._calls.pop(parked.id, None)


def _channel() -> tuple[Any, Any]:
    return anyio.create_memory_object_stream[tuple[str, Any, Any]](8)


async def sealed(boundary: RequestStateBoundary, method: str, params: dict[str, Any], scope: Any, result: Any) -> Any:
    """`result` with its `request_state` sealed by `boundary`, as the server middleware seals a handler's,
    for an answer written outside the SDK's pipeline (a relayed call's)."""
    ctx = SimpleNamespace(method=method, params=params, request=SimpleNamespace(scope=scope))

    async def handler(_: Any) -> Any:
        return result

    return await boundary(ctx, handler)  # type: ignore[arg-type]
