"""Config -> AI endpoints: a route's `ai` backend (with its route's `ai` and backendAuth policies), or the
`llm:` block's models. Every config error is raised here, at the key it concerns."""

from __future__ import annotations

import ssl
from typing import Any

from gateway.ai.endpoint import AiEndpoint
from gateway.ai.guard import RegexGuard, guards
from gateway.ai.targets import ModelTable, ModelTarget, VirtualModel, provider_url
from gateway.config import ConfigError
from gateway.config.ai import AiBackend, AiPolicy
from gateway.config.llm import LlmModel, LlmParams, LlmShort, environment_key
from gateway.config.llm import VirtualModel as VirtualModelConfig
from gateway.config.policies import BackendAuth


def route_endpoint(
    name: str,
    backend: AiBackend,
    policy: AiPolicy | None,
    auth: tuple[str, BackendAuth] | None,
    tls: ssl.SSLContext | None,
) -> AiEndpoint:
    """An `ai` backend: every model the caller asks for goes to its one provider."""
    kind = backend.provider.kind
    target = ModelTarget(
        name="*",
        kind=kind,
        url=provider_url(kind, host=backend.hostOverride, https=tls is not None, path_override=backend.pathOverride,
                         path_prefix=backend.pathPrefix),
        api_key=_route_key(auth),
        model=backend.provider.model,
    )
    listed: list[str] | list[dict[str, Any]]
    if policy is not None and policy.models is not None:
        listed = [m.model_dump() for m in policy.models]
    else:
        names = {*(policy.modelAliases if policy else {}), *([backend.provider.model] if backend.provider.model else [])}
        listed = sorted(n for n in names if "*" not in n)
    return AiEndpoint(
        name,
        ModelTable([target]),
        aliases=policy.modelAliases if policy else None,
        defaults=policy.defaults if policy else None,
        overrides=policy.overrides if policy else None,
        prompts=_prompts(policy),
        guards=_guards(policy),
        listed=listed,
        routes=policy.routes if policy is not None else None,  # unset: every path is Completions
        tls=tls,
    )


def _guards(policy: AiPolicy | None) -> tuple[list[RegexGuard], list[RegexGuard]]:
    if policy is None or policy.promptGuard is None:
        return [], []
    return guards(policy.promptGuard.request), guards(policy.promptGuard.response)


def _prompts(policy: AiPolicy | None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    if policy is None or policy.prompts is None:
        return [], []
    return ([m.model_dump() for m in policy.prompts.prepend], [m.model_dump() for m in policy.prompts.append])


def _route_key(auth: tuple[str, BackendAuth] | None) -> str | None:
    """backendAuth `key` gives the provider's key; it goes where the provider wants it (Authorization: Bearer
    for openAI, x-api-key for anthropic), so a `location` is refused."""
    if auth is None:
        return None
    where, cfg = auth
    if cfg.key is None:
        kind = next(k for k in BackendAuth.KINDS if getattr(cfg, k) is not None)
        raise ConfigError(f"{where}.backendAuth.{kind}: on an ai backend, only backendAuth.key is supported by agentplex yet")
    if cfg.key.location is not None or cfg.key.model_fields_set & {"header", "prefix"}:
        raise ConfigError(
            f"{where}.backendAuth.key: on an ai backend the key goes where the provider expects it; location is not"
            " supported by agentplex yet"
        )
    return cfg.key.value


def llm_endpoint(llm: LlmShort) -> AiEndpoint:
    """The `llm:` block: one target per model, found by name as the reference matches it."""
    targets = [_model_target(model, llm) for model in llm.models]
    internal = frozenset(m.name for m in llm.models if m.visibility == "internal")
    virtual = [_virtual(v) for v in llm.virtualModels]
    shared = llm.policies.guardrails if llm.policies is not None else None
    checks = (guards(shared.request), guards(shared.response)) if shared is not None else ([], [])
    return AiEndpoint("llm", ModelTable(targets, virtual, internal), guards=checks, routes=LLM_ROUTES, fallback=None)


# The standard serving paths of the `llm:` block (the reference's others, e.g. embeddings, are not served yet).
LLM_ROUTES = {"/v1/chat/completions": "completions", "/v1/messages": "messages", "/v1/models": "models", "/models": "models"}


def _virtual(virtual: VirtualModelConfig) -> VirtualModel:
    routing = virtual.routing
    if routing.weighted is not None:
        return VirtualModel(virtual.name, weighted=tuple((t.model, t.weight) for t in routing.weighted.targets))
    assert routing.failover is not None
    priorities = sorted({t.priority for t in routing.failover.targets})
    groups = tuple(tuple(t.model for t in routing.failover.targets if t.priority == p) for p in priorities)
    return VirtualModel(virtual.name, failover=groups)


def _model_target(model: LlmModel, llm: LlmShort) -> ModelTarget:
    params, kind = model.params, model.provider
    defaults: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    if isinstance(kind, dict):  # {reference: name}: the provider's params, with the model's params.model
        provider = next(p for p in llm.providers if p.name == kind["reference"])
        params = provider.params.model_copy(update={"model": model.params.model or provider.params.model})
        kind = provider.provider
        if provider.defaults is not None:
            defaults.update(provider.defaults.defaults or {})
            overrides.update(provider.defaults.overrides or {})
    assert isinstance(kind, str)
    defaults.update(model.defaults or {})
    overrides.update(model.overrides or {})
    return ModelTarget(
        name=model.name,
        kind=kind,
        url=_url(kind, params),
        api_key=params.apiKey or environment_key(kind),
        model=params.model,
        defaults=defaults,
        overrides=overrides,
    )


def _url(kind: str, params: LlmParams) -> str:
    return provider_url(
        kind,
        base_url=params.baseUrl,
        host=params.hostOverride,
        path_override=params.pathOverride,
        path_prefix=params.pathPrefix,
    )
