"""`remoteRateLimit`: the token buckets of `localRateLimit`, kept in Redis so gateway replicas share them.

Each charge is one atomic Lua script on the Redis server (refill, take, store, expire), timed by the
server's own clock (`TIME`), so replicas whose clocks disagree still agree on the buckets. Buckets are
split and scoped exactly as local ones (`Scope`: the same CEL key, methods and tools); the Redis key is
`<prefix>:<index of the limit>:<hash of its config>:<bucket>`, so changing a limit starts fresh buckets,
and it expires once the bucket would be full again, so idle buckets vanish.

When Redis cannot answer within `redis.timeout` (unreachable, slow, or an error), `failureMode` decides:
`failOpen` (the default) lets the request through and logs a warning (at most one per
`WARN_EVERY` seconds per policy); `failClosed` refuses it: a JSON-RPC error for per-message limits,
an HTTP 503 for per-request ones.
"""

from __future__ import annotations

import hashlib
import logging
import time

import anyio
import redis.asyncio as aioredis
from mcp.shared.exceptions import MCPError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config.errors import ConfigError
from gateway.config.policies import RateLimit, RemoteRateLimit
from gateway.policies.guard import Limiter
from gateway.policies.ratelimit_local import Scope
from protocols.urls import redacted

logger = logging.getLogger("agentplex.ratelimit")

RATE_LIMITER_UNAVAILABLE = -32030  # next to RATE_LIMITED (-32029); HTTP's 503 in spirit
WARN_EVERY = 10.0  # seconds between two "Redis unavailable" warnings of one policy

# KEYS[1]: the bucket. ARGV: maxTokens, tokensPerFill, fillInterval in microseconds.
# Same arithmetic as LocalRateLimit.take_now, in integer microseconds of the server's clock.
# Returns -1 when a token was taken, else the microseconds until the next fill.
TOKEN_BUCKET = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local max_tokens = tonumber(ARGV[1])
local per_fill = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = max_tokens
  last = now
end
if last > now then last = now end
local fills = math.floor((now - last) / interval)
if fills > 0 then
  tokens = math.min(max_tokens, tokens + fills * per_fill)
  last = last + fills * interval
end
local wait = -1
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1000, last + interval - now)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'last', last)
local full_at = last + math.ceil((max_tokens - tokens) / per_fill) * interval
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((full_at - now) / 1000)))
return wait
"""


def remote_limits(cfg: RemoteRateLimit, where: str) -> list[Limiter]:
    """One limiter per configured limit, all sharing this policy's Redis connection pool."""
    store = RedisBuckets(cfg, where)
    return [RemoteLimit(store, index, limit) for index, limit in enumerate(cfg.limits)]


class RedisBuckets:
    """One `remoteRateLimit` policy's connection to Redis, its failure mode and its warnings."""

    def __init__(self, cfg: RemoteRateLimit, where: str) -> None:
        self.cfg = cfg
        self.timeout = cfg.redis.timeout
        self.fail_open = cfg.failureMode == "failOpen"
        self.display = redacted(cfg.redis.url)
        try:
            self.client = aioredis.Redis.from_url(
                cfg.redis.url,
                socket_timeout=self.timeout or None,
                socket_connect_timeout=self.timeout or None,
                retry=Retry(NoBackoff(), 1),  # once, at once: a pooled connection Redis closed is reopened
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"{where}.redis.url: {exc}") from None
        self.script = self.client.register_script(TOKEN_BUCKET)
        self._failing = False
        self._last_warning = -WARN_EVERY
        self._suppressed = 0

    async def take(self, key: str, limit: RateLimit) -> float | None:
        """Charge one token of `key`; None if allowed, else seconds to wait. Redis failing: failureMode."""
        interval_us = max(1, round(limit.fillInterval * 1_000_000))
        try:
            with anyio.fail_after(self.timeout or None):
                wait_us = await self.script(keys=[key], args=[limit.maxTokens, limit.tokensPerFill, interval_us])
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            if self.fail_open:
                return None
            raise limiter_unavailable() from None
        if self._failing:
            self._failing = False
            logger.info("remoteRateLimit: Redis at %s answers again; rate limits apply again", self.display)
        wait = int(wait_us)
        return None if wait < 0 else wait / 1_000_000

    def _failed(self, exc: BaseException) -> None:
        self._failing = True
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more failures since the last warning)" if self._suppressed else ""
        outcome = "requests pass unlimited (failOpen)" if self.fail_open else "requests are refused (failClosed)"
        reason = str(exc) or (f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else repr(exc))
        logger.warning("remoteRateLimit: Redis at %s unavailable: %s; %s%s", self.display, reason, outcome, more)
        self._last_warning = now
        self._suppressed = 0

    async def aclose(self) -> None:
        await self.client.aclose()


class RemoteLimit:
    """One limit of a `remoteRateLimit` policy: a `Limiter` whose buckets live in Redis."""

    def __init__(self, store: RedisBuckets, index: int, cfg: RateLimit) -> None:
        self.scope = Scope(cfg)
        self.cfg = cfg
        self.store = store
        digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
        self.key_prefix = f"{store.cfg.prefix}:{index}:{digest}:"

    async def take(self, key: str) -> float | None:
        """Charge one request; None if allowed, else seconds until a token is available."""
        return await self.store.take(self.key_prefix + key, self.cfg)


def limiter_unavailable() -> MCPError:
    """The refusal of a failClosed limit whose Redis cannot answer (`rate_limited`'s sibling)."""
    return MCPError(
        RATE_LIMITER_UNAVAILABLE,
        "Rate limiter unavailable: its Redis store did not answer, so the request is refused (failClosed)",
    )

