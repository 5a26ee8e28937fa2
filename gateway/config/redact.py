"""A config as it may be shown (the admin API's GET /config): every secret replaced by "<redacted>".

Secrets are found by what the models say they are, then by name as a safety net for fields to come:
- the known secret fields: apiKey keys, backendAuth key values, OAuth client secrets, AWS keys, htpasswd
  contents, the admin token, the session keys;
- header values (targets', agents', header modifiers' and the trace exporter's), stdio environment
  values and arguments, and URLs anywhere: shown only where they are clearly not secret
  (protocols/redaction.py has the rules: an allow-list, so a credential under an unforeseen name stays hidden);
- the private and symmetric members of inline JWKS keys (d, p, q, dp, dq, qi, k);
- anything that holds a PEM private key;
- any other field whose name says it is a secret (password, secret, token, credential, ...).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from protocols import redaction

from .a2a import AgentConfig
from .llm import LlmParams
from .models import Config, GlobalSettings, HttpTarget, SessionSettings, StdioTarget, TracingSettings
from .policies import ApiKeyEntry, AwsAuth, BackendKey, HeaderModifier, Htpasswd, Jwks, OAuthClientCredentials

REDACTED = redaction.REDACTED

_SECRET_FIELDS: list[tuple[type[BaseModel], frozenset[str]]] = [
    (ApiKeyEntry, frozenset({"key"})),
    (LlmParams, frozenset({"apiKey"})),
    (BackendKey, frozenset({"value"})),
    (OAuthClientCredentials, frozenset({"clientSecret"})),
    (AwsAuth, frozenset({"accessKeyId", "secretAccessKey", "sessionToken"})),
    (Htpasswd, frozenset({"inline"})),
    (GlobalSettings, frozenset({"adminToken"})),
    (SessionSettings, frozenset({"key", "previousKeys"})),
]
# Header mappings: a value is shown only for a few standard, credential-free header names.
_HEADERS: list[tuple[type[BaseModel], frozenset[str]]] = [
    (HttpTarget, frozenset({"headers"})),
    (AgentConfig, frozenset({"headers"})),
    (HeaderModifier, frozenset({"add", "set"})),
    (TracingSettings, frozenset({"headers"})),
]
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
# A field named like a secret is one, unless it is one of these (names of limits, URLs, CEL keys, paths).
_SECRET_NAME = re.compile(r"secret|password|passwd|token$|credential|privatekey|apikey$", re.IGNORECASE)
_NOT_SECRET = frozenset({"maxTokens", "tokensPerFill", "tokenUrl", "subjectTokenType", "requestedTokenType"})
_JWK_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})


def redacted_config(config: Config) -> dict[str, Any]:
    """The effective config (defaults included, unset optionals left out) as JSON-ready data, secrets hidden."""
    return _model(config)


def _model(model: BaseModel) -> dict[str, Any]:
    secrets = _fields_of(model, _SECRET_FIELDS)
    headers = _fields_of(model, _HEADERS)
    out: dict[str, Any] = {}
    values = {name: getattr(model, name) for name in type(model).model_fields}
    values.update(model.model_extra or {})
    for name, value in values.items():
        if value is None:
            continue
        if name in secrets or (_SECRET_NAME.search(name) and name not in _NOT_SECRET and isinstance(value, str)):
            out[name] = REDACTED
        elif name in headers and isinstance(value, dict):
            out[name] = {k: redaction.header(k, v) for k, v in value.items()}
        elif isinstance(model, StdioTarget) and name == "env":
            out[name] = {k: redaction.env(k, v) for k, v in value.items()}
        elif isinstance(model, StdioTarget) and name == "args":
            out[name] = redaction.args(value)
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
    return redaction.url(value) if _URL.fullmatch(value) else value


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
