"""The A2A agent registry: agents from config and registered at runtime, with their (original) cards.

The registry knows agents by name. An agent's card is fetched and validated when it is added
(protocols/a2a/card.py); the gateway serves a rewritten copy. This module is the interface the
A2A front end, the registration API, discovery and the agents-as-MCP-tools bridge share.

Runtime registrations persist in an `AgentStore` (federation/agent_store.py: SQLite by default,
Redis when replicas share them), so they survive restarts; config agents come from the config and
are never stored. Replicas follow each other through the store: a periodic reload, the store's change
feed when it has one (Redis pub/sub), and `resolve()`, which asks the store about a name it does not
know yet, so a replica can serve an agent registered on another one a moment ago.

Every `healthInterval` each agent's card is fetched again (bounded concurrency, bounded time): an
agent that fails is marked unhealthy with the reason and kept; one that answers again is healthy again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc

from protocols import redaction
from protocols.a2a.agent import Agent, AgentSource, AgentSpec  # defined with the wire code; re-exported here

__all__ = ["Agent", "AgentConflict", "AgentRegistry", "AgentSource", "AgentSpec", "AgentStore", "StoreError"]

logger = logging.getLogger("agentplex.a2a.registry")

CardFetcher = Callable[[AgentSpec], Any]  # async (spec) -> Agent (card fetched and validated), raises ValueError


class StoreError(Exception):
    """The store could not be read or written; the message says which store and why."""


class AgentConflict(Exception):
    """The name belongs to a config agent: it cannot be registered over or deleted at runtime."""


class AgentStore(Protocol):
    """Where runtime registrations persist (implementations: federation/agent_store.py). Raises StoreError."""

    describe: str

    async def load(self) -> list[AgentSpec]: ...

    async def find(self, name: str) -> AgentSpec | None: ...

    async def save(self, spec: AgentSpec) -> None: ...

    async def delete(self, name: str) -> bool: ...

    def changes(self) -> AsyncIterator[str | None] | None:
        """Names written by anyone, as they are written, and None each time the feed is (re)established
        (what happened before may have been missed: reload). None instead of a feed: the store is polled."""
        ...

    async def aclose(self) -> None: ...


# Fields a health check takes from a freshly fetched Agent; the rest is the registry's own bookkeeping.
_KEPT = frozenset({"name", "source", "headers", "healthy", "last_error"})
_NEVER = -math.inf


class AgentRegistry:
    """Agents by name. Config agents are added at start; runtime ones come and go through `register`.

    `fetch` turns a spec into an Agent (fetching and validating the card); a failure raises ValueError
    with a message that names the agent. Config agents whose card cannot be fetched at start are kept,
    marked unhealthy, and retried by the health check: an agent that is down is marked, not dropped.
    """

    def __init__(
        self,
        specs: Sequence[AgentSpec],
        fetch: CardFetcher,
        *,
        store: AgentStore | None = None,
        health_interval: float = 30.0,
        fetch_timeout: float | None = None,
        concurrency: int = 8,
    ) -> None:
        self.specs = list(specs)
        self.fetch = fetch
        self.store = store
        self.health_interval = health_interval
        self.fetch_timeout = fetch_timeout or min(10.0, max(2.0, health_interval))
        self.agents: dict[str, Agent] = {}
        self._specs: dict[str, AgentSpec] = {}  # what each agent was added from (to fetch it again)
        self._config = {spec.name for spec in self.specs}
        self._touched: dict[str, float] = {}  # name -> when this replica last registered/deleted it
        self._limiter = anyio.CapacityLimiter(max(1, concurrency))
        self._listeners: list[Callable[[], Any]] = []
        self._store_failing = False
        self._shadowed: set[str] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AgentRegistry]:
        """Add config and stored agents, then health-check and follow the store until exit."""
        try:
            async with anyio.create_task_group() as tg:
                async with anyio.create_task_group() as start:
                    for spec in self.specs:
                        start.start_soon(self._add_lenient, spec)
                if self.store is not None:
                    await tg.start(self._follow_store)
                if self.health_interval > 0:
                    tg.start_soon(self._health_loop)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if self.store is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.store.aclose()

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> Agent | None:
        return self.agents.get(name)

    def all(self) -> list[Agent]:
        return list(self.agents.values())

    async def resolve(self, name: str) -> Agent | None:
        """`get`, and on a miss ask the store: another replica may have registered the agent just now."""
        agent = self.agents.get(name)
        if agent is not None or self.store is None or name in self._config:
            return agent
        since = time.monotonic()
        try:
            spec = await self.store.find(name)
        except StoreError as exc:
            self._store_failed(exc)
            return None
        if spec is not None:
            await self._apply(name, spec, since)
        return self.agents.get(name)

    def is_config(self, name: str) -> bool:
        return name in self._config

    def _case_clash(self, name: str) -> str | None:
        """Another agent whose name differs from `name` only in case: names are one namespace to people
        (and to case-insensitive stores and file systems), so such a pair would be two agents in disguise."""
        folded = name.casefold()
        return next((n for n in (*self._config, *self.agents) if n != name and n.casefold() == folded), None)

    # -- changing --------------------------------------------------------------------------

    async def add(self, spec: AgentSpec, *, strict: bool = True) -> Agent:
        """Fetch the card and add (or replace) the agent. strict=False keeps it, unhealthy, on failure."""
        agent = await self._fetch(spec) if strict else await self._fetch_lenient(spec)
        self._put(spec, agent)
        return agent

    async def register(self, spec: AgentSpec) -> Agent:
        """A runtime registration: the card must be good now (ValueError otherwise), then it is stored
        (StoreError) and served. A config agent's name is refused (AgentConflict); a runtime one is replaced."""
        if spec.name in self._config:
            raise AgentConflict(f"agent {spec.name!r} comes from the config; it cannot be registered over")
        other = self._case_clash(spec.name)
        if other is not None:
            raise AgentConflict(f"agent {spec.name!r}: the name of agent {other!r} differs only in case")
        spec = AgentSpec(spec.name, spec.url, dict(spec.headers), "runtime")
        agent = await self._fetch(spec)
        if self.store is not None:
            await self.store.save(spec)
        self._touched[spec.name] = time.monotonic()
        self._put(spec, agent)
        return agent

    async def unregister(self, name: str) -> bool:
        """Forget a runtime registration here and in the store; False if it was known nowhere."""
        if name in self._config:
            raise AgentConflict(f"agent {name!r} comes from the config; remove it from the config instead")
        found = await self.store.delete(name) if self.store is not None else False
        self._touched[name] = time.monotonic()
        return self._drop(name) or found

    async def remove(self, name: str) -> bool:
        """Forget an agent in this process only (the store is not touched)."""
        return self._drop(name)

    def on_change(self, listener: Callable[[], Any]) -> None:
        """Call `listener()` whenever the set of agents or a card changes (the MCP tool bridge listens)."""
        self._listeners.append(listener)

    # -- following the store ---------------------------------------------------------------

    async def refresh(self) -> None:
        """Make the runtime agents match the store (what other replicas registered or deleted)."""
        if self.store is None:
            return
        since = time.monotonic()
        try:
            specs = await self.store.load()
        except StoreError as exc:
            self._store_failed(exc)
            return
        self._store_ok()
        stored = {spec.name: spec for spec in specs}
        for name in stored.keys() & self._config - self._shadowed:
            self._shadowed.add(name)
            logger.warning(
                "agent registry: the stored registration of %r is ignored: a config agent has that name", name
            )
        names = stored.keys() | {name for name, spec in self._specs.items() if spec.source == "runtime"}
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(self._apply, name, stored.get(name), since)

    async def _follow_store(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the store, then apply its change feed as it comes; when the feed breaks, subscribe again.

        Started (for `running()`) once the first subscription is up and the store loaded, or failed (the
        gateway starts anyway, with what it has; the feed keeps retrying). A store without a feed is
        loaded once here and then polled by the health loop."""
        assert self.store is not None
        delay, started = 0.5, False
        while True:
            changes = self.store.changes()
            if changes is None:
                await self.refresh()
                task_status.started()
                return
            try:
                async for name in changes:
                    if name is None:  # (re)subscribed: load what may have changed while we were not listening
                        delay = 0.5
                        await self.refresh()
                        if not started:
                            started = True
                            task_status.started()
                        continue
                    since = time.monotonic()
                    try:
                        spec = await self.store.find(name)
                    except StoreError as exc:
                        self._store_failed(exc)
                        continue
                    await self._apply(name, spec, since)
            except StoreError as exc:
                self._store_failed(exc)
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await changes.aclose()  # type: ignore[attr-defined]
            if not started:
                await self.refresh()  # most likely fails too (logged once); registrations come when it answers
                started = True
                task_status.started()
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _apply(self, name: str, spec: AgentSpec | None, since: float) -> None:
        """Bring one runtime agent in line with the store's record (None: deleted), unless a local
        register/unregister newer than `since` (when the record was read) already decided."""
        if name in self._config or self._touched.get(name, _NEVER) >= since:
            return
        current = self._specs.get(name)
        if spec is None:
            self._drop(name)
            return
        if current is not None and (current.url, current.headers) == (spec.url, spec.headers):
            return
        agent = await self._fetch_lenient(spec)
        if self._touched.get(name, _NEVER) < since and self._specs.get(name) is current:
            self._put(spec, agent)

    def _store_failed(self, exc: Exception) -> None:
        if not self._store_failing:
            logger.warning("%s; runtime registrations may be out of date until it answers again", exc)
        self._store_failing = True

    def _store_ok(self) -> None:
        if self._store_failing:
            logger.info("agent registry %s answers again", self.store.describe if self.store else "store")
        self._store_failing = False

    # -- health ----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await anyio.sleep(self.health_interval)
            await self.refresh()
            await self.check_health()

    async def check_health(self) -> None:
        """Fetch every agent's card again (at most `concurrency` at once) and mark it healthy or not."""
        async with anyio.create_task_group() as tg:
            for name, spec in list(self._specs.items()):
                tg.start_soon(self._check, name, spec)

    async def _check(self, name: str, spec: AgentSpec) -> None:
        fresh: Agent | None = None
        try:
            fresh = await self._fetch(spec)
        except ValueError as exc:
            error = str(exc)
        agent = self.agents.get(name)
        if agent is None or self._specs.get(name) is not spec:
            return  # replaced or removed meanwhile
        if fresh is None:
            if agent.healthy:
                logger.warning("agent %r is unhealthy: %s", name, error)
            agent.healthy, agent.last_error = False, error
            return
        changed = fresh.card != agent.card
        for f in dataclasses.fields(Agent):
            if f.name not in _KEPT:
                setattr(agent, f.name, getattr(fresh, f.name))
        if not agent.healthy:
            logger.info("agent %r is healthy again", name)
        agent.healthy, agent.last_error = True, None
        if changed:
            self._changed()

    # -- plumbing --------------------------------------------------------------------------

    async def _fetch(self, spec: AgentSpec) -> Agent:
        """`fetch`, bounded in time and concurrency; every failure is a ValueError naming the agent."""
        async with self._limiter:
            try:
                with anyio.fail_after(self.fetch_timeout):
                    agent = await self.fetch(spec)
            except ValueError as exc:
                raise ValueError(_shown(spec, str(exc))) from None
            except TimeoutError:
                raise ValueError(
                    _shown(spec, f"agent {spec.name!r}: no card from {spec.url} within {self.fetch_timeout:g} s")
                ) from None
            except Exception as exc:
                raise ValueError(
                    _shown(spec, f"agent {spec.name!r}: cannot fetch its card from {spec.url}: {exc}")
                ) from None
        agent.source = spec.source
        return agent

    async def _fetch_lenient(self, spec: AgentSpec) -> Agent:
        """The agent, or a placeholder marked unhealthy with the reason (kept, and retried by health checks)."""
        try:
            return await self._fetch(spec)
        except ValueError as exc:
            logger.warning("agent %r is unhealthy: %s", spec.name, exc)
            agent = Agent(
                spec.name, spec.url, source=spec.source, headers=dict(spec.headers), full_rewrite=spec.full_rewrite
            )
            agent.healthy, agent.last_error = False, str(exc)
            return agent

    async def _add_lenient(self, spec: AgentSpec) -> None:
        await self.add(spec, strict=False)

    def _put(self, spec: AgentSpec, agent: Agent) -> None:
        self._specs[spec.name] = spec
        self.agents[spec.name] = agent
        self._changed()

    def _drop(self, name: str) -> bool:
        self._specs.pop(name, None)
        found = self.agents.pop(name, None) is not None
        if found:
            self._changed()
        return found

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not break registration or health checks
                logger.exception("agent registry: a change listener failed")


def _shown(spec: AgentSpec, problem: str) -> str:
    """A card problem as callers may read it (an agent's lastError is theirs to see): no credential of its config."""
    return redaction.text(problem, redaction.hidden(spec.url, headers=spec.headers))
