"""Where AI requests go: model name matching, aliases, provider URLs, failover order (gateway/ai/targets.py)."""

from __future__ import annotations

from gateway.ai.targets import Aliases, ModelTable, ModelTarget, VirtualModel, provider_url


def target(name: str) -> ModelTarget:
    return ModelTarget(name=name, kind="openAI", url="http://x")


def test_exact_names_then_the_longest_pattern_then_star() -> None:
    table = ModelTable([target("*"), target("claude-*"), target("claude-3-*"), target("claude-3-haiku"), target("*-mini")])
    assert table.find("claude-3-haiku").name == "claude-3-haiku"
    assert table.find("claude-3-opus").name == "claude-3-*"
    assert table.find("claude-4").name == "claude-*"
    assert table.find("gpt-4o-mini").name == "*-mini"
    assert table.find("o3").name == "*"


def test_aliases_exact_first_then_the_longest_pattern() -> None:
    alias = Aliases({"fast": "gpt-4o-mini", "gpt-4*": "gpt-4o", "gpt-4.1*": "gpt-4.1"})
    assert [alias(m) for m in ("fast", "gpt-4-turbo", "gpt-4.1-nano", "o3")] == ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3"]


def test_provider_urls_as_the_reference_builds_them() -> None:
    assert provider_url("openAI") == "https://api.openai.com/v1/chat/completions"
    assert provider_url("anthropic") == "https://api.anthropic.com/v1/messages"
    assert provider_url("openAI", base_url="http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1/chat/completions"
    assert provider_url("openAI", base_url="https://llm.corp") == "https://llm.corp/chat/completions"
    assert provider_url("anthropic", host="127.0.0.1:9") == "http://127.0.0.1:9/v1/messages"
    assert provider_url("anthropic", host="h:443", https=True, path_prefix="/api") == "https://h:443/api/messages"
    assert provider_url("openAI", host="h", path_override="/x/y") == "http://h/x/y"


def test_failover_prefers_healthy_targets_by_priority() -> None:
    now = [100.0]
    table = ModelTable(
        [target("a"), target("b"), target("c")],
        [VirtualModel("v", failover=(("a",), ("b",), ("c",)))],
        internal=frozenset({"a"}),
        clock=lambda: now[0],
    )
    assert [name for name, _ in table.candidates("v")] == ["a", "b", "c"]
    table.failed("a", retry_after=5)
    table.failed("b")
    assert [name for name, _ in table.candidates("v")] == ["c", "a", "b"]  # resting ones last, soonest back first
    now[0] += 6
    assert [name for name, _ in table.candidates("v")] == ["a", "c", "b"]
    table.succeeded("b")
    assert [name for name, _ in table.candidates("v")] == ["a", "b", "c"]
    assert table.candidates("a") == [] and table.names() == ["b", "c", "v"]  # internal: not asked for directly
