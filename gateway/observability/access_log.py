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
