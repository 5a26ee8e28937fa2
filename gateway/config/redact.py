"""A config as it may be shown (the admin API's GET /config): every secret replaced by "<redacted>".

Secrets are found by what the models say they are, then by name as a safety net for fields to come:
- the known secret fields: apiKey keys, backendAuth key values, OAuth client secrets, htpasswd
  contents, the admin token;
- header values that carry credentials (Authorization, Cookie, X-Api-Key, anything named *token*,
  *secret*, *key*, *auth*, *password*, *session*, *cookie*): targets', agents', header modifiers' and the trace exporter's;
- stdio targets' environment variables with such names, and `--token X` / `--token=X` style arguments;
- the private and symmetric members of inline JWKS keys (d, p, q, dp, dq, qi, k);
- passwords in connection URLs (redis://:secret@host), and anything that holds a PEM private key;
- any other field whose name says it is a secret (password, secret, token, credential, ...).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from protocols.urls import redacted as url_without_credentials

from .a2a import AgentConfig
from .models import Config, GlobalSettings, HttpTarget, StdioTarget, TracingSettings
from .policies import ApiKeyEntry, BackendKey, HeaderModifier, Htpasswd, Jwks, OAuthClientCredentials

REDACTED = "<redacted>"

_SECRET_FIELDS: list[tuple[type[BaseModel], frozenset[str]]] = [
    (ApiKeyEntry, frozenset({"key"})),
    (BackendKey, frozenset({"value"})),
    (OAuthClientCredentials, frozenset({"clientSecret"})),
    (Htpasswd, frozenset({"inline"})),
    (GlobalSettings, frozenset({"adminToken"})),
]
# Mappings whose values are hidden when their key names a credential (headers, environment variables).
_NAMED_VALUES: list[tuple[type[BaseModel], frozenset[str]]] = [
    (HttpTarget, frozenset({"headers"})),
    (StdioTarget, frozenset({"env"})),
    (AgentConfig, frozenset({"headers"})),
    (HeaderModifier, frozenset({"add", "set"})),
    (TracingSettings, frozenset({"headers"})),
]
_SENSITIVE = re.compile(r"auth|token|secret|passw|pwd|key|cookie|session|credential|signature", re.IGNORECASE)
# A field named like a secret is one, unless it is one of these (names of limits, URLs, CEL keys, paths).
_SECRET_NAME = re.compile(r"secret|password|passwd|token$|credential|privatekey|apikey$", re.IGNORECASE)
_NOT_SECRET = frozenset({"maxTokens", "tokensPerFill", "tokenUrl", "subjectTokenType", "requestedTokenType"})
_JWK_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})


def redacted_config(config: Config) -> dict[str, Any]:
    """The effective config (defaults included, unset optionals left out) as JSON-ready data, secrets hidden."""
    return _model(config)


def _model(model: BaseModel) -> dict[str, Any]:
    secrets = _fields_of(model, _SECRET_FIELDS)
    named = _fields_of(model, _NAMED_VALUES)
    out: dict[str, Any] = {}
    values = {name: getattr(model, name) for name in type(model).model_fields}
    values.update(model.model_extra or {})
    for name, value in values.items():
        if value is None:
            continue
        if name in secrets or (_SECRET_NAME.search(name) and name not in _NOT_SECRET and isinstance(value, str)):
            out[name] = REDACTED
        elif name in named and isinstance(value, dict):
            out[name] = {k: REDACTED if _SENSITIVE.search(k) else _value(v) for k, v in value.items()}
        elif isinstance(model, StdioTarget) and name == "args":
            out[name] = redacted_args(value)
        elif isinstance(model, Jwks) and name == "inline":
            out[name] = _jwks(value)
        else:
            out[name] = _value(value)
    return out


def _fields_of(model: BaseModel, table: list[tuple[type[BaseModel], frozenset[str]]]) -> frozenset[str]:
    return frozenset().union(*(names for kind, names in table if isinstance(model, kind)))


def _value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _model(value)
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_value(v) for v in value]
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def _string(value: str) -> str:
    if "PRIVATE KEY" in value:
        return REDACTED
    if "://" in value and "@" in value:
        try:
            if urlsplit(value).password is not None or urlsplit(value).username is not None:
                return url_without_credentials(value)
        except ValueError:
            return REDACTED
    return value


def redacted_args(args: list[str]) -> list[str]:
    """`--token X`, `--api-key=X`: the value goes, the flag stays (a reader still sees the shape)."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if arg.startswith("-") and _SENSITIVE.search(flag):
            if eq:
                out.append(f"{flag}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(_string(arg))
    return out


def _jwks(inline: str | dict[str, Any]) -> Any:
    """Public keys stay readable; private and symmetric members (and what cannot be parsed) do not."""
    try:
        data = json.loads(inline) if isinstance(inline, str) else inline
    except ValueError:
        return REDACTED
    if not isinstance(data, dict):
        return REDACTED
    keys = data.get("keys") if isinstance(data.get("keys"), list) else [data]
    shown = [
        {k: REDACTED if k in _JWK_PRIVATE else _value(v) for k, v in key.items()} if isinstance(key, dict) else REDACTED
        for key in keys
    ]
    return {**{k: _value(v) for k, v in data.items() if k != "keys"}, "keys": shown} if "keys" in data else shown[0]
