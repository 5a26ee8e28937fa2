"""The load generator's HTTP/1.1 client: one keep-alive connection, requests written as bytes, replies
parsed by httptools (llhttp, the parser uvicorn uses).

Why not httpx2: on a 2-CPU machine the client shares the CPUs with the gateway and the server, and httpx2
costs ≈ 0.9 ms of CPU per call, more than the gateway's hop; calls/s then measures the client. This
client costs ≈ 0.1 ms per call, close to what wrk would, so the ratio measures the gateway.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

TIMEOUT = 10.0  # seconds for one exchange


class HTTPFailure(Exception):
    """The connection broke, timed out or sent something that is not HTTP/1.1."""


@dataclass
class Reply:
    """One response: status, headers (lower-case names) and the whole body."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class Connection:
    """One keep-alive connection to `url`'s host; reconnects after the server closes it."""

    def __init__(self, url: str, authority: str | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        self.authority = authority or f"{self.host}:{self.port}"  # the Host header
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        """Send one request and read its whole response."""
        try:
            async with asyncio.timeout(TIMEOUT):
                return await self._exchange(method, headers, body)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            self.close()
            raise HTTPFailure(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, method: str, headers: dict[str, str], body: bytes) -> Reply:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {self.path} HTTP/1.1", f"Host: {self.authority}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        reply = Reply()
        parser = httptools.HttpResponseParser(reply)
        while not reply.complete:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            parser.feed_data(data)
        reply.status = parser.get_status_code()
        if not parser.should_keep_alive():
            self.close()
        return reply

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
