"""AI config in the reference's shapes: the `ai` backend (`ai: {name, provider: {openAI: {...}}}`), the `ai`
route policy, and the pieces the short `llm:` block (gateway/config/llm.py) shares with them.

What the reference has and agentplex does not build yet is named here and refused at its key path
("not supported by agentplex yet"), never accepted and ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from .base import _CI, _file_or_inline, _Model, _non_empty, _problem_at

PROVIDERS = ("openAI", "anthropic")  # the provider kinds agentplex speaks
LATER_PROVIDERS = ("gemini", "vertex", "bedrock", "azure", "azureOpenAI", "copilot", "custom")


def not_yet(what: str) -> Callable[[Any], Any]:
    """A validator for a key the reference has and agentplex does not build yet."""

    def refuse(value: Any) -> Any:
        raise ValueError(f"{what} is not supported by agentplex yet")

    return refuse


def NotYet(what: str) -> Any:  # reads as a type in field declarations
    return Annotated[Any, AfterValidator(not_yet(what))]


_ENV_REFERENCE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _secret(value: Any) -> Any:
    """An API key as the reference takes it: a string, `{file: path}` (read now, relative to the working
    directory, trimmed), or `$NAME`, the whole value naming an environment variable (`${NAME}` is
    expanded anywhere in the config already)."""
    if isinstance(value, dict) and set(value) == {"file"}:
        return _file_or_inline(value)
    if isinstance(value, dict):
        raise ValueError("expected a string, $ENV_NAME or {file: <path>}")
    if isinstance(value, str) and (m := _ENV_REFERENCE.fullmatch(value)):
        found = os.environ.get(m.group(1))
        if found is None:
            raise ValueError(f"environment variable {m.group(1)!r} is not set")
        return found
    return value


Secret = Annotated[str, BeforeValidator(_secret), AfterValidator(_non_empty)]


# -- the `ai` backend ---------------------------------------------------------------------------


class ModelOnly(_Model):
    """openAI and anthropic: `model`, when set, replaces the model of every request."""

    model: str | None = None


class AiProvider(_Model):
    key_kind: ClassVar[str] = "provider"

    openAI: ModelOnly | None = None
    anthropic: ModelOnly | None = None
    gemini: NotYet("the gemini provider") = None
    vertex: NotYet("the vertex provider") = None
    bedrock: NotYet("the bedrock provider") = None
    azure: NotYet("the azure provider") = None
    azureOpenAI: NotYet("the azureOpenAI provider") = None
    copilot: NotYet("the copilot provider") = None
    custom: NotYet("the custom provider") = None

    @model_validator(mode="after")
    def _one(self) -> AiProvider:
        if sum(getattr(self, kind) is not None for kind in PROVIDERS) != 1:
            raise ValueError(f"expected exactly one of: {', '.join(PROVIDERS)}")
        return self

    @property
    def kind(self) -> str:
        return "openAI" if self.openAI is not None else "anthropic"

    @property
    def model(self) -> str | None:
        chosen = self.openAI or self.anthropic
        return chosen.model if chosen is not None else None


def _authority(value: str) -> str:
    if "://" in value or "/" in value or not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?", value):
        raise ValueError(f"invalid host {value!r} (expected host or host:port, e.g. 127.0.0.1:8080)")
    return value


Authority = Annotated[str, AfterValidator(_authority)]


def _no_tokenize(value: bool) -> bool:
    if value:
        raise ValueError("tokenize: true (counting tokens before sending) is not supported by agentplex yet")
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"invalid path {value!r} (must start with '/')")
    return value


class AiBackend(_Model):
    """A route's model provider. With `hostOverride` requests go there (HTTPS if the route has backendTLS,
    else plain HTTP); `pathOverride` replaces the provider's path, `pathPrefix` its `/v1`."""

    name: Annotated[str, AfterValidator(_non_empty)]
    provider: AiProvider
    hostOverride: Authority | None = None
    pathOverride: Annotated[str, AfterValidator(_absolute)] | None = None
    pathPrefix: Annotated[str, AfterValidator(_absolute)] | None = None
    tokenize: Annotated[bool, AfterValidator(_no_tokenize)] = False


# -- the `ai` route policy ----------------------------------------------------------------------


def _alias_pattern(value: dict[str, str]) -> dict[str, str]:
    for pattern in value:
        if not pattern:
            raise ValueError("an alias must not be empty")
    return value


class SimpleMessage(_Model):
    role: Annotated[str, AfterValidator(_non_empty)]  # system, user, assistant, ...
    content: str


class PromptEnrichment(_Model):
    """Messages put before (`prepend`) or after (`append`) the client's in every request."""

    prepend: list[SimpleMessage] = Field(default_factory=list)
    append: list[SimpleMessage] = Field(default_factory=list)


BUILTINS = ("ssn", "creditCard", "phoneNumber", "email", "caSin")


def _pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


class RegexRule(_Model):
    """A built-in detector or a pattern of one's own."""

    builtin: Annotated[Literal["ssn", "creditCard", "phoneNumber", "email", "caSin"], _CI] | None = None
    pattern: Annotated[str, AfterValidator(_pattern)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RegexRule:
        if (self.builtin is None) == (self.pattern is None):
            raise ValueError("expected exactly one of: builtin, pattern")
        return self


class RegexRules(_Model):
    action: Annotated[Literal["mask", "reject"], _CI] = "mask"
    rules: list[RegexRule] = Field(min_length=1)


class RejectionHeaders(_Model):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    add: dict[str, str] = Field(default_factory=dict)
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Rejection(_Model):
    """What a rejected request or answer gets instead, as in the reference: 403 and a fixed sentence."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    body: str = "The request was rejected due to inappropriate content"
    status: int = Field(default=403, ge=100, le=599)
    headers: RejectionHeaders | None = None


class Guard(_Model):
    """One guard: `regex` (the kind agentplex has) and what a rejection answers."""

    rejection: Rejection = Field(default_factory=Rejection)
    regex: RegexRules | None = None
    webhook: NotYet("the webhook guard") = None
    openAIModeration: NotYet("the openAIModeration guard") = None
    bedrockGuardrails: NotYet("the bedrockGuardrails guard") = None
    googleModelArmor: NotYet("the googleModelArmor guard") = None
    azureContentSafety: NotYet("the azureContentSafety guard") = None
    scope: NotYet("scope (which parts of the request a guard reads)") = None

    @model_validator(mode="after")
    def _kind(self) -> Guard:
        if self.regex is None:
            raise ValueError("expected a guard kind: regex (the others are not supported by agentplex yet)")
        return self


def _no_streaming(value: str) -> str:
    if value == "Enabled":
        raise ValueError("guards on streamed answers (streaming: Enabled) are not supported by agentplex yet")
    return value


class PromptGuard(_Model):
    """Guards on requests (before the provider sees them) and on answers (before the caller does);
    as in the reference, answer guards leave streamed answers alone unless `streaming: Enabled`."""

    request: list[Guard] = Field(default_factory=list)
    response: list[Guard] = Field(default_factory=list)
    streaming: Annotated[Literal["Disabled", "Enabled"], _CI, AfterValidator(_no_streaming)] = "Disabled"


ROUTE_TYPES = ("completions", "messages", "models")
LATER_ROUTE_TYPES = ("passthrough", "detect", "embeddings", "responses", "rerank", "anthropictokencount", "realtime")


def _route_types(value: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for suffix, kind in value.items():
        folded = kind.lower()
        if folded in LATER_ROUTE_TYPES:
            raise ValueError(f"{suffix}: the {kind} route type is not supported by agentplex yet")
        if folded not in ROUTE_TYPES:
            raise ValueError(f"{suffix}: unknown route type {kind!r} (expected one of: Completions, Messages, Models)")
        out[suffix] = folded
    return out


class DeclaredModel(_Model):
    """An entry of a Models route's list (`GET /v1/models`)."""

    id: Annotated[str, AfterValidator(_non_empty)]
    ownedBy: str = "openai"
    created: int = 0


class AiPolicy(_Model):
    """`modelAliases` renames the requested model (exact names first, then `*` patterns, the longest
    first); `defaults` sets request fields the client left out; `overrides` sets them whatever it sent;
    `prompts` adds messages before or after the client's."""

    model_config = ConfigDict(extra="forbid")

    modelAliases: Annotated[dict[str, str], AfterValidator(_alias_pattern)] = Field(default_factory=dict)
    defaults: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    promptGuard: PromptGuard | None = None
    transformations: NotYet("transformations") = None
    postConversionTransformations: NotYet("postConversionTransformations") = None
    finalTransformations: NotYet("finalTransformations") = None
    prompts: PromptEnrichment | None = None
    promptCaching: NotYet("promptCaching") = None
    # path suffix -> how requests there are read: Completions | Messages | Models ("*": the rest);
    # unset: every path is Completions, as in the reference
    routes: Annotated[dict[str, str], AfterValidator(_route_types)] | None = None
    models: list[DeclaredModel] | None = None  # what a Models route lists (unset: the aliases and provider model)

    @model_validator(mode="after")
    def _no_stream_override(self) -> AiPolicy:
        for key in ("defaults", "overrides"):
            fields = getattr(self, key) or {}
            if "stream" in fields:
                raise _problem_at((key, "stream"), "the caller chooses streaming; it cannot be set here")
        return self
