"""Where runtime agent registrations persist: an embedded SQLite file (the default) or Redis (shared by replicas).

Only what is needed to add the agent again is stored (name, URL, headers): cards are fetched anew, so a
restarted gateway or another replica sees the agent as it is now, not as it was when registered. Config
agents are never stored: they come from the config.

Both stores answer the small interface `federation.agents.AgentStore`. Every failure is a `StoreError` whose message names the
store (the file, or the Redis URL without credentials) and the reason, so callers can report it as is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from federation.agents import AgentSpec, StoreError
from protocols.urls import redacted

__all__ = ["RedisStore", "SqliteStore", "StoreError"]

logger = logging.getLogger("agentplex.a2a.registry")

T = TypeVar("T")
_CREATE: Any = object()  # SqliteStore._run: create the file if it is missing


def _encode(spec: AgentSpec) -> str:
    return json.dumps({"url": spec.url, "headers": spec.headers, "saved": time.time()})


def _decode(name: str, raw: str | bytes, where: str) -> AgentSpec | None:
    """A stored record, or None (logged) if it is damaged: one bad entry must not hide the others."""
    try:
        data = json.loads(raw)
        url, headers = data["url"], data.get("headers") or {}
        if not isinstance(url, str) or not isinstance(headers, dict):
            raise TypeError("url must be a string and headers an object")
        return AgentSpec(name, url, {str(k): str(v) for k, v in headers.items()}, "runtime")
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("agent registry %s: ignoring the damaged record of agent %r: %s", where, name, exc)
        return None


class SqliteStore:
    """One table in an SQLite file, created on first use. Each operation opens its own connection in a
    worker thread (sqlite3 blocks), so gateway processes sharing the file also see each other's writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.describe = f"SQLite file {self.path}"

    def check(self) -> None:
        """Raise StoreError unless the file's folder exists (the file itself is created when needed)."""
        folder = self.path.parent
        if not folder.is_dir():
            raise StoreError(f"agent registry: the folder {folder} of the SQLite file {self.path.name} does not exist")

    async def load(self) -> list[AgentSpec]:
        rows = await self._run(lambda db: db.execute("SELECT name, spec FROM agents ORDER BY name").fetchall(), [])
        return [spec for name, raw in rows if (spec := _decode(name, raw, self.describe)) is not None]

    async def find(self, name: str) -> AgentSpec | None:
        row = await self._run(lambda db: db.execute("SELECT spec FROM agents WHERE name = ?", (name,)).fetchone(), None)
        return None if row is None else _decode(name, row[0], self.describe)

    async def save(self, spec: AgentSpec) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO agents (name, spec) VALUES (?, ?)", (spec.name, _encode(spec))
            )
        )

    async def delete(self, name: str) -> bool:
        return await self._run(lambda db: db.execute("DELETE FROM agents WHERE name = ?", (name,)).rowcount > 0, False)

    def changes(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def _run(self, work: Callable[[sqlite3.Connection], T], missing: Any = _CREATE) -> T:
        """`work` on a fresh connection in a worker thread. With `missing` given, a file that does not
        exist yet is not created (nothing registered yet: `missing` is the answer), so a gateway that
        never registers an agent leaves no file behind."""
        return await anyio.to_thread.run_sync(self._in_thread, work, missing)

    def _in_thread(self, work: Callable[[sqlite3.Connection], T], missing: Any) -> T:
        self.check()
        if missing is not _CREATE and not self.path.exists():
            return missing
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=5)) as db, db:  # `with db`: commit or roll back
                db.execute("CREATE TABLE IF NOT EXISTS agents (name TEXT PRIMARY KEY, spec TEXT NOT NULL)")
                return work(db)
        except sqlite3.Error as exc:
            raise StoreError(f"agent registry {self.describe}: {exc}") from None


class RedisStore:
    """One Redis hash (`prefix`: name -> JSON record) shared by every replica, and a pub/sub channel
    (`prefix:changes`) on which each write announces the agent's name, so other replicas follow at once.
    Commands give up after `timeout` seconds; the subscription has no read timeout (it is idle most of
    the time) and is reopened by the registry when it breaks."""

    def __init__(self, url: str, *, prefix: str = "agentplex:agents", timeout: float = 0.5) -> None:
        self.key = prefix
        self.channel = f"{prefix}:changes"
        self.timeout = timeout or None
        self.describe = f"Redis at {redacted(url)} (hash {prefix!r})"
        common: dict[str, Any] = {"socket_connect_timeout": self.timeout, "health_check_interval": 0}
        # from_url raises ValueError on a malformed URL: the caller reports it against its config key.
        self.client = aioredis.Redis.from_url(url, socket_timeout=self.timeout, retry=Retry(NoBackoff(), 1), **common)
        self._listener = aioredis.Redis.from_url(url, socket_timeout=None, **common)

    async def load(self) -> list[AgentSpec]:
        entries = await self._command(self.client.hgetall(self.key))
        return [
            spec
            for raw_name, raw in sorted(entries.items())
            if (spec := _decode(raw_name.decode(errors="replace"), raw, self.describe)) is not None
        ]

    async def find(self, name: str) -> AgentSpec | None:
        raw = await self._command(self.client.hget(self.key, name))
        return None if raw is None else _decode(name, raw, self.describe)

    async def save(self, spec: AgentSpec) -> None:
        async def write() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                await pipe.hset(self.key, spec.name, _encode(spec)).publish(self.channel, spec.name).execute()

        await self._command(write())

    async def delete(self, name: str) -> bool:
        async def write() -> bool:
            async with self.client.pipeline(transaction=True) as pipe:
                removed, _ = await pipe.hdel(self.key, name).publish(self.channel, name).execute()
            return bool(removed)

        return await self._command(write())

    async def changes(self) -> AsyncIterator[str | None]:
        pubsub = self._listener.pubsub()
        try:
            try:
                with anyio.fail_after(self.timeout or 10.0):
                    await pubsub.subscribe(self.channel)
                    while (confirmed := await pubsub.get_message(timeout=None)) is None or confirmed[
                        "type"
                    ] != "subscribe":
                        pass  # the server's confirmation: from here on no write is missed
            except (RedisError, OSError, TimeoutError) as exc:
                raise StoreError(
                    f"agent registry {self.describe}: cannot subscribe: {_reason(exc, self.timeout)}"
                ) from None
            yield None  # subscribed: the registry reloads, so nothing written before now is missed
            while True:
                try:
                    message = await pubsub.get_message(timeout=None)
                except (RedisError, OSError) as exc:
                    raise StoreError(
                        f"agent registry {self.describe}: subscription lost: {_reason(exc, None)}"
                    ) from None
                if message is not None and message.get("type") == "message":
                    yield message["data"].decode(errors="replace")
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.client.aclose()
            await self._listener.aclose()

    async def _command(self, pending: Any) -> Any:
        try:
            with anyio.fail_after(self.timeout):
                return await pending
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(f"agent registry {self.describe}: {_reason(exc, self.timeout)}") from None


def _reason(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, TimeoutError) and timeout:
        return f"no answer within {timeout:g} s"
    return (str(exc) or type(exc).__name__).rstrip(".")

