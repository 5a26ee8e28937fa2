"""The short `llm:` block, in the reference's shape (`LocalLLMConfig`): models served on one port under the
standard paths (`/v1/chat/completions`, `/v1/messages`, `/v1/models`), each a client-facing `name` mapped
to a provider and the parameters of the outgoing request.

A model's provider is `openAI` (also spelled `openai`), `anthropic`, or `{reference: <llm.providers name>}`;
the reference's other kinds are refused as not supported yet.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from .ai import Authority, NotYet, PromptGuard, Secret, _absolute, _no_tokenize, not_yet
from .base import _CI, Port, _Model, _non_empty, _problem_at
from .policies import Policies

_ALIASES = {"openai": "openAI", "openAI": "openAI", "anthropic": "anthropic"}
_LATER = (
    "gemini", "vertex", "bedrock", "azure", "copilot", "custom", "cohere", "ollama", "baseten", "cerebras",
    "deepinfra", "deepseek", "groq", "huggingface", "mistral", "openrouter", "togetherai", "xai", "fireworks",
)
# Where a provider's key comes from when `params.apiKey` is unset ("detected from the environment").
KEY_ENVIRONMENT = {"openAI": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def _provider(value: Any) -> Any:
    """`openAI` | `openai` | `anthropic` | `{reference: name}`; other kinds are refused."""
    if isinstance(value, str):
        if value in _ALIASES:
            return _ALIASES[value]
        if value in _LATER:
            raise ValueError(f"the {value} provider is not supported by agentplex yet")
        raise ValueError(f"unknown provider {value!r} (expected one of: openAI, anthropic, or {{reference: <name>}})")
    if isinstance(value, dict) and set(value) == {"reference"} and isinstance(value["reference"], str):
        return {"reference": value["reference"]}
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _LATER:
        raise ValueError(f"the {next(iter(value))} provider is not supported by agentplex yet")
    raise ValueError("expected a provider name (openAI, anthropic) or {reference: <llm.providers name>}")


ProviderRef = Annotated[str | dict[str, str], BeforeValidator(_provider)]


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {value!r} (expected http(s)://host[:port][/path])")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("baseUrl cannot include user info, query parameters, or a fragment")
    return value


class LlmParams(_Model):
    """`LocalLLMParams`: the outgoing request's model and key, and where it goes. `baseUrl` gives host,
    port, scheme and the path the provider's own path (e.g. `/chat/completions`) is put under."""

    model: str | None = None  # unset: the model the client asked for
    apiKey: Secret | None = None  # unset: $OPENAI_API_KEY / $ANTHROPIC_API_KEY
    baseUrl: Annotated[str, AfterValidator(_base_url)] | None = None
    hostOverride: Authority | None = None
    pathOverride: Annotated[str, AfterValidator(_absolute)] | None = None
    pathPrefix: Annotated[str, AfterValidator(_absolute)] | None = None
    tokenize: Annotated[bool, AfterValidator(_no_tokenize)] = False
    awsRegion: NotYet("awsRegion (the bedrock provider)") = None
    bedrockEndpointPreference: NotYet("bedrockEndpointPreference (the bedrock provider)") = None
    vertexRegion: NotYet("vertexRegion (the vertex provider)") = None
    vertexProject: NotYet("vertexProject (the vertex provider)") = None
    azureResourceName: NotYet("azureResourceName (the azure provider)") = None
    azureResourceType: NotYet("azureResourceType (the azure provider)") = None
    azureApiVersion: NotYet("azureApiVersion (the azure provider)") = None
    azureProjectName: NotYet("azureProjectName (the azure provider)") = None


def _model_name(value: str) -> str:
    """An exact name, `*`, or one `*` at the start or end (`claude-*`, `*-mini`), as in the reference."""
    if not value:
        raise ValueError("must not be empty")
    stars = value.count("*")
    if stars > 1 or (stars == 1 and value != "*" and not (value.startswith("*") or value.endswith("*"))):
        raise ValueError(f"invalid model name {value!r} (a wildcard is one '*' at the start or the end)")
    return value


class _ModelPolicies(_Model):
    """The per-model fields agentplex builds (`defaults`, `overrides`), and the reference's others, refused."""

    defaults: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    transformation: NotYet("transformation") = None
    requestHeaders: NotYet("requestHeaders") = None
    responseHeaders: NotYet("responseHeaders") = None
    tls: NotYet("tls on a model") = None
    backendTLS: NotYet("backendTLS on a model") = None
    auth: NotYet("auth on a model (use params.apiKey)") = None
    health: NotYet("health (outlier detection)") = None
    backendTunnel: NotYet("backendTunnel") = None
    promptCaching: NotYet("promptCaching") = None


class LlmModel(_ModelPolicies):
    """`LocalLLMModels`: requests for `name` go to `provider`, with `params.model` as the model if set."""

    id: str | None = None
    name: Annotated[str, AfterValidator(_model_name)]
    provider: ProviderRef
    params: LlmParams = Field(default_factory=LlmParams)
    # internal: reachable only as a virtual model's target, not asked for directly nor listed
    visibility: Annotated[Literal["public", "internal"], _CI] = "public"
    passthrough: NotYet("passthrough") = None
    authorization: NotYet("authorization on a model (use llm.policies.authorization)") = None
    finalTransformation: NotYet("finalTransformation") = None
    guardrails: NotYet("guardrails") = None
    matches: NotYet("matches (header conditions on a model)") = None


class ProviderDefaults(_ModelPolicies):
    """`LocalLLMProviderDefaults`: policy fields models that reference the provider start from."""


class LlmProvider(_Model):
    """`LocalLLMProvider`: params and defaults shared by the models that reference it by name."""

    name: Annotated[str, AfterValidator(_non_empty)]
    provider: ProviderRef
    params: LlmParams = Field(default_factory=LlmParams)
    defaults: ProviderDefaults | None = None

    @model_validator(mode="after")
    def _not_a_reference(self) -> LlmProvider:
        if isinstance(self.provider, dict):
            raise _problem_at(("provider",), f"llm.providers {self.name} cannot reference another provider")
        return self


def model_name_matches(pattern: str, model: str) -> bool:
    """The reference's matching of a requested model against a model entry's name."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return model.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return model.endswith(pattern[1:])
    return pattern == model


class WeightedTarget(_Model):
    model: Annotated[str, AfterValidator(_non_empty)]  # resolved against llm.models as client requests are
    weight: int = Field(default=1, ge=0)


class FailoverTarget(_Model):
    model: Annotated[str, AfterValidator(_non_empty)]
    priority: int = Field(ge=0)  # lower is tried first


class WeightedRouting(_Model):
    targets: list[WeightedTarget] = Field(min_length=1)

    @model_validator(mode="after")
    def _some_weight(self) -> WeightedRouting:
        if not any(t.weight for t in self.targets):
            raise _problem_at(("targets",), "every target has weight 0")
        return self


class FailoverRouting(_Model):
    targets: list[FailoverTarget] = Field(min_length=1)


class VirtualRouting(_Model):
    weighted: WeightedRouting | None = None
    failover: FailoverRouting | None = None
    conditional: NotYet("conditional routing (CEL conditions)") = None

    @model_validator(mode="after")
    def _one(self) -> VirtualRouting:
        if (self.weighted is None) == (self.failover is None):
            raise ValueError("expected exactly one of: weighted, failover (conditional is not supported by agentplex yet)")
        return self


class VirtualModel(_Model):
    """`LocalLLMVirtualModel`: a public name whose requests go to one of llm.models, chosen per request."""

    name: Annotated[str, AfterValidator(_non_empty)]
    routing: VirtualRouting

    @property
    def targets(self) -> list[WeightedTarget] | list[FailoverTarget]:
        routing = self.routing.weighted or self.routing.failover
        assert routing is not None
        return routing.targets


# The gateway-level policies the reference allows under llm.policies (`LocalLLMPolicy`), that agentplex has.
LLM_POLICIES = (
    "guardrails", "jwtAuth", "apiKey", "basicAuth", "extAuthz", "authorization", "cors",
    "responseHeaderModifier", "localRateLimit", "remoteRateLimit", "timeout",
)


class LlmPolicies(Policies):
    guardrails: PromptGuard | None = None  # promptGuard's shape, for every model (gateway/ai/guard.py)
    transformations: NotYet("transformations") = None
    extProc: NotYet("extProc") = None
    oidc: NotYet("oidc") = None

    @model_validator(mode="after")
    def _gateway_level(self) -> LlmPolicies:
        for key in sorted(self.model_fields_set - set(LLM_POLICIES)):
            if key in Policies.model_fields:
                raise _problem_at((key,), f"not an llm policy (llm.policies takes: {', '.join(LLM_POLICIES)})")
        return self


def _mount(value: str) -> str:
    return _absolute(value).rstrip("/") if value else value


class LlmShort(_Model):
    """The short LLM shape: `llm:` at the top level. Served on `port` (default 4000, as the reference
    does when no gateway is named) at `address` (agentplex: loopback unless set)."""

    key_kind: ClassVar[str] = "key"

    port: Port = 4000
    address: str = "127.0.0.1"
    pathPrefix: Annotated[str, AfterValidator(_mount)] = ""  # the standard paths under it: /foo/v1/messages
    providers: list[LlmProvider] = Field(default_factory=list)
    models: list[LlmModel] = Field(default_factory=list)
    policies: LlmPolicies | None = None
    gateways: NotYet("gateways (named gateways; use port)") = None
    tls: NotYet("tls on the llm block") = None
    virtualModels: list[VirtualModel] = Field(default_factory=list)
    discovery: NotYet("discovery") = None

    @model_validator(mode="after")
    def _references(self) -> LlmShort:
        names = [p.name for p in self.providers]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _problem_at(("providers", index, "name"), f"duplicate provider name {name!r}")
        for index, model in enumerate(self.models):
            if isinstance(model.provider, dict) and model.provider["reference"] not in names:
                known = ", ".join(names) or "none"
                raise _problem_at(
                    ("models", index, "provider", "reference"),
                    f"unknown provider {model.provider['reference']!r} (llm.providers has: {known})",
                )
            if isinstance(model.provider, dict) and model.params.model_fields_set - {"model"}:
                raise _problem_at(
                    ("models", index, "params"),
                    f"model {model.name} references provider {model.provider['reference']} and can only set params.model",
                )
        seen: set[str] = set()
        for index, virtual in enumerate(self.virtualModels):
            if virtual.name in seen:
                raise _problem_at(("virtualModels", index, "name"), f"duplicate virtual model {virtual.name!r}")
            seen.add(virtual.name)
            kind = "weighted" if virtual.routing.weighted is not None else "failover"
            for t, target in enumerate(virtual.targets):
                if not any(model_name_matches(m.name, target.model) for m in self.models):
                    raise _problem_at(
                        ("virtualModels", index, "routing", kind, "targets", t, "model"),
                        f"no model in llm.models matches {target.model!r}",
                    )
        return self


def environment_key(kind: str) -> str | None:
    """The key a provider gets when its params name none: the reference detects it from the environment."""
    return os.environ.get(KEY_ENVIRONMENT[kind])


__all__ = ["LlmModel", "LlmParams", "LlmPolicies", "LlmProvider", "LlmShort", "environment_key", "not_yet"]
