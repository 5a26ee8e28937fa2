"""The variables CEL rules and rate-limit keys see: `mcp.*`, `jwt.*`, `apiKey.*`, `basicAuth.*`, `request.*`, `source.*`.

The caller's part is built once per HTTP request and kept in its scope; only `mcp` changes per item.
On stdio there is no request: the caller's part is empty and rules see only `mcp`.
"""

from __future__ import annotations

from typing import Any

from federation.guard import Access
from gateway.policies.http import identity_of

_BASE = "agentplex.cel"
_EMPTY: dict[str, Any] = {"jwt": {}, "apiKey": {}, "basicAuth": {}, "request": {}, "source": {}}
_ITEM_KEY = {"tool": "tool", "prompt": "prompt", "resource": "resource", "template": "resource"}


def caller_vars(request: Any) -> dict[str, Any]:
    """Everything about the caller, from the ASGI scope of its HTTP request (cached in the scope)."""
    if not isinstance(request, dict):
        return _EMPTY
    state = request.get("state")
    if isinstance(state, dict) and (cached := state.get(_BASE)) is not None:
        return cached
    identity = identity_of(request)
    headers: dict[str, str] = {}
    for key, value in request.get("headers", ()):
        name = key.decode("latin-1")
        if name not in ("authorization", "cookie", "proxy-authorization"):  # secrets stay out of rules
            headers[name] = f"{headers[name]},{value.decode('latin-1')}" if name in headers else value.decode("latin-1")
    client = request.get("client") or ("", 0)
    base = {
        "jwt": (identity.jwt if identity else None) or {},
        "apiKey": {k: v for k, v in ((identity.api_key if identity else None) or {}).items() if not k.startswith("_")},
        "basicAuth": (identity.basic if identity else None) or {},
        "request": {
            "method": request.get("method", ""),
            "path": request.get("path", ""),
            "host": headers.get("host", ""),
            "headers": headers,
        },
        "source": {"address": client[0], "port": client[1]},
    }
    if isinstance(state, dict):
        state[_BASE] = base
    return base


def variables(request: Any, access: Access) -> dict[str, Any]:
    mcp: dict[str, Any] = {"method": access.method}
    if access.kind is not None:
        item = {"name": access.name, "target": access.target, "original": access.original}
        if access.kind in ("resource", "template"):
            item["uri"] = access.name
        mcp[_ITEM_KEY[access.kind]] = item
    return {**caller_vars(request), "mcp": mcp}
