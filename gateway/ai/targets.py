"""Where a model's requests go: a provider kind, its URL, its key and what is set in every request.

Built once from config (the `llm:` block's models, or an `ai` backend with its route's policies); the
request path only looks targets up by model name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_HOSTS = {"openAI": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
DEFAULT_PREFIX = "/v1"
PATHS = {"openAI": "/chat/completions", "anthropic": "/messages"}  # under the prefix


@dataclass(frozen=True)
class ModelTarget:
    name: str  # the model name (pattern) clients ask for
    kind: str  # "openAI" | "anthropic"
    url: str  # the full URL requests are POSTed to
    api_key: str | None = None
    model: str | None = None  # replaces the requested model when set
    defaults: Mapping[str, Any] = field(default_factory=dict)  # set when the request lacks them
    overrides: Mapping[str, Any] = field(default_factory=dict)  # set always

    def outgoing_model(self, requested: str) -> str:
        return self.model or requested

    def headers(self) -> dict[str, str]:
        """The provider's own authentication: the gateway's key, never the caller's."""
        if self.kind == "anthropic":
            out = {"anthropic-version": "2023-06-01"}
            if self.api_key:
                out["x-api-key"] = self.api_key
            return out
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def provider_url(
    kind: str,
    *,
    base_url: str | None = None,
    host: str | None = None,
    https: bool = False,
    path_override: str | None = None,
    path_prefix: str | None = None,
) -> str:
    """As the reference builds it: `baseUrl` gives scheme, host and the prefix the provider's path goes
    under; `hostOverride` a host (HTTPS only with backendTLS); `pathOverride` the whole path."""
    if base_url is not None:
        parts = urlsplit(base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if path_prefix is None:
            path_prefix = parts.path.rstrip("/")
    elif host is not None:
        origin = f"{'https' if https else 'http'}://{host}"
    else:
        origin = DEFAULT_HOSTS[kind]
    if path_override is not None:
        return origin + path_override
    prefix = DEFAULT_PREFIX if path_prefix is None else path_prefix.rstrip("/")
    return origin + prefix + PATHS[kind]


class ModelTable:
    """Model name -> target: an exact name first, then `prefix*` / `*suffix` patterns (the most specific,
    i.e. longest, first), then `*`."""

    def __init__(self, targets: Sequence[ModelTarget]) -> None:
        self.targets = list(targets)
        self.exact: dict[str, ModelTarget] = {}
        patterns: list[tuple[int, int, re.Pattern[str], ModelTarget]] = []
        for order, target in enumerate(targets):
            if "*" not in target.name:
                self.exact.setdefault(target.name, target)
            else:
                literal = len(target.name) - 1
                pattern = re.compile(re.escape(target.name).replace(r"\*", ".*"), re.DOTALL)
                patterns.append((-literal, order, pattern, target))
        patterns.sort(key=lambda entry: entry[:2])
        self.patterns = [(pattern, target) for _, _, pattern, target in patterns]

    def find(self, model: str) -> ModelTarget | None:
        if model in self.exact:
            return self.exact[model]
        return next((target for pattern, target in self.patterns if pattern.fullmatch(model)), None)

    def names(self) -> list[str]:
        return [target.name for target in self.targets]


class Aliases:
    """The `ai` policy's modelAliases: an exact alias first, then `*` patterns, the longest first."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self.exact = {k: v for k, v in aliases.items() if "*" not in k}
        wild = [(k, v) for k, v in aliases.items() if "*" in k]
        wild.sort(key=lambda kv: (-len(kv[0]), kv[0]))
        self.patterns = [(re.compile(re.escape(k).replace(r"\*", ".*"), re.DOTALL), v) for k, v in wild]

    def __call__(self, model: str) -> str:
        if model in self.exact:
            return self.exact[model]
        return next((target for pattern, target in self.patterns if pattern.fullmatch(model)), model)


def apply_fields(body: dict[str, Any], defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` fill what the request left out; `overrides` replace whatever it sent."""
    out = dict(body)
    for key, value in defaults.items():
        out.setdefault(key, value)
    out.update(overrides)
    return out
