"""Where a model's requests go: a provider kind, its URL, its key and what is set in every request.

Built once from config (the `llm:` block's models, or an `ai` backend with its route's policies); the
request path only looks targets up by model name.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True)
class VirtualModel:
    """A name whose requests go to other models: one picked by weight, or the first healthy by priority."""

    name: str
    weighted: tuple[tuple[str, int], ...] = ()  # (model, weight)
    failover: tuple[tuple[str, ...], ...] = ()  # models per priority, the preferred first


EVICTION = 30.0  # seconds a failover target that answered 429/5xx (or not at all) is passed over
MAX_EVICTION = 300.0  # a Retry-After longer than this counts as this


class ModelTable:
    """Model name -> where it goes. A concrete name matches an exact entry first, then `prefix*` /
    `*suffix` patterns (the longest first), then `*`; internal models only as a virtual model's target.
    A virtual model (matched by its exact name) picks its targets per request."""

    def __init__(
        self,
        targets: Sequence[ModelTarget],
        virtual: Sequence[VirtualModel] = (),
        internal: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = list(targets)
        self.internal = internal  # names of the targets clients may not ask for directly
        self.virtual = {v.name: v for v in virtual}
        exact = [t for t in targets if "*" not in t.name]
        wild = sorted((t for t in targets if "*" in t.name), key=lambda t: -(len(t.name) - 1))
        self.ordered = [(_matcher(t.name), t) for t in [*exact, *wild]]
        self.clock = clock
        self.evicted: dict[str, float] = {}  # a failover target's model -> when it may be tried first again

    def find(self, model: str, internal: bool = False) -> ModelTarget | None:
        return next(
            (t for matches, t in self.ordered if matches(model) and (internal or t.name not in self.internal)), None
        )

    def candidates(self, requested: str) -> list[tuple[str, ModelTarget]]:
        """What to try for a request, in order: (the model to ask for, its target). Empty: no such model."""
        virtual = self.virtual.get(requested)
        if virtual is None:
            target = self.find(requested)
            return [(requested, target)] if target is not None else []
        if virtual.weighted:
            names = [name for name, weight in virtual.weighted if weight > 0]
            weights = [weight for _, weight in virtual.weighted if weight > 0]
            chosen = random.choices(names, weights)[0]
            target = self.find(chosen, internal=True)
            return [(chosen, target)] if target is not None else []
        now = self.clock()
        healthy: list[str] = []
        resting: list[str] = []
        for group in virtual.failover:
            members = list(group)
            random.shuffle(members)  # spread a priority level's load
            for name in members:
                (healthy if self.evicted.get(name, 0.0) <= now else resting).append(name)
        resting.sort(key=lambda name: self.evicted[name])  # all resting: the one back soonest first
        return [(name, t) for name in healthy + resting if (t := self.find(name, internal=True)) is not None]

    def failed(self, model: str, retry_after: float | None = None) -> None:
        """A failover target answered 429/5xx or not at all: pass it over for a while."""
        rest = min(retry_after, MAX_EVICTION) if retry_after is not None and retry_after > 0 else EVICTION
        self.evicted[model] = self.clock() + rest

    def succeeded(self, model: str) -> None:
        self.evicted.pop(model, None)

    def names(self) -> list[str]:
        """The model list: public models, then virtual ones."""
        listed = [t.name for t in self.targets if t.name not in self.internal]
        return listed + [name for name in self.virtual if name not in listed]


def _matcher(pattern: str) -> Callable[[str], bool]:
    if pattern == "*":
        return lambda model: True
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda model: model.startswith(prefix)
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return lambda model: model.endswith(suffix)
    return lambda model: model == pattern


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


def with_prompts(front: str, body: dict[str, Any], prepend: Sequence[Mapping[str, str]], append: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The `ai` policy's prompts around the client's messages. In a Messages request (Anthropic's format)
    system prompts join `system`, the others become messages."""
    if not prepend and not append:
        return body
    messages = list(body.get("messages") or [])
    if front != "messages":
        return {**body, "messages": [dict(m) for m in prepend] + messages + [dict(m) for m in append]}
    before = [dict(m) for m in prepend if m["role"] != "system"]
    after = [dict(m) for m in append if m["role"] != "system"]
    out = {**body, "messages": before + messages + after}
    system_before = [m["content"] for m in prepend if m["role"] == "system"]
    system_after = [m["content"] for m in append if m["role"] == "system"]
    if system_before or system_after:
        current = body.get("system")
        if isinstance(current, list):  # text blocks
            out["system"] = (
                [{"type": "text", "text": t} for t in system_before] + current + [{"type": "text", "text": t} for t in system_after]
            )
        else:
            out["system"] = "\n".join([*system_before, *([current] if current else []), *system_after])
    return out
