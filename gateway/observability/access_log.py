"""One line per HTTP request on the `agentplex.access` logger, as `key=value` text or a JSON object.

Fields: route, method, path (never the query string: it may carry a token), status, duration_ms,
caller (`jwt:<sub>`, `apiKey:<name>`, `basic:<username>`; never a token or key) and, when the request
carried an MCP or A2A call, what it was (mcp.method, mcp.target, mcp.name, mcp.session,
mcp.error_code; a2a.agent, a2a.method, a2a.outcome). The fields also ride on the log record as
`record.access` (a dict), for handlers that want them structured.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gateway.policies.http import identity_of

logger = logging.getLogger("agentplex.access")


def caller(scope: Any) -> str:
    """Who called, as authentication found out (empty: anonymous)."""
    identity = identity_of(scope)
    if identity is None:
        return ""
    if identity.jwt is not None:
        return f"jwt:{identity.jwt.get('sub', '')}"
    if identity.api_key is not None:
        key = identity.api_key
        return f"apiKey:{key.get('name') or key.get('id') or key.get('_fingerprint')}"
    if identity.basic is not None:
        return f"basic:{identity.basic.get('username', '')}"
    return ""


def write(fields: dict[str, Any], json_format: bool) -> None:
    line = json.dumps(fields, separators=(",", ":"), default=str) if json_format else text(fields)
    logger.info("%s", line, extra={"access": fields})


def text(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_quoted(value)}" for key, value in fields.items() if value not in (None, ""))


def _quoted(value: Any) -> str:
    s = str(value)
    return json.dumps(s) if not s or any(c in s for c in ' "=\n\r\t') else s


_KINDS = {"tools/call": "tool", "prompts/get": "prompt", "resources/read": "resource"}


class AccessRules:
    """`frontendPolicies.accessLog`: `filter` (CEL: the request is logged when it is true), `add` (fields
    from CEL over the request, its answer, the caller and the MCP message) and `remove` (field names). An
    expression that cannot be evaluated for a request (a missing header, a claim the caller lacks) adds no
    field; a filter that cannot be evaluated logs the request (a broken rule hides nothing)."""

    def __init__(self, filter: str | None, add: dict[str, str], remove: list[str]) -> None:
        from gateway.policies.cel_context import Expr  # CEL is loaded only when rules are configured

        self.filter = Expr(filter) if filter else None
        self.add = {name: Expr(source) for name, source in add.items()}
        self.remove = frozenset(remove)
        self.reads_response = any("response" in e.reads for e in (self.filter, *self.add.values()) if e is not None)

    def apply(self, scope: Any, mcp: Any, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The line's fields after the rules, or None when the filter leaves the request out."""
        from federation.guard import Access
        from gateway.policies.cel_context import EvalError

        access = Access("")
        if mcp is not None:
            access = Access(mcp.method, _KINDS.get(mcp.method), mcp.name, mcp.target, mcp.name)  # type: ignore[arg-type]
        if self.filter is not None:
            try:
                if self.filter.evaluate(scope, access) is not True:
                    return None
            except EvalError:
                pass
        for name, expr in self.add.items():
            try:
                fields[name] = expr.evaluate(scope, access)
            except EvalError:
                continue
        for name in self.remove:
            fields.pop(name, None)
        return fields
