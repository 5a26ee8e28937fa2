"""`mcpAuthorization`: CEL rules deciding which tools, prompts and resources a caller may see and use.

Evaluation order (the reference's): no rules allow everything; a matching `deny` denies; a
`require` that does not hold denies; then, if there are `allow` rules, one must match. A rule
that cannot be evaluated (a claim the caller lacks, a type error) does not match — so a failed
`require` denies and a failed `allow` grants nothing.

A message that names no tool, prompt or resource (`initialize`, `ping`, `logging/setLevel`, a list,
`subscriptions/listen`, a notification) goes through the same `deny` and `require` rules, except those
that need an item to be evaluated (`mcp.tool.name`, ...): they say nothing about it. `allow` rules
pick items and do not gate such messages, so a reference config (whose rules only ever see items)
keeps its meaning: `allow: mcp.tool.name == "echo"` still lets the client initialize and list.
"""

from __future__ import annotations

import logging
from typing import Any

from federation.guard import Access
from gateway.config.policies import McpAuthorization
from gateway.policies.cel_context import EvalError, Expr

logger = logging.getLogger("agentplex.authz")


class RuleSet:
    def __init__(self, cfg: McpAuthorization) -> None:
        self.allow = [Expr(r.allow) for r in cfg.rules if r.allow is not None]
        self.deny = [Expr(r.deny) for r in cfg.rules if r.deny is not None]
        self.require = [Expr(r.require) for r in cfg.rules if r.require is not None]

    def allows(self, request: Any, access: Access) -> bool:
        if access.kind is None:  # a method alone: only what can be said about it applies
            if any(_holds(rule, request, access) for rule in self.deny):
                return False
            return not any(_fails(rule, request, access) for rule in self.require)
        return self.decides(request, access)

    def decides(self, request: Any, access: Access) -> bool:
        """Every rule applies, in the reference's order (`authorization` on whole HTTP requests too)."""
        if any(_holds(rule, request, access) for rule in self.deny):
            return False
        if not all(_holds(rule, request, access) for rule in self.require):
            return False
        return not self.allow or any(_holds(rule, request, access) for rule in self.allow)


def _holds(rule: Expr, request: Any, access: Access) -> bool:
    try:
        return rule.evaluate(request, access) is True
    except EvalError as exc:
        logger.debug("rule does not apply: %s", exc)
        return False


def _fails(rule: Expr, request: Any, access: Access) -> bool:
    """A rule that can be evaluated here and does not hold (one that cannot be evaluated is silent)."""
    try:
        return rule.evaluate(request, access) is not True
    except EvalError:
        return False
