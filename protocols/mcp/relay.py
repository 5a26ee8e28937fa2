"""A raw relay for `tools/call` between streamable-HTTP peers: the hot path without the SDK's per-message work.

Measured in bench/: the SDK's server transport, dispatcher and client transport cost most of the
gateway's CPU per call. When both sides are plain — a known handshake-era downstream session and a
streamable-HTTP upstream session the SDK already opened — the call is relayed as JSON-RPC dicts:
parsed once, its name and id rewritten, and written once. Whatever arrives before the upstream's
response (progress, log messages, sampling/elicitation/roots requests) is relayed too. Anything
less plain goes through the SDK, which stays the reference for protocol correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pydantic_core
from anyio.abc import TaskGroup
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp_types import INTERNAL_ERROR

from protocols import redaction
from protocols.mcp.errors import UpstreamError

Message = dict[str, Any]
OnMessage = Callable[[Message], Awaitable[Message | None]]

ACCEPT = "application/json, text/event-stream"


def relay_id() -> str:
    """Ids for requests the relay makes: strings, so they never meet the SDK's integer ids, and
    unguessable, so nobody can answer a request they were not sent."""
    return "agentplex-" + secrets.token_urlsafe(16)


class SessionGone(Exception):
    """The upstream no longer knows the session (restarted, expired): reconnect through the SDK."""


async def call(
    target: str,
    url: httpx2.URL,
    client: httpx2.AsyncClient,
    session_id: str | None,
    protocol_version: str,
    request: Message,
    on_message: OnMessage,
    stamped: dict[str, str] | None = None,
) -> Message:
    """POST one request on an upstream session and return its JSON-RPC response (`stamped`: the headers
    the SDK's client puts on a 2026-07-28 request, which has no session).

    Messages before the response go to `on_message`, notifications in order; each server-to-client
    request in a task of its own (a caller may take its time to answer one), whose answer is POSTed
    back on the same session. The client's transport reads the rest of the stream (its closing chunk)
    in the background after the response is closed, so the caller has its answer at once.
    """
    headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": protocol_version}
    if session_id:
        headers["mcp-session-id"] = session_id
    if stamped:
        headers.update(stamped)
    post = client.build_request("POST", url, content=pydantic_core.to_json(request), headers=headers)
    try:
        response = await client.send(post, stream=True)
        try:
            return await _answer(target, request, response, _Asker(client, url, headers, on_message))
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(httpx2.HTTPError):
                await response.aclose()
    except httpx2.HTTPError as exc:
        raise UpstreamError(target, f"tools/call failed: {type(exc).__name__}: {redaction.text(str(exc))}") from None
    except ValueError as exc:
        raise UpstreamError(target, f"sent malformed JSON: {exc}") from None


async def _answer(target: str, request: Message, response: httpx2.Response, asker: _Asker) -> Message:
    kind = response.headers.get("content-type", "")
    if response.status_code == 404 and "mcp-session-id" in asker.headers:
        raise SessionGone(f"target '{target}' forgot session {asker.headers['mcp-session-id']}")
    if kind.startswith("application/json"):
        message = pydantic_core.from_json(await response.aread())
        if isinstance(message, dict) and ("result" in message or "error" in message):
            if message.get("id") != request["id"]:
                raise UpstreamError(target, f"answered tools/call with the response to {message.get('id')!r}")
            return message
        raise UpstreamError(target, f"answered tools/call with HTTP {response.status_code} and no JSON-RPC response")
    if response.status_code >= 400:
        raise UpstreamError(target, f"answered tools/call with HTTP {response.status_code}")
    if not kind.startswith("text/event-stream"):
        raise UpstreamError(target, f"answered tools/call with unexpected content type {kind!r}")
    answer: Message | Exception | None = None  # None: the stream ended without one (an error made only then)
    async with anyio.create_task_group() as asks:
        try:
            async for message in sse_messages(response):
                if message.get("id") == request["id"] and ("result" in message or "error" in message):
                    answer = message
                    break
                if "method" in message and "id" in message:
                    await asker.slots.acquire()  # past MAX_ASKS unanswered, read on once one is answered
                    asks.start_soon(asker.ask, message)
                else:
                    await asker.on_message(message)
        except Exception as exc:  # raised past the task group, it would come out as an ExceptionGroup
            answer = exc
        if asker.asking:
            asks.cancel_scope.cancel()  # asks still open when the call ends are moot
    if answer is None:
        raise UpstreamError(target, "ended the tools/call stream without a response")
    if isinstance(answer, Exception):
        raise answer
    return answer


class _Asker:
    """Relays a call's server-to-client requests, each in its own task, and POSTs the answers back."""

    MAX_ASKS = 32

    def __init__(self, client: httpx2.AsyncClient, url: httpx2.URL, headers: dict[str, str], on_message: OnMessage) -> None:
        self.client = client
        self.url = url
        self.headers = headers
        self.on_message = on_message
        self.slots = anyio.Semaphore(self.MAX_ASKS)

    @property
    def asking(self) -> bool:
        """Whether an ask is still open (a cancel scope's `cancel` formats its task's repr: only when it must)."""
        return self.slots.value < self.MAX_ASKS

    async def ask(self, message: Message) -> None:
        try:
            try:
                reply = await self.on_message(message)
            except Exception as exc:  # the caller went away, say: the upstream still gets an answer
                error = {"code": INTERNAL_ERROR, "message": f"no answer from the client: {type(exc).__name__}"}
                reply = {"jsonrpc": "2.0", "id": message["id"], "error": error}
            if reply is not None:
                with contextlib.suppress(httpx2.HTTPError):
                    await _post_back(self.client, self.url, self.headers, reply)
        finally:
            self.slots.release()


async def cancel(client: httpx2.AsyncClient, url: httpx2.URL, session_id: str | None, version: str, request_id: str) -> None:
    """Tell the upstream we gave up on a request (best effort, bounded)."""
    headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": version}
    if session_id:
        headers["mcp-session-id"] = session_id
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
    with anyio.move_on_after(2, shield=True), contextlib.suppress(httpx2.HTTPError):
        await _post_back(client, url, headers, note)


async def _post_back(client: httpx2.AsyncClient, url: httpx2.URL, headers: dict[str, str], message: Message) -> None:
    response = await client.post(url, content=pydantic_core.to_json(message), headers=headers)
    await response.aclose()


async def sse_messages(response: httpx2.Response) -> AsyncIterator[Message]:
    """JSON-RPC messages from an SSE body (`event: message`, one JSON object per event).

    Parsed from bytes: MCP's events are small and UTF-8 JSON, so text decoding and line iteration
    (httpx's `aiter_lines`) would cost more than the parse itself.
    """
    buffer = bytearray()  # grown in place and searched from where the last search ended: a large event costs O(n)
    async for chunk in response.aiter_bytes():
        start = max(0, len(buffer) - 1)
        buffer += chunk.replace(b"\r\n", b"\n")
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = bytes(buffer[:end])
            del buffer[: end + 2]
            start = 0
            message = _event_message(event)
            if message is not None:
                yield message


def _event_message(event: bytes) -> Message | None:
    data: list[bytes] = []
    kind = b"message"
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            kind = line[6:].strip()
    payload = b"\n".join(data)
    if not payload or kind != b"message":  # an event with no data (a resumption primer) is not dispatched
        return None
    parsed = pydantic_core.from_json(payload)
    return parsed if isinstance(parsed, dict) else None


class Downstream:
    """The downstream half of a relayed call: one POST's response, JSON or SSE as events require.

    The response starts as soon as there is something to send; if the first thing is the final
    response, it is plain JSON (cheapest for both sides), otherwise an SSE stream.
    """

    def __init__(self, send: Any, session_id: str, pending: dict[tuple[str, str], Any], scope: Any = None) -> None:
        self._send = send
        self.session_id = session_id
        self.scope = scope  # the ASGI scope of the POST (what policy reads about the caller)
        self._pending = pending  # (session id, request id) -> memory stream sender, shared with the endpoint
        self._streaming = False

    async def notify(self, message: Message) -> None:
        await self._event(message)

    async def request(self, message: Message) -> Message:
        """Send a server-to-client request down and wait for the client's answer (POSTed separately)."""
        upstream_id = message.get("id")
        key = (self.session_id, relay_id())  # only this session (and so its principal) may answer
        sender, receiver = anyio.create_memory_object_stream[Message](1)
        self._pending[key] = sender
        try:
            await self._event({**message, "id": key[1]})
            async with receiver:
                answer = await receiver.receive()
        finally:
            self._pending.pop(key, None)
            sender.close()
        return {**answer, "id": upstream_id}

    async def finish(self, message: Message) -> None:
        if self._streaming:
            await self._event(message)
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = pydantic_core.to_json(message)
        await self._start(200, b"application/json", len(body))
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def abandon(self) -> None:
        """End the HTTP exchange of a call the client cancelled: no JSON-RPC response is due."""
        if self._streaming:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await self._start(202, b"application/json", 0)
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _event(self, message: Message) -> None:
        if not self._streaming:
            self._streaming = True
            await self._start(200, b"text/event-stream", None)
        chunk = b"event: message\ndata: " + pydantic_core.to_json(message) + b"\n\n"
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _start(self, status: int, content_type: bytes, length: int | None) -> None:
        headers = [(b"content-type", content_type), (b"mcp-session-id", self.session_id.encode())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        else:
            headers.append((b"cache-control", b"no-cache, no-transform"))
        await self._send({"type": "http.response.start", "status": status, "headers": headers})


class ModernDownstream:
    """The downstream half of a relayed 2026-07-28 call, written as the SDK's 2026-07-28 entry writes it.

    Plain JSON (an error with the status the SDK's table gives its code) unless something is sent
    before the response or `PING` seconds pass; then an SSE stream that pings while silent. Log
    messages go down only at the levels the request opted in to. The client cancels by going away.
    Once `detach`ed (the response was an `InputRequiredResult`), nothing more goes down this POST.

    The watcher (disconnects, pings) starts only once the call has lasted `WATCH_AFTER` seconds: most
    calls end sooner, and a task started and cancelled on every call cost about 5% of the relay's CPU (bench/).
    """

    PING = 15.0
    WATCH_AFTER = 0.05

    def __init__(self, send: Any, receive: Any, scope: Any, request: Message, log_levels: frozenset[str]) -> None:
        self._send = send
        self._receive = receive
        self.scope = scope  # the ASGI scope of the POST (what policy reads about the caller)
        self.request = request
        self.log_levels = log_levels
        self.call = anyio.CancelScope()  # the relayed call's: the client going away cancels it
        self.parked: Any = None  # a Parked once detached (federation/bridge.py)
        self._watching: anyio.CancelScope | None = None  # the watcher's, once it was started
        self._watch_timer: asyncio.TimerHandle | None = None
        self._lock = anyio.Lock(fast_acquire=True)  # uncontended but for a ping or a notification: no yield
        self._streaming = False
        self._done = False

    def start_watching(self, tasks: TaskGroup) -> None:
        """Start the watcher in `tasks` once the call has lasted `WATCH_AFTER` seconds (the front end runs on
        asyncio, uvicorn's loop; anyio has no timer callbacks)."""
        loop = asyncio.get_running_loop()
        self._watch_timer = loop.call_later(self.WATCH_AFTER, self._start_watch, tasks)

    def _start_watch(self, tasks: TaskGroup) -> None:
        self._watching = anyio.CancelScope()
        tasks.start_soon(self._watch, self._watching)

    async def _watch(self, scope: anyio.CancelScope) -> None:
        """While the response is open: a disconnect cancels the call, silence gets a ping (the first
        `PING` seconds after the call started)."""
        wait = self.PING - self.WATCH_AFTER
        with scope:
            for _ in range(1_000_000):  # bounded: a ping every PING seconds for years
                with anyio.move_on_after(wait):
                    if (await self._receive())["type"] == "http.disconnect":
                        self.call.cancel()
                        return
                    continue
                wait = self.PING
                async with self._lock:
                    if self._done:
                        return
                    await self._start_stream()
                    await self._send({"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True})

    def stop_watching(self) -> None:
        """Stop the watcher, or keep it from starting (a cancel scope's `cancel` formats its task's repr:
        not for nothing on every call)."""
        if self._watch_timer is not None:
            self._watch_timer.cancel()  # a no-op once it fired
        if self._watching is not None:
            self._watching.cancel()

    async def notify(self, message: Message) -> None:
        if message.get("method") == "notifications/message":
            params = message.get("params")
            if not isinstance(params, dict) or params.get("level") not in self.log_levels:
                return
        async with self._lock:
            if self._done:
                return
            await self._start_stream()
            await self._send({"type": "http.response.body", "body": _modern_event(message), "more_body": True})

    async def finish(self, message: Message) -> None:
        """Send the JSON-RPC response and end the exchange."""
        async with self._lock:
            if self._done:
                return
            self._done = True
            self.stop_watching()
            if self._streaming:
                await self._send({"type": "http.response.body", "body": _modern_event(message), "more_body": False})
                return
            error = message.get("error")
            status = ERROR_CODE_HTTP_STATUS.get(error.get("code"), 200) if isinstance(error, dict) else 200
            body = pydantic_core.to_json(message)
            headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
            await self._send({"type": "http.response.start", "status": status, "headers": headers})
            await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def detach(self, message: Message, parked: Any) -> None:
        """Answer with `message` (an InputRequiredResult) while the call goes on, parked."""
        self.parked = parked
        await self.finish(message)

    async def _start_stream(self) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]


def _modern_event(message: Message) -> bytes:
    return b"event: message\r\ndata: " + pydantic_core.to_json(message) + b"\r\n\r\n"


class StdioWire:
    """The raw relay's side of a stdio target's pipes: a relayed request is written to the process's stdin
    as one line, and the lines about it are taken off stdout, in order, before the SDK's reader sees them
    (`size_limit.LimitedLines`): its response and its progress always; and while it is the only request in
    flight on the connection, everything else too (log lines, list changes, server-to-client requests),
    which is how the SDK path attributes them on stdio (`UpstreamPool.caller_for`). With other requests in
    flight, those lines stay the SDK session's, whose callbacks cannot tell whose they are either.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.stdin: Any = None
        self.closed = False
        self.sdk_pending: Callable[[], int] = lambda: 0  # the SDK session's requests in flight (set by its owner)
        self._waiting: dict[str, Any] = {}  # relayed request id -> the memory stream its lines go to
        self._answers: dict[str, Message] = {}  # relayed request id -> its response, once it came

    def attach(self, process: Any) -> None:
        self.stdin = process.stdin

    def take(self, line: bytes) -> bool:
        """Whether `line` is for a relayed request (then it went there); called by the stdout reader."""
        if not self._waiting:
            return False
        sole = len(self._waiting) == 1 and not self.sdk_pending()
        if not sole and b'"agentplex-' not in line:
            return False
        try:
            message = pydantic_core.from_json(line)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        method = message.get("method")
        if method is None:  # a response: the relayed request's, kept aside (a full backlog cannot lose it)
            key = message.get("id")
            waiter = self._waiting.get(key) if isinstance(key, str) else None
            if waiter is None:
                return False
            self._answers[key] = message
            waiter.close()
            return True
        params = message.get("params")
        token = params.get("progressToken") if method == "notifications/progress" and isinstance(params, dict) else None
        if isinstance(token, str) and token in self._waiting:
            waiter = self._waiting[token]
        elif sole:
            waiter = next(iter(self._waiting.values()))
        else:
            return False
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            waiter.send_nowait(message)
        return True

    def close(self) -> None:
        self.closed = True
        for waiter in self._waiting.values():
            waiter.close()

    async def call(self, request: Message, on_message: OnMessage) -> Message:
        """Write one request and return its response. What else comes for it goes to `on_message`:
        notifications in order, each server-to-client request in a task of its own, answered on stdin."""
        if self.closed or self.stdin is None:
            raise UpstreamError(self.target, "tools/call failed: the process has ended")
        rid = request["id"]
        sender, receiver = anyio.create_memory_object_stream[Message](_STDIO_BACKLOG)
        self._waiting[rid] = sender
        try:
            async with anyio.create_task_group() as asks:
                with receiver:
                    await self._write(request)
                    async for message in receiver:
                        if "id" in message:
                            asks.start_soon(self._ask, message, on_message)
                        else:
                            await on_message(message)
                asks.cancel_scope.cancel()  # asks still open when the call ends are moot
            answer = self._answers.pop(rid, None)
            if answer is None:
                raise UpstreamError(self.target, "ended before answering tools/call")
            return answer
        finally:
            self._waiting.pop(rid, None)
            self._answers.pop(rid, None)
            sender.close()

    async def _ask(self, message: Message, on_message: OnMessage) -> None:
        try:
            reply = await on_message(message)
        except Exception as exc:  # the caller went away, say: the process still gets an answer
            error = {"code": INTERNAL_ERROR, "message": f"no answer from the client: {type(exc).__name__}"}
            reply = {"jsonrpc": "2.0", "id": message["id"], "error": error}
        if reply is not None:
            with contextlib.suppress(UpstreamError):
                await self._write(reply)

    async def _write(self, message: Message) -> None:
        try:
            await self.stdin.send(pydantic_core.to_json(message) + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise UpstreamError(self.target, f"tools/call failed: {type(exc).__name__}") from None

    async def cancel(self, request_id: str) -> None:
        """Tell the process we gave up on a request (best effort, bounded)."""
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        if self.closed or self.stdin is None:
            return
        with anyio.move_on_after(2, shield=True), contextlib.suppress(UpstreamError):
            await self._write(note)


_STDIO_BACKLOG = 256  # progress lines a relayed call may have unread; past that, progress is dropped (never its answer)
