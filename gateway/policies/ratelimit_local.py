"""`localRateLimit`: token buckets in this process, split by an optional CEL `key` (agentplex extension).

A bucket holds `maxTokens` and gains `tokensPerFill` every `fillInterval`. A limit that names MCP
methods or tools, or whose key reads `mcp.*`, is charged per MCP message (a JSON-RPC error says when
to retry); any other limit is charged per HTTP request (429 with Retry-After).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections import OrderedDict
from typing import Any

from mcp.shared.exceptions import MCPError

from federation.guard import Access
from gateway.config.policies import RateLimit
from gateway.policies.cel_context import EvalError, Expr

logger = logging.getLogger("agentplex.ratelimit")

RATE_LIMITED = -32029  # in the implementation-defined range; HTTP's 429 in spirit
MAX_KEYS = 100_000  # buckets kept per limit; the least recently used go first


class Scope:
    """What one limit charges and how it splits its buckets; shared by local and remote limits."""

    def __init__(self, cfg: RateLimit) -> None:
        self.cfg = cfg
        self.key = Expr(cfg.key) if cfg.key else None
        self.methods = frozenset(cfg.methods)
        self.tools = list(cfg.tools)
        self.per_message = bool(self.methods or self.tools or (self.key is not None and self.key.reads & {"mcp", "a2a"}))

    def applies(self, access: Access) -> bool:
        if self.methods and access.method not in self.methods:
            return False
        if self.tools:
            return access.kind == "tool" and any(fnmatch.fnmatchcase(access.name, t) for t in self.tools)
        return True

    def bucket(self, request: Any, access: Access) -> str:
        """The bucket a request falls in; a key that cannot be evaluated (an anonymous caller's
        `jwt.sub`) puts it in the shared `?` bucket rather than letting it through."""
        if self.key is None:
            return ""
        try:
            value = self.key.evaluate(request, access)
        except EvalError:
            return "?"
        return value if isinstance(value, str) else str(value)


class LocalRateLimit:
    def __init__(self, cfg: RateLimit) -> None:
        self.scope = Scope(cfg)
        self.cfg = cfg
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last fill time)

    async def take(self, key: str) -> float | None:
        """Charge one request; None if allowed, else seconds until a token is available."""
        return self.take_now(key, time.monotonic())

    def take_now(self, key: str, now: float) -> float | None:
        cfg = self.cfg
        tokens, last = self._buckets.get(key, (float(cfg.maxTokens), now))
        fills = math.floor((now - last) / cfg.fillInterval)
        if fills > 0:
            tokens = min(float(cfg.maxTokens), tokens + fills * cfg.tokensPerFill)
            last += fills * cfg.fillInterval
        if tokens >= 1:
            self._store(key, tokens - 1, last)
            return None
        self._store(key, tokens, last)
        return max(0.001, last + cfg.fillInterval - now)

    def admit_now(self, key: str, now: float) -> float | None:
        """A tokens limit: let a request through while the bucket holds any token (charged later)."""
        tokens, last = self._filled(key, now)
        self._store(key, tokens, last)
        return None if tokens >= 1 else max(0.001, last + self.cfg.fillInterval - now)

    async def admit(self, key: str) -> float | None:
        return self.admit_now(key, time.monotonic())

    def charge(self, key: str, tokens: int, now: float | None = None) -> None:
        """A tokens limit: the answer used `tokens`; the bucket goes no lower than empty."""
        now = time.monotonic() if now is None else now
        held, last = self._filled(key, now)
        self._store(key, max(0.0, held - tokens), last)

    def _filled(self, key: str, now: float) -> tuple[float, float]:
        cfg = self.cfg
        tokens, last = self._buckets.get(key, (float(cfg.maxTokens), now))
        fills = math.floor((now - last) / cfg.fillInterval)
        if fills > 0:
            tokens = min(float(cfg.maxTokens), tokens + fills * cfg.tokensPerFill)
            last += fills * cfg.fillInterval
        return tokens, last

    def _store(self, key: str, tokens: float, last: float) -> None:
        self._buckets[key] = (tokens, last)
        self._buckets.move_to_end(key)
        if len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)


def rate_limited(retry_after: float, what: str) -> MCPError:
    seconds = math.ceil(retry_after * 10) / 10
    return MCPError(
        RATE_LIMITED, f"Rate limit exceeded for {what}; retry after {seconds:g} s", {"retryAfter": seconds}
    )
