"""A faster idle-connection check for httpcore's connection pools (httpcore and httpcore2 alike).

httpcore's pool asks every idle connection "is your socket readable?" on each request; anyio answers
by rebuilding a dict of socket attributes each time (about a tenth of the gateway's CPU under load).
The wrappers here look the socket up once per connection. They follow httpcore's network backend
and stream interfaces by duck typing, so one implementation serves both httpcore generations.
"""

from __future__ import annotations

from typing import Any

from protocols.internals import is_socket_readable, wrap_network_backend


def install(client: Any, *, coalesce: bool = False) -> None:
    """Wrap the network backend of an httpx (or httpx2) client's default transport, if it has one.

    `coalesce`: also join a request's writes (headers, body) into one send, made before the next read.
    Only for bodies sent whole: a streamed upload would wait for 64 KiB or its end."""
    wrap_network_backend(client, lambda inner: CachedSocketBackend(inner, coalesce=coalesce))


class CachedSocketBackend:
    def __init__(self, inner: Any, *, coalesce: bool = False) -> None:
        self.inner = inner
        self.coalesce = coalesce

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
        return CachedSocketStream(await self.inner.connect_tcp(*args, **kwargs), self.coalesce)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        return CachedSocketStream(await self.inner.connect_unix_socket(*args, **kwargs), self.coalesce)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CachedSocketStream:
    def __init__(self, inner: Any, coalesce: bool) -> None:
        self.inner = inner
        self.coalesce = coalesce
        self.socket = inner.get_extra_info("socket")
        self.pending: list[bytes] = []
        self.pending_size = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.pending:
            await self._flush(timeout)
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not self.coalesce:
            await self.inner.write(buffer, timeout)
        elif buffer:
            self.pending.append(buffer)
            self.pending_size += len(buffer)
            if self.pending_size >= 65536:
                await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_size = 0
        await self.inner.write(data, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(self, *args: Any, **kwargs: Any) -> Any:
        return CachedSocketStream(await self.inner.start_tls(*args, **kwargs), self.coalesce)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self.socket is not None:
            return is_socket_readable(self.socket)
        return self.inner.get_extra_info(info)
