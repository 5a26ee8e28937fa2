"""Replicas behind one load balancer: a shared Redis says which replica holds each MCP session, and a
request that lands on another replica is forwarded to it.

What a session id cannot carry — stdio processes, a server-to-client request awaiting its answer, an open
GET stream, subscriptions — lives in one replica's memory, so the request goes where the session is.
Each replica records the sessions it opens (`<prefix>:session:<id>` = its replica id) and, every
heartbeat, itself (`<prefix>:replica:<id>`: its address and its live sessions, expiring after three
missed heartbeats). When the owner is gone (its record expired, or it cannot be reached), the request is
served here: resumed if this replica can (a sealed session id), else answered "session not found"
(404), on which MCP clients start a new session. Nothing waits on a dead replica.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import mcp_types as types
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config.models import ClusterSettings
from gateway.policies.mcp_authn import public_base
from protocols.a2a import proxy
from protocols.mcp.list_cache import CHANGED

logger = logging.getLogger("agentplex.cluster")

FORWARDED_BY = "x-agentplex-forwarded-by"  # on a forwarded request: never forwarded again
OWNER_TTL = 24 * 3600  # seconds: a session's record outlives its replica's memory of it at most this long
LOOKUP_TTL = 1.0  # seconds a replica remembers where a session it does not hold lives
WARN_EVERY = 30.0  # seconds between two "Redis unavailable" warnings

# One round trip: the session's owner, and that owner's address while its heartbeat is fresh.
_OWNER = """
local replica = redis.call('GET', KEYS[1])
if not replica then return false end
local address = redis.call('HGET', ARGV[1] .. replica, 'address')
if not address then return false end
return {replica, address}
"""
# Forget a session's record only while it is still this replica's (another may have taken it over).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SSE_SESSION = re.compile(rb"session_id=([0-9a-fA-F]{32})")
LIST_ITEMS: dict[str, type[Any]] = {
    "tools/list": types.Tool,
    "prompts/list": types.Prompt,
    "resources/list": types.Resource,
    "resources/templates/list": types.ResourceTemplate,
}


class Cluster:
    """This replica's membership: its heartbeat, the sessions it holds, and where other sessions live."""

    def __init__(self, settings: ClusterSettings, sessions: Callable[[], list[dict[str, Any]]] = list) -> None:
        self.settings = settings
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.sessions = sessions  # this replica's live sessions (the admin view's rows), set by the gateway
        self.address = settings.advertise  # how the other replicas reach this one (found at start when unset)
        timeout = settings.redis.timeout
        self.redis = aioredis.from_url(settings.redis.url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._owner = self.redis.register_script(_OWNER)
        self._release = self.redis.register_script(_RELEASE)
        self.owned: set[str] = set()
        self._lookups: dict[str, tuple[float, str | None]] = {}
        self._warned = 0.0
        self.client: httpx.AsyncClient | None = None
        # Lists changed elsewhere: who to tell, by scope (route, target and its settings: `RedisLists`)
        self.watchers: dict[str, Callable[[str], Any]] = {}

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.settings.prefix}:{kind}:{name}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Cluster]:
        if self.address is None:
            self.address = await anyio.to_thread.run_sync(_address_toward, self.settings.redis.url)
            logger.info("cluster: this replica is %s, reached by the others at %s", self.id, self.address)
        async with proxy.new_client() as client, anyio.create_task_group() as tg:
            self.client = client
            tg.start_soon(self._beat)
            tg.start_soon(self._listen, tg)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), contextlib.suppress(RedisError, OSError):
                    await self._leave()
                await self.redis.aclose()
                self.client = None

    async def _beat(self) -> None:
        while True:
            try:
                with anyio.fail_after(max(1.0, self.settings.heartbeat)):
                    await self.publish()
            except (RedisError, OSError, TimeoutError) as exc:
                self._warn("could not publish this replica's heartbeat", exc)
            await anyio.sleep(self.settings.heartbeat)

    async def _listen(self, tg: anyio.abc.TaskGroup) -> None:
        """Hear other replicas' list changes (a connection of its own: it waits without a read timeout)."""
        timeout = self.settings.redis.timeout
        while True:
            subscriber = aioredis.from_url(self.settings.redis.url, socket_connect_timeout=timeout)
            pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.key("lists-changed"))
                async for message in pubsub.listen():
                    change = json.loads(message["data"])
                    watcher = self.watchers.get(change.get("scope", ""))
                    if change.get("from") != self.id and watcher is not None:
                        tg.start_soon(watcher, str(change.get("notification", "")))
            except (RedisError, OSError, ValueError) as exc:
                self._warn("could not hear other replicas' list changes", exc)
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                    await subscriber.aclose()
            await anyio.sleep(self.settings.heartbeat)

    async def publish(self) -> None:
        """Say this replica is alive, with its address and sessions; forget records of sessions it no longer has."""
        owned = set(self.owned)
        live = self.sessions()
        gone = owned - {str(s.get("id")) for s in live}
        me = self.key("replica", self.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(me, mapping={"address": self.address or "", "sessions": json.dumps(live), "at": time.time()})
            pipe.pexpire(me, int(3000 * self.settings.heartbeat))
            await pipe.execute()
        for sid in gone:
            await self._release(keys=[self.key("session", sid)], args=[self.id])
        self.owned -= gone

    async def _leave(self) -> None:
        """On the way out: the records of this replica's sessions and its heartbeat go (nothing to forward to)."""
        for sid in list(self.owned):
            await self._release(keys=[self.key("session", sid)], args=[self.id])
        await self.redis.delete(self.key("replica", self.id))

    async def claim(self, sid: str) -> None:
        """Record that this replica holds `sid` (before its client learns the id, so no request can miss it)."""
        self.owned.add(sid)
        self._lookups.pop(sid, None)
        try:
            await self.redis.set(self.key("session", sid), self.id, ex=OWNER_TTL)
        except (RedisError, OSError) as exc:  # the session works, on this replica only
            self._warn(f"could not record session {sid[:8]}…", exc)

    async def owner(self, sid: str) -> str | None:
        """The address of the live replica that holds `sid`, if it is another one; None otherwise."""
        now = time.monotonic()
        known = self._lookups.get(sid)
        if known is not None and known[0] > now:
            return known[1]
        address: str | None = None
        try:
            found = await self._owner(keys=[self.key("session", sid)], args=[self.key("replica")])
        except (RedisError, OSError) as exc:
            self._warn("could not look a session's replica up", exc)
            return None
        if found and found[0].decode() != self.id:
            address = found[1].decode()
        if len(self._lookups) > 10_000:
            self._lookups.clear()
        self._lookups[sid] = (now + LOOKUP_TTL, address)
        return address

    def unreachable(self, sid: str) -> None:
        """Its replica did not answer: serve `sid` here until the next lookup."""
        self._lookups[sid] = (time.monotonic() + LOOKUP_TTL, None)

    async def replicas(self) -> list[dict[str, Any]]:
        """Every live replica: its id, address and sessions (the admin view across replicas)."""
        out = []
        async for key in self.redis.scan_iter(match=self.key("replica", "*"), count=100):
            fields = await self.redis.hgetall(key)
            if not fields:
                continue
            replica = key.decode()[len(self.key("replica")) :]
            sessions = json.loads(fields.get(b"sessions", b"[]"))
            out.append({"id": replica, "address": fields.get(b"address", b"").decode(), "sessions": sessions})
        return sorted(out, key=lambda r: r["id"])

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            logger.warning("cluster: %s (Redis at %s): %s", what, self.settings.redis.url, exc or type(exc).__name__)


class RedisLists:
    """A route's shared connection to one target keeps its lists in Redis too, so every replica reuses one
    answer until it expires or the target says it changed (protocols/mcp/list_cache.SharedLists). Only
    the shared connection, and only without credentials: its lists are what every client is shown."""

    def __init__(self, cluster: Cluster, scope: str) -> None:
        self.cluster = cluster
        self.scope = scope

    def _key(self, method: str, key: str | None) -> str:
        return self.cluster.key("list", f"{self.scope}:{method}:{key or '-'}")

    async def get(self, method: str, key: str | None) -> tuple[list[Any], float] | None:
        try:
            async with self.cluster.redis.pipeline(transaction=False) as pipe:
                pipe.get(self._key(method, key))
                pipe.pttl(self._key(method, key))
                value, left = await pipe.execute()
            if value is None or left <= 0:
                return None
            return [LIST_ITEMS[method].model_validate(item) for item in json.loads(value)], left / 1000
        except (RedisError, OSError) as exc:
            self.cluster._warn("could not read a shared list", exc)
        except (ValueError, ValidationError) as exc:  # not what this version writes: ask the target
            logger.warning("cluster: ignoring an unreadable shared %s of %s: %s", method, self.scope, exc)
        return None

    async def put(self, method: str, key: str | None, items: list[Any], ttl: float) -> None:
        body = json.dumps([item.model_dump(mode="json", by_alias=True, exclude_unset=True) for item in items])
        try:
            await self.cluster.redis.set(self._key(method, key), body, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            self.cluster._warn("could not share a list", exc)

    async def changed(self, notification: str) -> None:
        change = {"scope": self.scope, "notification": notification, "from": self.cluster.id}
        try:
            for method in CHANGED.get(notification, ()):
                async for found in self.cluster.redis.scan_iter(match=self._key(method, "*"), count=100):
                    await self.cluster.redis.delete(found)
            await self.cluster.redis.publish(self.cluster.key("lists-changed"), json.dumps(change))
        except (RedisError, OSError) as exc:
            self.cluster._warn("could not tell other replicas of a list change", exc)


def _address_toward(redis_url: str) -> str:
    """The local address this host uses to reach Redis (a UDP `connect` sends nothing): the one its peers,
    which reach the same Redis, can reach it at. Falls back to the host name's address."""
    parts = urlsplit(redis_url)
    try:
        family, _, _, _, where = socket.getaddrinfo(parts.hostname or "127.0.0.1", parts.port or 6379, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            return str(probe.getsockname()[0])
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def session_named(scope: Scope) -> str | None:
    """The MCP session a request names: its Mcp-Session-Id header, or a legacy SSE POST's `session_id`."""
    for name, value in scope.get("headers", ()):
        if name == b"mcp-session-id":
            return value.decode("latin-1")
    query = scope.get("query_string", b"")
    if scope.get("method") == "POST" and b"session_id=" in query:
        return dict(parse_qsl(query.decode("latin-1"))).get("session_id")
    return None


class ForwardToOwner:
    """An MCP route's entry on a replica: a request for a session another live replica holds is proxied
    there as it came (before this replica's policies: the owner applies them); sessions opened here are
    claimed before their id reaches the client."""

    def __init__(self, app: ASGIApp, knows: Callable[[Scope], bool], cluster: Cluster, route: str) -> None:
        self.app = app
        self.knows = knows
        self.cluster = cluster
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = session_named(scope)
        if sid is not None and self.knows(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        if sid is not None and FORWARDED_BY.encode() not in headers:
            address = await self.cluster.owner(sid)
            if address is not None and await self._forward(address, headers, scope, receive, send):
                return
        await self.app(scope, receive, self._claiming(scope, send))

    async def _forward(self, address: str, headers: dict[bytes, bytes], scope: Scope, receive: Receive, send: Send) -> bool:
        """Proxy the request to the replica at `address`; False if it could not be reached (nothing sent)."""
        assert self.cluster.client is not None
        port = scope["server"][1] if scope.get("server") else 80
        host = f"[{address}]" if ":" in address else address
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope.get('scheme', 'http')}://{host}:{port}{raw_path}" + (f"?{query}" if query else "")
        configured = {FORWARDED_BY: self.cluster.id}
        for name in (b"host", b"authorization"):  # the owner routes and authenticates the request as sent
            if name in headers:
                configured[name.decode()] = headers[name].decode("latin-1")
        upstream = proxy.Upstream(f"replica at {address}", url, configured, None, "replica")
        try:
            await proxy.forward(self.cluster.client, upstream, scope, receive, send, public=public_base(scope))
        except proxy.AgentUnavailable as exc:
            logger.warning("cluster: %s; serving the session here", exc.message)
            self.cluster.unreachable(str(session_named(scope)))
            return False
        return True

    def _claiming(self, scope: Scope, send: Send) -> Send:
        """`send`, claiming the session a response opens (Mcp-Session-Id, or a legacy SSE stream's endpoint
        event) before the client can learn its id."""
        cluster = self.cluster
        sse = scope.get("method") == "GET"
        watching = True

        async def claiming(message: Message) -> None:
            nonlocal watching
            if watching and message["type"] == "http.response.start":
                watching = sse and message["status"] < 400
                if message["status"] < 400:
                    sid = next((v for k, v in message.get("headers", ()) if k.lower() == b"mcp-session-id"), None)
                    if sid is not None and sid.decode("latin-1") not in cluster.owned:
                        await cluster.claim(sid.decode("latin-1"))
            elif watching and message["type"] == "http.response.body":
                found = _SSE_SESSION.search(message.get("body", b""))
                if found is not None:
                    watching = False
                    await cluster.claim(found.group(1).decode())
            await send(message)

        return claiming
