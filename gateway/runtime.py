"""The gateway over a process's life: hot reload of its config file and a graceful shutdown.

Sockets stay open across reloads; each config is a generation of routes. A reload builds the new
generation beside the running one (the same checks as `agentplex validate`: a bad file is logged
and changes nothing), hands every socket the new routes, and retires the old generation once its
requests in flight have finished. An MCP route whose backend is unchanged is taken over live
(gateway/keeper.py), so its sessions and streams never notice; new rules and limits apply at once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from gateway.admin import AdminServer
from gateway.app import BindRuntime, Gateway, Socket, listen, open_all
from gateway.config import Config, ConfigError
from gateway.keeper import Keeper, Part
from gateway.observability.exchange import Observability, access_rules
from gateway.observability.metrics import Metrics
from gateway.observability.stats import StatsServer
from gateway.observability.tracing import provider_for, tracer_of

logger = logging.getLogger("agentplex")

SocketKey = tuple[str, int, int]  # address, configured port, which of the binds with that pair (port 0)


class Runtime:
    """Serve a config, reload it when `reload()` is called or its file changes, stop on `stop()`."""

    def __init__(
        self,
        config: Config,
        load: Callable[[], Config] | None = None,
        *,
        poll: float = 1.0,
        tracer_provider: Any = None,
    ) -> None:
        """`load` reads the config again (None: no reloading); the file `config.source` is watched.
        `tracer_provider` (an OpenTelemetry SDK one, e.g. with an in-memory exporter) replaces the
        one `config.tracing` describes; its owner shuts it down."""
        self.config = config
        self._load = load
        self._poll = poll
        self._keeper = Keeper()
        # One registry for the process: counters carry on across reloads. The stats address is read
        # once, at start (a reload that changes it takes effect on the next start).
        self.metrics = Metrics() if config.config.statsAddr else None
        self.stats: StatsServer | None = None
        if self.metrics is not None:
            self.metrics.federations = lambda: self.gateway.federations
        # Tracing too is the process's, set up once from the first config.
        self._tracing = tracing = config.config.tracing
        self._own_provider = provider_for(tracing) if tracer_provider is None and tracing is not None else None
        self.tracer = tracer_of(tracer_provider or self._own_provider)
        # Compiled and bound here: a bad config or a port in use fails before anything runs.
        try:
            self.gateway = Gateway(config, self._keeper, self._observability(config))
        except BaseException:
            if self._own_provider is not None:
                self._own_provider.shutdown()  # its export thread
            raise
        self.sockets: dict[SocketKey, Socket] = {
            key: Socket(bind, config.config.connectionTerminationDeadline)
            for key, bind in _by_key(self.gateway).items()
        }
        open_all(list(self.sockets.values()))
        self.generation = 0  # configs applied so far
        self._current: Part | None = None
        self._generations: list[Part] = []  # the current one, and old ones still finishing requests
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()
        self._stop = anyio.Event()
        self.admin: AdminServer | None = None  # the admin API, when config.adminAddr is set and could be bound
        # True until run() has started the targets (their handshakes may take up to their timeout):
        # nothing is served yet, so a stop then may cancel run() instead of waiting (cli.py serve()).
        self.starting = True

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Until `stop()`: then stop accepting, let requests finish, close upstreams and child processes."""
        async with self._keeper.running(), anyio.create_task_group() as tg:
            self._tg = tg
            self.gateway.commit()
            try:
                self._current = await self._start(self.gateway)
            except BaseException:
                for s in self.sockets.values():
                    s.sock.close()  # type: ignore[union-attr]
                raise
            finally:
                self.starting = False
            await listen(list(self.sockets.values()), tg)
            if self.metrics is not None:  # there is a stats address
                stats = StatsServer(self.config.config.statsAddr, self.metrics)
                if await stats.start(tg):
                    self.stats = stats
            self.generation = 1
            await self._start_admin(tg)
            if self._load is not None and self.config.source not in ("<string>", ""):
                tg.start_soon(self._watch, Path(self.config.source))
            tg.start_soon(self._sweep)
            task_status.started()
            await self._stop.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    @property
    def admin_port(self) -> int | None:
        """The admin API's real port (None when it is off or its address could not be bound)."""
        return self.admin.port if self.admin is not None else None

    @property
    def reloadable(self) -> bool:
        return self._load is not None

    async def reload(self) -> bool:
        """Apply the config as it is now; False (and logged) if it is invalid or cannot be served."""
        return not await self.apply()

    async def apply(self) -> list[str]:
        """Apply the config as it is now; the problems that kept it from being applied (logged), or none."""
        assert self._load is not None and self._tg is not None
        async with self._lock:
            if self._stop.is_set():
                return ["the gateway is shutting down"]
            try:
                config = self._load()
                gateway = Gateway(config, self._keeper, self._observability(config))
            except ConfigError as exc:
                for problem in exc.problems:
                    logger.error("reload rejected: %s", problem)
                logger.error("reload rejected: still serving the previous config")
                return [str(problem) for problem in exc.problems]
            switched = self._switched_scheme(gateway)
            if switched:
                for problem in switched:
                    logger.error("reload rejected: %s", problem)
                return switched
            try:
                part = await self._start(gateway)
            except Exception as exc:
                logger.error("reload rejected: the new config could not start: %s", exc)
                return [f"the new config could not start: {exc}"]
            binds = _by_key(gateway)
            fresh = {key: Socket(bind, self._deadline) for key, bind in binds.items() if key not in self.sockets}
            try:
                open_all(list(fresh.values()))
            except OSError as exc:
                logger.error("reload rejected: %s; still serving the previous config", exc)
                await self._end(part)
                return [str(exc)]
            await listen(list(fresh.values()), self._tg)
            gateway.commit()
            sockets: dict[SocketKey, Socket] = {}
            for key, bind in binds.items():
                socket = fresh.get(key) or self.sockets[key]
                socket.serve_routes_of(bind)
                sockets[key] = socket
            for socket in sockets.values():
                socket.server.config.timeout_graceful_shutdown = config.config.connectionTerminationDeadline
            for key, socket in self.sockets.items():
                if key not in sockets:
                    socket.server.should_exit = True  # a bind the new config dropped: drains, then closes
            old, old_gateway = self._current, self.gateway
            self.config, self.gateway, self._current, self.sockets = config, gateway, part, sockets
            self.generation += 1
            if old is not None and old_gateway is not None:
                self._tg.start_soon(self._retire, old, old_gateway)
            for federation in gateway.changed_lists:
                self._tg.start_soon(federation.policy_changed)
            kept = sum(1 for p in gateway.parts if p.refs > 1)
            logger.info(
                "config reloaded from %s (generation %d; %d MCP route(s) kept live)",
                config.source,
                self.generation,
                kept,
            )
            if config.config.tracing != self._tracing:
                logger.warning("config.tracing changed: it takes effect on the next start")
            if self.admin is not None and config.config.adminAddr != self.admin.address:
                logger.warning(
                    "config.adminAddr changed to %s: the admin API stays on %s until a restart",
                    config.config.adminAddr,
                    self.admin.address,
                )
            return []

    def _switched_scheme(self, gateway: Gateway) -> list[str]:
        """Binds the new config keeps on their socket but would switch between HTTP and HTTPS: the open
        socket cannot change (certificate changes are fine: they reach new connections)."""
        problems = []
        for key, bind in _by_key(gateway).items():
            socket = self.sockets.get(key)
            if socket is not None and (socket.tls is None) != (bind.tls is None):
                now, then = ("HTTP", "HTTPS") if socket.tls is None else ("HTTPS", "HTTP")
                problems.append(
                    f"{gateway.config.source}: {socket.describe()} serves {now}; switching it to {then}"
                    " needs a restart (still serving the previous config)"
                )
        return problems

    def _observability(self, config: Config) -> Observability:
        return Observability(self.metrics, config.config.logging.format, self.tracer, access_rules(config))

    @property
    def stats_port(self) -> int | None:
        """The port /metrics is served on (None: not serving it)."""
        return self.stats.port if self.stats is not None else None

    @property
    def _deadline(self) -> float:
        return self.config.config.connectionTerminationDeadline

    async def _start_admin(self, tg: anyio.abc.TaskGroup) -> None:
        """The admin API on config.adminAddr; an address that cannot be bound is a warning, not a failure
        (two gateways on one machine both default to 127.0.0.1:15000)."""
        address = self.config.config.adminAddr
        if address is None:
            return
        admin = AdminServer(self, address)
        if not admin.open():
            return
        tg.start_soon(admin.serve)
        await admin.started()
        self.admin = admin
        logger.info("admin API on http://%s:%d", address.rpartition(":")[0], admin.port)

    async def _start(self, gateway: Gateway) -> Part:
        """Run the generation's resources (targets, clients, sessions) in a task of their own."""
        part = Part(f"config generation {self.generation + 1}", gateway, gateway.running)
        await self._keeper.acquire(part)
        self._generations.append(part)
        return part

    async def _end(self, part: Part) -> None:
        if part in self._generations:
            self._generations.remove(part)
            await self._keeper.release(part)

    async def _retire(self, part: Part, gateway: Gateway) -> None:
        """Close an old generation once nothing runs on it (requests and streams it admitted)."""
        while sum(bind.active for bind in gateway.binds) > 0 and not self._stop.is_set():
            await anyio.sleep(0.2)
        if not self._stop.is_set():  # on shutdown, _shutdown() closes every generation
            await self._end(part)

    async def _shutdown(self) -> None:
        settings = self.config.config
        binds = [socket.bind for socket in self.sockets.values()]
        if settings.connectionMinTerminationDeadline > 0:
            logger.info("draining: still accepting for %g s", settings.connectionMinTerminationDeadline)
            await anyio.sleep(settings.connectionMinTerminationDeadline)
        for socket in self.sockets.values():
            socket.server.should_exit = True  # stop accepting; uvicorn waits for open connections
        with anyio.move_on_after(settings.connectionTerminationDeadline):
            while any(bind.active - bind.streams > 0 for bind in binds):
                await anyio.sleep(0.05)
        # What is left are event streams clients hold open: closing the sessions ends them.
        with anyio.CancelScope(shield=True):
            for part in reversed(self._generations):
                await self._end(part)
        with anyio.move_on_after(settings.connectionTerminationDeadline + 1):
            while not all(socket.done for socket in self.sockets.values()):
                await anyio.sleep(0.05)
        if self.stats is not None:
            self.stats.stop()
        if self.admin is not None:
            self.admin.stop()
        if self._own_provider is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._own_provider.shutdown)  # exports what is still batched

    async def _sweep(self) -> None:
        """Close the endpoints a reload kept for their sessions once the last has ended."""
        while True:
            await anyio.sleep(1.0)
            async with self._lock:
                await self.gateway.sweep()

    async def _watch(self, path: Path) -> None:
        """Poll the file (editors replace files in place or by rename; both change this fingerprint)."""
        last = _fingerprint(path)
        while True:
            await anyio.sleep(self._poll)
            now = _fingerprint(path)
            if now == last or now is None:
                continue
            last = now
            logger.info("%s changed: reloading", path)
            await self.reload()


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # mid-rename or removed: wait for it to come back


def _by_key(gateway: Gateway) -> dict[SocketKey, BindRuntime]:
    """A bind is the same socket across configs when its address and configured port are; binds on
    port 0 are told apart by their order."""
    seen: dict[tuple[str, int], int] = {}
    out = {}
    for bind in gateway.binds:
        pair = (bind.address, bind.port)
        seen[pair] = seen.get(pair, -1) + 1
        out[(bind.address, bind.port, seen[pair])] = bind
    return out
