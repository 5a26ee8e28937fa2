"""CEL expressions over `mcp.*`, `jwt.*`, `apiKey.*`, `basicAuth.*`, `request.*` and `source.*` (and, for
access log rules, `response.*`: the answer's `code` and `headers`).

Handing a Python dict to the CEL library costs ~15 µs per map (measured; a scalar costs ~1 µs),
so an expression is given only the variables it reads, and one that reads nothing but the caller's
identity and the MCP item is evaluated once per (identity, item) and remembered: a session's
repeated calls to the same tool pay a dictionary lookup, not a CEL run. On stdio there is no HTTP
request: the caller's variables are empty maps.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import cel

from federation.guard import Access
from gateway.policies import cel_net
from gateway.policies.http import REQUEST_VARS, RESPONSE_VARS, identity_of

_IDENTITY_VARS = frozenset({"jwt", "apiKey", "basicAuth"})
_ITEM_VARS = frozenset({"mcp", "a2a"})
_MEMO_SIZE = 10_000
_ITEM_KEY = {"tool": "tool", "prompt": "prompt", "resource": "resource", "template": "resource", "agent": "agent"}
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class EvalError(Exception):
    """The expression could not be evaluated for this caller (a missing claim, a type error)."""


class Expr:
    def __init__(self, source: str) -> None:
        self.source = source
        self.program = cel.compile(source)
        self.reads = frozenset(str(v) for v in self.program.variables())
        self.functions = cel_net.called(source)  # the reference's IP/CIDR functions it calls, if any
        self.memoized = self.reads <= _IDENTITY_VARS | _ITEM_VARS
        self._memo: OrderedDict[Any, Any] = OrderedDict()

    def evaluate(self, request: Any, access: Access) -> Any:
        """The expression's value, or EvalError."""
        key = None
        if self.memoized:
            key = (
                _identity_key(request) if self.reads & _IDENTITY_VARS else None,
                access if self.reads & _ITEM_VARS else None,
            )
            if key in self._memo:
                value = self._memo[key]
                if isinstance(value, EvalError):
                    raise value
                return value
        try:
            variables = {name: _variable(name, request, access) for name in self.reads}
            if self.functions:
                context = cel.Context()
                for function in self.functions:
                    context.add_function(function, cel_net.FUNCTIONS[function])
                context.update(variables)
                value: Any = self.program.execute(context)
            else:
                value = self.program.execute(variables)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            value = EvalError(f"{self.source!r}: {exc}")
        if key is not None:
            self._memo[key] = value
            if len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        if isinstance(value, EvalError):
            raise value
        return value


def _identity_key(request: Any) -> Any:
    identity = identity_of(request)
    if identity is None:
        return None
    if identity.jwt is not None:
        return ("jwt", identity.token)
    if identity.api_key is not None:
        return ("apiKey", identity.api_key.get("_fingerprint"))
    if identity.basic is not None:
        return ("basic", identity.basic.get("username"))
    return ()


def _variable(name: str, request: Any, access: Access) -> Any:
    if name == "a2a":
        if access.kind != "agent":
            return {}
        return {"method": access.method, "agent": access.name, "skill": access.skill}
    if name == "mcp":
        if access.kind == "agent":
            return {}
        mcp: dict[str, Any] = {"method": access.method, "methodName": access.method}
        if access.kind is not None:
            mcp[_ITEM_KEY[access.kind]] = _item(access)
        return mcp
    identity = identity_of(request)
    if name == "jwt":
        return (identity.jwt if identity else None) or {}
    if name == "apiKey":
        found = (identity.api_key if identity else None) or {}
        return {k: v for k, v in found.items() if not k.startswith("_")}
    if name == "basicAuth":
        return (identity.basic if identity else None) or {}
    if name == "request":
        return _request_vars(request)
    if name == "source":
        return _source_vars(request)
    if name == "response":  # known once the answer started (access log rules)
        state = request.get("state") if isinstance(request, dict) else None
        found = state.get(RESPONSE_VARS) if isinstance(state, dict) else None
        if found is not None:
            return found
    raise KeyError(name)  # CEL reports the unknown variable


def _source_vars(request: Any) -> dict[str, Any]:
    """The caller's address and, on an HTTPS listener, its client certificate (subjectAltNames, issuer,
    subject, subjectCn, certificate), as gateway/listener_tls.py recorded it for the connection."""
    if not isinstance(request, dict):
        return {"address": "", "port": 0, "subjectAltNames": []}
    client = request.get("client") or ("", 0)
    out: dict[str, Any] = {"address": client[0], "port": client[1], "subjectAltNames": []}
    tls = (request.get("extensions") or {}).get("tls")
    if isinstance(tls, dict) and isinstance(tls.get("source"), dict):
        out.update(tls["source"])
    return out


def _item(access: Access) -> dict[str, str]:
    """`mcp.tool` and friends, as in the reference: `name` is what the target calls the item (rules
    are checked before the federated rename); the name clients see is `exposedName`."""
    item = {"name": access.original, "target": access.target, "exposedName": access.name}
    item["original"] = access.original  # an alias of `name`, kept for configs written for it
    if access.kind in ("resource", "template"):
        item["uri"] = access.original
        item["exposedUri"] = access.name
    return item


def _request_vars(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return {}
    state = request.get("state")
    if isinstance(state, dict) and (cached := state.get(REQUEST_VARS)) is not None:
        return cached
    headers: dict[str, str] = {}
    for key, value in request.get("headers", ()):
        name = key.decode("latin-1")
        if name not in _SECRET_HEADERS:  # secrets stay out of rules
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]},{text}" if name in headers else text
    out = {
        "method": request.get("method", ""),
        "path": request.get("path", ""),
        "host": headers.get("host", ""),
        "headers": headers,
    }
    if isinstance(state, dict):
        state[REQUEST_VARS] = out
    return out
