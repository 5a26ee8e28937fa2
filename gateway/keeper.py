"""Long-lived parts that may outlive the config that made them.

An MCP route's federation and endpoint hold live client sessions (and stdio children). When a reload
leaves a route's backend as it was, the new config takes over the running part instead of building
a new one, so its sessions carry on. Each part runs in a task of its own (an anyio context must be
left in the task that entered it), counted by the configs that use it, and closes with the last.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc

logger = logging.getLogger("agentplex")


class Part:
    """One keepable thing: `open()` gives the async context it runs in; `value` is what users share."""

    def __init__(self, key: str, value: Any, open: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self.key = key
        self.value = value
        self._open = open
        self.refs = 0
        self.revision = ""  # what the latest config said about its adjustable side (e.g. its rules)
        self.route = ""  # the route it serves, across configs (a reload may replace the part, not the route)
        self._stop = anyio.Event()
        self._done = anyio.Event()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        started = False
        try:
            async with self._open():
                task_status.started()
                started = True
                await self._stop.wait()
        except Exception:
            if not started:
                raise  # to acquire(): the part could not start
            logger.exception("%s failed", self.key)  # once running, a failure must not take the gateway down
        finally:
            self._done.set()

    async def close(self) -> None:
        self._stop.set()
        await self._done.wait()


class Keeper:
    """The running parts, by key; a config acquires the parts it uses and releases them when it ends."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Keeper]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    for part in reversed(list(self._parts.values())):
                        await part.close()
                self._parts.clear()
                self._tg = None

    def running_for(self, route: str) -> list[Part]:
        """The running parts that served `route` under earlier configs."""
        return [part for part in self._parts.values() if part.route == route]

    def find(self, key: str) -> Part | None:
        """The running part with this key, if a config before this one started it."""
        return self._parts.get(key)

    async def acquire(self, part: Part) -> None:
        """Start the part if nobody runs it yet; either way count one more user."""
        running = self._parts.get(part.key)
        if running is not None and running is not part:
            raise RuntimeError(f"two parts named {part.key!r}")
        if running is None:
            if self._tg is None:
                raise RuntimeError("the keeper is not running")
            await self._tg.start(part._run)
            self._parts[part.key] = part
        part.refs += 1

    async def release(self, part: Part) -> None:
        part.refs -= 1
        if part.refs <= 0 and self._parts.get(part.key) is part:
            del self._parts[part.key]
            with anyio.CancelScope(shield=True):
                await part.close()
