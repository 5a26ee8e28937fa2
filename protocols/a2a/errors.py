"""Error bodies in the two A2A dialects, so a client's SDK reads a gateway refusal like an agent's own.

JSON-RPC errors carry the request's id. REST errors use the `google.rpc.Status` shape the A2A
HTTP+JSON binding uses; with an A2A `reason` in its ErrorInfo the a2a-sdk client raises the matching
error class with the gateway's message instead of a bare "HTTP Error 403".
"""

from __future__ import annotations

from typing import Any

UNSUPPORTED_OPERATION = -32004  # A2A: the operation is not supported (here: not allowed for this caller)
INTERNAL_ERROR = -32603

_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def jsonrpc_error(request_id: str | int | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def rest_error(status: int, reason: str, message: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """`{"error": {code, status, message, details: [ErrorInfo]}}`; `reason` is an A2A reason
    (UNSUPPORTED_OPERATION, INTERNAL_ERROR, ...) or an agentplex one (AGENT_NOT_FOUND, RATE_LIMITED)."""
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "agentplex",
        "metadata": metadata or {},
    }
    return {"error": {"code": status, "status": _STATUS.get(status, "UNKNOWN"), "message": message, "details": [info]}}
