"""Server-sent events from a provider's streamed answer, and to the client.

httpx-sse is not among agentplex's dependencies (and sse-starlette only writes events), so the
reading side is this small parser of the WHATWG event-stream format: `event:` and `data:` lines,
a blank line ending an event, comments (`:`) and other fields ignored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

MAX_EVENT = 8 * 1024 * 1024  # one event larger than this ends the stream (a provider gone wrong)


@dataclass(frozen=True)
class Event:
    event: str  # "message" when the stream names none
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a streamed response, in order, as they arrive."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text.replace("\r\n", "\n").replace("\r", "\n")
        while (end := buffer.find("\n\n")) >= 0:
            block, buffer = buffer[:end], buffer[end + 2 :]
            event = _parse(block)
            if event is not None:
                yield event
        if len(buffer) > MAX_EVENT:
            raise ValueError(f"an event of more than {MAX_EVENT} bytes")
    if buffer.strip():
        event = _parse(buffer)
        if event is not None:
            yield event


def _parse(block: str) -> Event | None:
    kind = "message"
    data: list[str] = []
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
    return Event(kind, "\n".join(data)) if data else None


def encode(data: Any, event: str | None = None) -> bytes:
    """One event: `data` as compact JSON (or a string as is), named `event` if given."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()
