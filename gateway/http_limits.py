"""What every HTTP server the gateway runs (binds, admin API, stats address) allows one client.

The servers are uvicorn on its httptools protocol (llhttp, in C). uvicorn bounds idle keep-alive
connections, but a client that sends its request slowly (a byte of headers every few seconds, or
of body) holds its connection, and the memory behind it, for as long as it likes; and httptools,
unlike h11, puts no bound on an unfinished request head. `ReadDeadlines` gives each request head,
then each body, a deadline (Apache's mod_reqtimeout, in effect) after which the connection is
closed, and refuses a head still unfinished past `MAX_HEAD_SIZE` bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT = 10.0  # seconds to send a request line and headers, from its first byte (or from connecting)
BODY_TIMEOUT = 30.0  # seconds to send a body, plus one for every BODY_MIN_RATE bytes received
BODY_MIN_RATE = 1024
MAX_HEAD_SIZE = 16 * 1024  # bytes received of a request head still unfinished (h11's default; 400 beyond)
KEEP_ALIVE = 5  # seconds an idle connection stays open between requests
BIND_CONCURRENCY = 8192  # connections (or requests) at once on one bind
OPERATOR_CONCURRENCY = 64  # on the admin API and the stats address

_IDLE, _HEAD, _BODY = 0, 1, 2  # what the parser is in the middle of: nothing, a request head, a request body


def server_config(
    app: Any, *, concurrency: int, http: type[ReadDeadlines] | None = None, **options: Any
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
        limit_concurrency=concurrency,
        **options,
    )


class ReadDeadlines(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request head and body, and a size
    limit on an unfinished head.

    A head must arrive whole within `head_timeout` of its first byte (the first request's, of the
    connection); a body within `body_timeout`, extended by a second per `body_min_rate` bytes, so large
    bodies sent at a sane rate pass. Time spent with reading paused (the application is behind), or
    while an earlier response on the connection is still being written, is not the client's and does
    not count. As with h11's limit, only bytes of a head not yet complete count toward `max_head_size`:
    a larger head that arrives whole in one read is parsed (and left to the application to refuse).

    The parser's callbacks record what it is in the middle of; `data_received` sets the deadline from
    that after each read, so a request that arrives whole in one read costs no timer at all.
    """

    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT
    body_min_rate = BODY_MIN_RATE
    max_head_size = MAX_HEAD_SIZE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._parsing = _IDLE
        self._head_bytes = 0  # bytes received while the current head was unfinished
        self._reading: Any = None  # the cycle whose body the deadline is for; None: a head's deadline
        self._due: float | None = None  # when the deadline passes; None: no deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        super().connection_made(transport)
        self._arm(self.head_timeout)  # a client that connects and sends nothing waits no longer

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # httptools' callbacks: what the parser is in the middle of
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsing = _HEAD
        self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # A chunked body's trailer fields are not added to the request's headers, which the application
        # may have read already; and a value loses its trailing whitespace (llhttp keeps it), as in h11.
        if self._parsing == _HEAD:
            super().on_header(name, value.rstrip(b" \t"))

    def on_headers_complete(self) -> None:
        # An upgrade uvicorn does not make (h2c, say): httptools skips the request's body and parses nothing
        # more on the connection. Served as a plain request if it has no body (then the connection closes);
        # with a body, refused rather than served without it.
        refused = self.parser.should_upgrade() and not self._should_upgrade()
        app = self.app
        if refused and any(
            k == b"transfer-encoding" or (k == b"content-length" and v != b"0") for k, v in self.headers
        ):
            self.app = _upgrade_with_body
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:  # a WebSocket upgrade: its protocol takes the connection
            self._parsing = _IDLE
            return
        self._parsing = _BODY
        if refused:
            cycle.keep_alive = False
        if self.url[:1] != b"/" and self.url != b"*":
            # An absolute-form target (`http://host/path`): its whole as the path, as h11 gives it (httptools
            # takes its path and drops the authority), so the gateway refuses it as not normalized, as before.
            # The request's task has not run yet.
            raw_path = self.root_path.encode("ascii") + self.url.partition(b"?")[0]
            self.scope["raw_path"] = raw_path
            self.scope["path"] = unquote(raw_path.decode("ascii"))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._parsing = _IDLE

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        parsing = self._parsing
        if parsing == _IDLE:
            if self._due is not None:
                self._disarm()
        elif parsing == _HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_size:
                self._refuse_head()
            elif self._due is None or self._reading is not None:
                self._reading = None
                self._arm(self.head_timeout)  # the first byte of this head (or the connection's start: kept)
        else:
            cycle = self.cycle
            if cycle is not self._reading or self._due is None:  # the head arrived whole: its body is due
                self._reading = cycle
                self._arm(self.body_timeout + len(data) / self.body_min_rate)
            else:
                self._due += len(data) / self.body_min_rate

    def _refuse_head(self) -> None:
        self._parsing = _IDLE
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.logger.warning("Request head larger than %d bytes.", self.max_head_size)
            self.send_400_response(f"request head larger than {self.max_head_size} bytes\n")
        else:  # an earlier response is still being written: no room for an answer of ours
            self.transport.close()

    # one timer per connection at most; moving a deadline later only moves `_due`
    def _arm(self, seconds: float) -> None:
        due = self.loop.time() + seconds
        self._due = due
        if self._timer is None or self._timer_at > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self.loop.call_at(due, self._fire), due

    def _disarm(self) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        if due is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < due:  # moved later since the timer was set
            self._timer, self._timer_at = self.loop.call_at(due, self._fire), due
            return
        cycle = self.cycle
        waiting = self._reading is None and cycle is not None and not cycle.response_complete
        if self.flow.read_paused or waiting:  # the application has not taken what was sent: not the client's delay
            self._arm(1.0)
            return
        self._due = None
        if self._reading is None:
            self.transport.write(_timed_out(self.head_timeout))
        else:
            self.logger.info("closing a connection whose request body did not arrive in time")
        self.transport.close()


async def _upgrade_with_body(scope: Any, receive: Any, send: Any) -> None:
    """The answer to a request that asks to switch protocols (not to WebSocket) and carries a body."""
    body = b"a request with an Upgrade header (other than websocket) cannot carry a body here\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 400, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _timed_out(seconds: float) -> bytes:
    body = f"request head not received within {seconds:g} s\n".encode()
    head = "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body
