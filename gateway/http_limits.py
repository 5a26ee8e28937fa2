"""What every HTTP server the gateway runs (binds, admin API, stats address) allows one client.

uvicorn bounds an unfinished request head's size and idle keep-alive connections, but a client that sends its
request slowly (a byte of headers every few seconds, or of body) holds its connection, and the
memory behind it, for as long as it likes. `ReadDeadlines` gives each request head, then each body,
a deadline (Apache's mod_reqtimeout, in effect) after which the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0  # seconds to send a request line and headers, from its first byte (or from connecting)
BODY_TIMEOUT = 30.0  # seconds to send a body, plus one for every BODY_MIN_RATE bytes received
BODY_MIN_RATE = 1024
MAX_HEAD_SIZE = 16 * 1024  # bytes of a request head still unfinished (h11's default, made explicit; 400 beyond)
KEEP_ALIVE = 5  # seconds an idle connection stays open between requests
BIND_CONCURRENCY = 8192  # connections (or requests) at once on one bind
OPERATOR_CONCURRENCY = 64  # on the admin API and the stats address


def server_config(
    app: Any, *, concurrency: int, http: type[H11Protocol] | None = None, **options: Any
) -> uvicorn.Config:
    """uvicorn's config for one of the gateway's servers; past `concurrency` connections or requests,
    uvicorn answers 503 rather than taking more (file descriptors and memory are finite). `http`: a
    ReadDeadlines subclass (HTTPS binds use one that records the client certificate)."""
    return uvicorn.Config(
        app,
        http=http or ReadDeadlines,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        h11_max_incomplete_event_size=MAX_HEAD_SIZE,
        limit_concurrency=concurrency,
        **options,
    )


class ReadDeadlines(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request head and body.

    A head must arrive whole within `head_timeout` of its first byte; a body within `body_timeout`,
    extended by a second per `body_min_rate` bytes, so large bodies sent at a sane rate pass. Time
    spent with reading paused (the application is behind) is not the client's and does not count.
    """

    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT
    body_min_rate = BODY_MIN_RATE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: Any = None  # the cycle whose body is being read, None while reading a head
        super().connection_made(transport)
        self._arm(self.head_timeout)  # a client that connects and sends nothing waits no longer

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between_requests = self.cycle is None or self.cycle.response_complete
        if between_requests and self._deadline is None:
            self._arm(self.head_timeout)  # the first byte of the next request head
        before = self.cycle
        super().data_received(data)
        cycle = self.cycle
        if cycle is not before and cycle is not None and not cycle.response_complete:  # a head arrived whole
            self._disarm()
            if cycle.more_body:
                self._reading = cycle
                self._arm(self.body_timeout + len(data) / self.body_min_rate)
        elif cycle is not None and cycle is self._reading and self._deadline is not None:
            if cycle.more_body:
                self._arm(self._deadline.when() - self.loop.time() + len(data) / self.body_min_rate)
            else:
                self._reading = None
                self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the application has not taken what was sent: not the client's delay
            self._arm(1.0)
            return
        if self._reading is None:
            self.transport.write(_timed_out(self.head_timeout))
        else:
            self.logger.info("closing a connection whose request body did not arrive in time")
        self.transport.close()


def _timed_out(seconds: float) -> bytes:
    body = f"request head not received within {seconds:g} s\n".encode()
    head = "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body
