"""Server-sent events from a provider's streamed answer, and to the client.

httpx-sse is not among agentplex's dependencies (and sse-starlette only writes events), so the
reading side is this small parser of the WHATWG event-stream format: `event:` and `data:` lines,
a blank line ending an event, comments (`:`) and other fields ignored.
"""

from __future__ import annotations

import codecs
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


class EventParser:
    """Bytes in, whole events out, however the bytes were cut."""

    def __init__(self) -> None:
        self.buffer = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> list[Event]:
        self.buffer += self.decoder.decode(chunk).replace("\r\n", "\n").replace("\r", "\n")
        out: list[Event] = []
        while (end := self.buffer.find("\n\n")) >= 0:
            block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            event = _parse(block)
            if event is not None:
                out.append(event)
        if len(self.buffer) > MAX_EVENT:
            raise ValueError(f"an event of more than {MAX_EVENT} bytes")
        return out

    def close(self) -> list[Event]:
        rest, self.buffer = self.buffer + self.decoder.decode(b"", final=True), ""
        event = _parse(rest) if rest.strip() else None
        return [event] if event is not None else []


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a streamed response, in order, as they arrive."""
    parser = EventParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            yield event
    for event in parser.close():
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
