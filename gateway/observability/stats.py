"""The stats address: `GET /metrics` in Prometheus text format, on a socket of its own.

Started by the process runtime (not by `Gateway`, so in-process test gateways bind no fixed port).
An address that cannot be bound (another gateway on the machine has it) is a warning, not a failure.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import anyio
import anyio.abc
import uvicorn
from prometheus_client import make_asgi_app
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from gateway.http_limits import OPERATOR_CONCURRENCY, server_config
from gateway.listening import tcp_listener
from gateway.observability.metrics import Metrics

logger = logging.getLogger("agentplex")


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


class StatsServer:
    def __init__(self, address: str, metrics: Metrics) -> None:
        self.address = address
        self._metrics_app = make_asgi_app(metrics.registry)
        self._server: uvicorn.Server | None = None
        self.port: int | None = None  # the bound port, once listening

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await PlainTextResponse("not found: the stats address serves /metrics\n", 404)(scope, receive, send)
            return
        await self._metrics_app(scope, receive, send)

    async def start(self, tg: anyio.abc.TaskGroup) -> bool:
        """Listen in `tg`; False (and a warning naming the address) if it cannot be bound."""
        try:
            host, port = split_address(self.address)
            sock = tcp_listener(host, port)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            logger.warning("stats: cannot listen on %s (%s); serving without /metrics", self.address, reason)
            return False
        self.port = sock.getsockname()[1]
        config = server_config(self, concurrency=OPERATOR_CONCURRENCY)
        server = self._server = _Server(config)
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        logger.info("metrics at http://%s:%d/metrics", f"[{host}]" if ":" in host else host, self.port)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
