"""The gateway's answer to federation's `Guard`: authorization rules and per-message rate limits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from federation.guard import Access
from gateway.policies.authz_cel import RuleSet
from gateway.policies.ratelimit_local import Scope, rate_limited


class Limiter(Protocol):
    scope: Scope

    async def take(self, key: str) -> float | None: ...


class PolicyGuard:
    """Every level's rules must allow (a deny anywhere wins); every applicable limit is charged."""

    decided: Callable[[bool], None] | None = None  # told each rate-limit decision (metrics)

    def __init__(self, rules: Sequence[RuleSet], limits: Sequence[Limiter]) -> None:
        self.rules = list(rules)
        self.limits = list(limits)

    def visible(self, request: Any, access: Access) -> bool:
        return all(rule_set.allows(request, access) for rule_set in self.rules)

    async def admit(self, request: Any, access: Access) -> None:
        applicable = [limit for limit in self.limits if limit.scope.applies(access)]
        if not applicable:
            return
        for limit in applicable:
            wait = await limit.take(limit.scope.bucket(request, access))
            if self.decided is not None:
                self.decided(wait is None)
            if wait is not None:
                raise rate_limited(wait, access.name or access.method)
