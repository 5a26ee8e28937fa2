"""`maxResponseBodySize`: how much of one upstream message the gateway will hold, enforced while reading.

HTTP targets: `LimitedResponses`, a transport under the SDK's client and the raw relay. stdio targets:
`limited_stdio_client`, the SDK's `stdio_client` with each line of the server's stdout held the same way
(and its process given its whole environment: `TargetSpec.environment`).

A JSON body or one SSE event past the limit is never held whole: reading stops there, and the
request it answered gets a JSON-RPC error naming the target and the limit instead (the SDK and the
raw relay take it like any other answer). On an SSE stream the oversized event is first ended under
an event type nobody dispatches, so no parser sees half a message (an SSE event may therefore use the
limit but for those few bytes). Several small events read at once (64 KiB) are not told apart.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.abc
import httpx2
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client

from protocols import internals
from protocols.mcp.errors import UPSTREAM_UNAVAILABLE

logger = logging.getLogger("agentplex.upstream")

DEFAULT_MAX_RESPONSE_SIZE = 16 * 1024 * 1024
SSE_CLIENT_EVENT_LIMIT = 1024 * 1024  # what the SDK's legacy SSE client takes (it fails past it)
# Ends an event in progress (whatever part of it was passed on) as one of a type MCP does not dispatch.
_DISCARD = b"\nevent: agentplex-oversized\n\n"


def too_large(target: str, limit: int, request_id: Any) -> dict[str, Any]:
    """The JSON-RPC error that stands in for an answer past the limit."""
    message = f"target '{target}' answered with more than {describe(limit)} (maxResponseBodySize); answer dropped"
    error = {"code": UPSTREAM_UNAVAILABLE, "message": message, "data": {"target": target, "maxResponseBodySize": limit}}
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def describe(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


class LimitedResponses(httpx2.AsyncBaseTransport):
    """Holds each JSON body and SSE event of a target's responses to `limit` bytes."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, target: str, limit: int) -> None:
        self.inner = inner
        self.target = target
        self.limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        # Bytes on the wire are what is counted: a compressed body could inflate past any limit.
        request.headers["accept-encoding"] = "identity"
        response = await self.inner.handle_async_request(request)
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            del response.headers["content-encoding"]  # compressed anyway: left undecoded, so it fails to parse
        kind = response.headers.get("content-type", "").lower()
        if kind.startswith("application/json"):
            request_id = _request_id(request)
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > self.limit:
                await response.aclose()
                self._warn(request)
                return httpx2.Response(502, json=too_large(self.target, self.limit, request_id), request=request)
            response.stream = _WholeJson(response.stream, self, request)  # type: ignore[arg-type]
        elif kind.startswith("text/event-stream"):
            response.stream = _LimitedEvents(response.stream, self, request)  # type: ignore[arg-type]
        return response

    def _warn(self, request: httpx2.Request) -> None:
        logger.warning(
            "target %s: a response to %s %s passed maxResponseBodySize (%s); dropped",
            self.target,
            request.method,
            request.url,
            describe(self.limit),
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _WholeJson(httpx2.AsyncByteStream):
    """The body read whole (everyone reads JSON whole anyway), or the error in its place."""

    def __init__(self, inner: Any, limits: LimitedResponses, request: httpx2.Request) -> None:
        self.inner = inner
        self.limits = limits
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.inner:
            size += len(chunk)
            if size > self.limits.limit:
                chunks.clear()
                self.limits._warn(self.request)
                await self.inner.aclose()
                limits = self.limits
                yield json.dumps(too_large(limits.target, limits.limit, _request_id(self.request))).encode()
                return
            chunks.append(chunk)
        if chunks:
            yield b"".join(chunks)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _LimitedEvents(httpx2.AsyncByteStream):
    """Passes events on as they arrive, while each is within the limit.

    An oversized event answering a POST ends the stream with the error for that POST's request; on
    the GET stream (nothing to answer) the event is skipped and the stream goes on.
    """

    def __init__(self, inner: Any, limits: LimitedResponses, request: httpx2.Request) -> None:
        self.inner = inner
        self.limits = limits
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = self.limits.limit - len(_DISCARD)  # room to end an oversized event
        pending = 0  # bytes of the event in progress
        head = b""  # its first bytes (where a response's id is)
        tail = b""  # the end of the previous chunk: an event boundary may straddle two chunks
        skipping = False  # the rest of an oversized event is still arriving
        async for chunk in self.inner:
            if skipping:
                window = tail + chunk
                start = _boundary_end(window, last=False)
                if start < 0:
                    tail = window[-3:]
                    continue
                skipping, chunk, tail, pending, head = False, window[start:], b"", 0, b""
            window = tail + chunk
            end = _boundary_end(window, last=True)
            pending = len(window) - end if end >= 0 else pending + len(chunk)
            head = window[end:][:_HEAD] if end >= 0 else head + chunk[: _HEAD - len(head)]
            tail = window[-3:]
            if pending <= limit:
                if chunk:
                    yield chunk
                continue
            self.limits._warn(self.request)
            whole = max(0, end - (len(window) - len(chunk))) if end >= 0 else 0  # this chunk's complete events
            yield chunk[:whole] + _DISCARD
            if self.request.method == "POST" and (request_id := _request_id(self.request)) is not None:
                answer = json.dumps(too_large(self.limits.target, self.limits.limit, request_id)).encode()
                yield b"event: message\ndata: " + answer + b"\n\n"
                await self.inner.aclose()
                return
            # The GET stream (legacy SSE answers every request there): answer the response's id if it shows.
            if (response_id := answered_id(head.partition(b"data:")[2])) is not None:
                answer = json.dumps(too_large(self.limits.target, self.limits.limit, response_id)).encode()
                yield b"event: message\ndata: " + answer + b"\n\n"
            skipping, pending = True, 0

    async def aclose(self) -> None:
        await self.inner.aclose()


def _boundary_end(data: bytes, *, last: bool) -> int:
    """Where the bytes after the first (or last) blank line, an event's end, start; -1 if there is none."""
    find = data.rfind if last else data.find
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (i := find(sep)) >= 0]
    if not ends:
        return -1
    return max(ends) if last else min(ends)


_HEAD = 256
# The start of a JSON-RPC response as the SDKs write it: `{"jsonrpc":"2.0","id":7,"result":...`.
_RESPONSE_START = re.compile(rb'\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")\s*,\s*"(?:result|error)"')


def answered_id(start: bytes) -> Any:
    """The id of the response that `start` begins, if it begins one the usual way (else None)."""
    match = _RESPONSE_START.match(start)
    return json.loads(match.group(1)) if match else None


def _request_id(request: httpx2.Request) -> Any:
    with contextlib.suppress(ValueError, httpx2.RequestNotRead):
        message = json.loads(request.content)
        return message.get("id") if isinstance(message, dict) else None
    return None


# -- stdio -------------------------------------------------------------------------------------------

_STDIO_SPAWN: contextvars.ContextVar[tuple[str, int, dict[str, str], Any] | None] = contextvars.ContextVar(
    "stdio_spawn", default=None
)


@contextlib.asynccontextmanager
async def limited_stdio_client(
    params: StdioServerParameters, target: str, limit: int, environment: dict[str, str], tap: Any = None
) -> AsyncIterator[Any]:
    """`stdio_client(params)` whose server's stdout lines are held to `limit` bytes (see `LimitedLines`),
    started with exactly `environment` (the SDK would put its default subset under any `params.env`).
    `tap` (a `relay.StdioWire`) is given the process, and first pick of each line of its stdout."""
    token = _STDIO_SPAWN.set((target, limit, environment, tap))
    try:
        async with stdio_client(params) as streams:
            _STDIO_SPAWN.reset(token)
            token = None
            yield streams
    finally:
        if token is not None:
            _STDIO_SPAWN.reset(token)


class LimitedLines(anyio.abc.ByteReceiveStream):
    """A server's stdout passed on a whole line at a time, each line held to `limit` bytes.

    An oversized line is dropped as it arrives; if it begins like a response, its request is answered
    with the error instead. Whole lines also spare the SDK's reader, which re-joins its text per read.
    """

    def __init__(self, inner: anyio.abc.ByteReceiveStream, target: str, limit: int, tap: Any = None) -> None:
        self.inner = inner
        self.target = target
        self.limit = limit
        self.tap = tap  # takes the lines that answer relayed requests (`relay.StdioWire`)
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False  # the rest of an oversized line is still arriving

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            try:
                chunk = await self.inner.receive(max_bytes)
            except BaseException:
                if self.tap is not None:
                    self.tap.close()  # nothing more will answer what was relayed
                raise
            lines = self._feed(chunk)
            if lines:
                return lines

    def _feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        while chunk:
            newline = chunk.find(b"\n")
            piece, chunk = (chunk, b"") if newline < 0 else (chunk[: newline + 1], chunk[newline + 1 :])
            if self._skipping:
                self._skipping = newline < 0
                continue
            self._parts.append(piece)
            self._size += len(piece)
            if self._size > self.limit:
                logger.warning(
                    "target %s: a line of its stdout passed maxResponseBodySize (%s); dropped",
                    self.target,
                    describe(self.limit),
                )
                if (response_id := answered_id(b"".join(self._parts)[:_HEAD])) is not None:
                    line = json.dumps(too_large(self.target, self.limit, response_id)).encode() + b"\n"
                    if self.tap is None or not self.tap.take(line):
                        out.append(line)
                self._parts, self._size, self._skipping = [], 0, newline < 0
            elif newline >= 0:
                line = b"".join(self._parts)
                if self.tap is None or not self.tap.take(line):
                    out.append(line)
                self._parts, self._size = [], 0
        return b"".join(out)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _limited(spawn: Callable[..., Any]) -> Callable[..., Any]:
    """The SDK spawns the server inside `stdio_client` and reads its stdout there: this is the one place
    to put `LimitedLines` under that reader, and to give the process its environment whole."""

    async def spawn_limited(*args: Any, **kwargs: Any) -> Any:
        ours = _STDIO_SPAWN.get()
        if ours is not None:
            kwargs["env"] = ours[2]
        process = await spawn(*args, **kwargs)
        stdout = internals.process_stdout(process)
        if ours is not None and stdout is not None:
            internals.set_process_stdout(process, LimitedLines(stdout, ours[0], ours[1], ours[3]))
        if ours is not None and ours[3] is not None:
            ours[3].attach(process)
        return process

    return spawn_limited


internals.wrap_stdio_spawn(_limited)
