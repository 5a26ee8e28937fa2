"""AI config in the reference's shapes: the `llm:` block, the `ai` backend and the `ai` route policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.redact import redacted_config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    return info.value.problems


LLM = """
llm:
  port: 4001
  providers:
  - name: corp-openai
    provider: openAI
    params: {baseUrl: "http://127.0.0.1:9/v1", apiKey: sk-corp}
    defaults: {defaults: {temperature: 0.2}}
  models:
  - name: fast
    provider: openai
    params: {model: gpt-4o-mini, apiKey: sk-1, baseUrl: "https://api.openai.com/v1"}
  - name: "claude-*"
    provider: anthropic
    params: {apiKey: {file: KEYFILE}}
    overrides: {max_tokens: 100}
  - name: smart
    provider: {reference: corp-openai}
    params: {model: gpt-4o}
"""


def test_the_llm_block_in_the_references_shape(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    config = parse_config(LLM.replace("KEYFILE", str(key)))
    assert config.llm is not None
    fast, claude, smart = config.llm.models
    assert (fast.provider, fast.params.model, fast.params.apiKey) == ("openAI", "gpt-4o-mini", "sk-1")
    assert (claude.provider, claude.params.apiKey, claude.overrides) == ("anthropic", "sk-from-file", {"max_tokens": 100})
    assert smart.provider == {"reference": "corp-openai"}
    shown = redacted_config(config)["llm"]
    assert shown["models"][0]["params"]["apiKey"] == "<redacted>"
    assert shown["providers"][0]["params"]["apiKey"] == "<redacted>"


def test_an_api_key_may_name_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-env")
    text = "llm:\n  models:\n  - {name: m, provider: openAI, params: {apiKey: $MY_OPENAI_KEY}}\n"
    config = parse_config(text)
    assert config.llm is not None and config.llm.models[0].params.apiKey == "sk-env"
    assert config.llm.port == 4000  # the reference's LLM port when no gateway is named
    monkeypatch.delenv("MY_OPENAI_KEY")
    assert problems(text) == ["x.yaml: llm.models[0].params.apiKey: environment variable 'MY_OPENAI_KEY' is not set"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("{name: m, provider: gemini}", "llm.models[0].provider: the gemini provider is not supported by agentplex yet"),
        ("{name: m, provider: openAI, guardrails: x}", "llm.models[0].guardrails: guardrails is not supported by agentplex yet"),
        ("{name: m, provider: openAI, params: {awsRegion: x}}", "llm.models[0].params.awsRegion: awsRegion (the bedrock provider) is not supported by agentplex yet"),
        ("{name: m, provider: openAI, colour: red}", "llm.models[0].colour: unknown key (expected one of: "),
        ("{name: 'a*b', provider: openAI}", "llm.models[0].name: invalid model name 'a*b' (a wildcard is one '*' at the start or the end)"),
        ("{name: m, provider: {reference: nope}}", "llm.models[0].provider.reference: unknown provider 'nope' (llm.providers has: none)"),
    ],
)
def test_what_the_llm_block_refuses(snippet: str, expected: str) -> None:
    (problem,) = problems(f"llm:\n  models:\n  - {snippet}\n")
    assert problem.startswith(f"x.yaml: {expected}")


def test_llm_level_refusals() -> None:
    assert problems("llm:\n  gateways: [default]\n") == [
        "x.yaml: llm.gateways: gateways (named gateways; use port) is not supported by agentplex yet"
    ]
    (problem,) = problems("llm:\n  policies: {mcpAuthorization: {rules: []}}\n")
    assert problem.startswith("x.yaml: llm.policies.mcpAuthorization: not an llm policy")
    assert problems("llm:\n  policies: {guardrails: {request: [{webhook: {}}]}}\n") == [
        "x.yaml: llm.policies.guardrails.request[0].webhook: the webhook guard is not supported by agentplex yet"
    ]


AI_ROUTE = """
binds:
- port: 0
  listeners:
  - routes:
    - policies:
        ai: {AI}
        backendAuth: {key: sk-route}
      backends:
      - ai:
          name: openai
          provider: {openAI: {model: gpt-4o-mini}}
          hostOverride: "127.0.0.1:9"
"""


def test_the_ai_backend_and_policy() -> None:
    config = parse_config(AI_ROUTE.replace("{AI}", "{modelAliases: {fast: gpt-4o-mini, 'claude-*': claude-3-haiku}, defaults: {temperature: 0.5}}"))
    route = config.binds[0].listeners[0].routes[0]
    backend = route.backends[0].ai
    assert backend is not None and backend.provider.kind == "openAI" and backend.provider.model == "gpt-4o-mini"
    assert route.policies is not None and route.policies.ai is not None
    assert route.policies.ai.modelAliases["claude-*"] == "claude-3-haiku"


@pytest.mark.parametrize(
    ("ai", "expected"),
    [
        ("{promptCaching: {}}", "ai.promptCaching: promptCaching is not supported by agentplex yet"),
        ("{routes: {/v1/x: Passthrough}}", "ai.routes: /v1/x: the Passthrough route type is not supported by agentplex yet"),
        ("{routes: {/v1/x: Chat}}", "ai.routes: /v1/x: unknown route type 'Chat' (expected one of: Completions, Messages, Models)"),
        ("{prompts: {prepend: [{role: system}]}}", "ai.prompts.prepend[0].content: missing required key"),
        ("{modelAlias: {}}", "ai.modelAlias: unknown key"),
    ],
)
def test_what_the_ai_policy_refuses(ai: str, expected: str) -> None:
    (problem,) = problems(AI_ROUTE.replace("{AI}", ai))
    assert problem.startswith(f"x.yaml: binds[0].listeners[0].routes[0].policies.{expected}")


def test_an_ai_backend_names_one_known_provider() -> None:
    text = AI_ROUTE.replace("{AI}", "{}")
    (problem,) = problems(text.replace("{openAI: {model: gpt-4o-mini}}", "{bedrock: {}}"))
    assert "provider.bedrock: the bedrock provider is not supported by agentplex yet" in problem
    (problem,) = problems(text.replace("{openAI: {model: gpt-4o-mini}}", "{openAI: {}, anthropic: {}}"))
    assert problem.endswith("provider: expected exactly one of: openAI, anthropic")


def compile_problem(text: str) -> str:
    from gateway.app import Gateway

    with pytest.raises(ConfigError) as info:
        Gateway(parse_config(text, "x.yaml"))
    return str(info.value)


def test_what_an_ai_route_refuses_when_compiled() -> None:
    plain = AI_ROUTE.replace("{AI}", "{}")
    assert compile_problem(plain.replace("backendAuth: {key: sk-route}", "retry: {attempts: 2, codes: [503]}")) == (
        "x.yaml: binds[0].listeners[0].routes[0].policies.retry: not supported on AI routes by agentplex yet"
    )
    assert compile_problem(plain.replace("backendAuth: {key: sk-route}", "backendAuth: {passthrough: {}}")) == (
        "x.yaml: binds[0].listeners[0].routes[0].policies.backendAuth.passthrough: on an ai backend, only"
        " backendAuth.key is supported by agentplex yet"
    )
    limited = "llm:\n  policies: {localRateLimit: [{maxTokens: 1, fillInterval: 1s, tools: [x]}]}\n"
    assert "do not apply to AI routes" in compile_problem(limited)
    host_route = (
        "binds:\n- port: 0\n  listeners:\n  - routes:\n    - policies: {ai: {}}\n      backends: [{host: '127.0.0.1:9'}]\n"
    )
    assert compile_problem(host_route) == (
        "x.yaml: binds[0].listeners[0].routes[0].policies.ai: applies to routes whose backend is `ai`"
    )


VIRTUAL = """
llm:
  models:
  - {name: a, provider: openAI, visibility: internal}
  - {name: "claude-*", provider: anthropic}
  virtualModels:
  - name: smart
    routing: ROUTING
"""


def test_virtual_models() -> None:
    config = parse_config(VIRTUAL.replace("ROUTING", "{failover: {targets: [{model: a, priority: 0}, {model: claude-x, priority: 1}]}}"))
    assert config.llm is not None and config.llm.models[0].visibility == "internal"
    assert [t.model for t in config.llm.virtualModels[0].targets] == ["a", "claude-x"]
    (problem,) = problems(VIRTUAL.replace("ROUTING", "{weighted: {targets: [{model: gpt-9}]}}"))
    assert problem == "x.yaml: llm.virtualModels[0].routing.weighted.targets[0].model: no model in llm.models matches 'gpt-9'"
    (problem,) = problems(VIRTUAL.replace("ROUTING", "{conditional: {targets: []}}"))
    assert problem == (
        "x.yaml: llm.virtualModels[0].routing.conditional: conditional routing (CEL conditions) is not supported by agentplex yet"
    )
    (problem,) = problems(VIRTUAL.replace("ROUTING", "{}"))
    assert problem.endswith("routing: expected exactly one of: weighted, failover (conditional is not supported by agentplex yet)")


def test_tokens_limits_belong_to_ai_routes() -> None:
    host_route = (
        "binds:\n- port: 0\n  listeners:\n  - routes:\n    - policies: {localRateLimit: [{type: tokens, maxTokens: 9,"
        " fillInterval: 1s}]}\n      backends: [{host: '127.0.0.1:9'}]\n"
    )
    assert compile_problem(host_route) == (
        "x.yaml: binds[0].listeners[0].routes[0].policies.localRateLimit[0].type: tokens applies to AI routes"
        " (it charges the tokens a model's answer used)"
    )
    (problem,) = problems("llm:\n  policies: {localRateLimit: [{type: tokens, maxTokens: 9, fillInterval: 1s, tools: [x]}]}\n")
    assert problem == (
        "x.yaml: llm.policies.localRateLimit[0].type: a tokens limit charges whole AI requests: methods and tools do not apply"
    )
    remote = "llm:\n  policies: {remoteRateLimit: {limits: [{type: tokens, maxTokens: 9, fillInterval: 1s}]}}\n"
    assert compile_problem(remote) == (
        "x.yaml: llm.policies.remoteRateLimit.limits[0].type: tokens is supported in localRateLimit only by agentplex yet"
    )


def test_prompt_guard_shapes() -> None:
    config = parse_config(AI_ROUTE.replace("{AI}", "{promptGuard: {request: [{regex: {action: Reject, rules: [{builtin: ssn}]}}]}}"))
    policy = config.binds[0].listeners[0].routes[0].policies
    assert policy is not None and policy.ai is not None and policy.ai.promptGuard is not None
    (guard,) = policy.ai.promptGuard.request
    assert guard.regex is not None and guard.regex.action == "reject"
    assert (guard.rejection.status, guard.rejection.body) == (403, "The request was rejected due to inappropriate content")
    where = "x.yaml: binds[0].listeners[0].routes[0].policies.ai.promptGuard"
    for snippet, expected in [
        ("{request: [{webhook: {target: {host: x}}}]}", "request[0].webhook: the webhook guard is not supported by agentplex yet"),
        ("{streaming: Enabled}", "streaming: guards on streamed answers (streaming: Enabled) are not supported by agentplex yet"),
        ("{request: [{regex: {rules: [{builtin: passport}]}}]}", "request[0].regex.rules[0].builtin: invalid value 'passport'"),
        ("{request: [{regex: {rules: [{pattern: '('}]}}]}", "request[0].regex.rules[0].pattern: invalid regular expression '('"),
    ]:
        (problem,) = problems(AI_ROUTE.replace("{AI}", "{promptGuard: " + snippet + "}"))
        assert problem.startswith(f"{where}.{expected}"), problem


def test_tokens_descriptors_of_a_rate_limit_service_are_refused_on_ai_routes() -> None:
    text = (
        "llm:\n  policies:\n    remoteRateLimit:\n      domain: d\n      host: 127.0.0.1:9\n"
        "      descriptors: [{entries: [{key: k, value: '\"v\"'}], type: tokens}]\n"
    )
    assert compile_problem(text) == (
        "x.yaml: llm.policies.remoteRateLimit.descriptors[0].type: tokens is supported in localRateLimit only by agentplex yet"
    )


def test_caller_headers_never_reach_a_provider_so_request_header_policies_are_refused() -> None:
    (problem,) = problems("llm:\n  policies: {requestHeaderModifier: {set: {x-a: b}}}\n")
    assert problem.startswith("x.yaml: llm.policies.requestHeaderModifier: not an llm policy")
    plain = AI_ROUTE.replace("{AI}", "{}").replace("backendAuth: {key: sk-route}", "requestHeaderModifier: {set: {x-a: b}}")
    assert compile_problem(plain) == (
        "x.yaml: binds[0].listeners[0].routes[0].policies.requestHeaderModifier: not supported on AI routes by agentplex yet"
    )
