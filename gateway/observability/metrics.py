"""The gateway's Prometheus metrics, in a registry of their own (one per process: `Runtime` makes it).

Labels stay bounded: routes, targets and agents come from the config or the registry, tool/prompt/resource
names from the catalog (federation leaves unknown ones ""), HTTP and MCP methods from fixed lists
("other" otherwise). Children are bound once per label set and cached, so recording is a dict look-up
and an increment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from federation.observer import Message
from federation.server import Federation
from protocols.a2a.methods import METHODS as A2A_METHODS

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
MCP_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
        "tasks/get",
        "tasks/list",
        "tasks/cancel",
        "tasks/result",
    }
)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def bounded(value: str, known: frozenset[str]) -> str:
    return value if value in known else "other"


class Metrics:
    """Every agentplex_* metric, and cached children for the label sets seen so far."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "agentplex_requests", "HTTP requests answered", ["route", "method", "status"], registry=registry
        )
        self.request_seconds = Histogram(
            "agentplex_request_duration_seconds", "HTTP request duration", ["route"], buckets=BUCKETS, registry=registry
        )
        self.mcp_messages = Counter(
            "agentplex_mcp_messages",
            "MCP requests served, by method, target, catalog name and outcome (ok, error, denied, rate_limited)",
            ["route", "method", "target", "name", "outcome"],
            registry=registry,
        )
        self.mcp_seconds = Histogram(
            "agentplex_mcp_message_duration_seconds",
            "MCP request duration",
            ["route", "method", "target"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.a2a_calls = Counter(
            "agentplex_a2a_calls",
            "A2A calls, by agent, method and outcome",
            ["route", "agent", "method", "outcome"],
            registry=registry,
        )
        self.ratelimit = Counter(
            "agentplex_ratelimit_decisions",
            "Rate limit decisions (allowed, limited)",
            ["route", "decision"],
            registry=registry,
        )
        self.llm_tokens = Counter(
            "agentplex_llm_tokens",
            "Tokens AI routes' providers reported, by model entry, provider and type (input, output)",
            ["route", "model", "provider", "type"],
            registry=registry,
        )
        self.llm_calls = Counter(
            "agentplex_llm_calls", "Model calls answered by AI routes", ["route", "model", "provider"], registry=registry
        )
        self.llm_first_token = Histogram(
            "agentplex_llm_time_to_first_token_seconds",
            "From sending a streamed model request to its first token",
            ["route", "model", "provider"],
            buckets=BUCKETS,
            registry=registry,
        )
        # The MCP routes' federations now (the runtime points this at its current config).
        self.federations: Callable[[], Iterable[tuple[str, Federation]]] = lambda: ()
        registry.register(UpstreamCollector(self))
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, bounded(method, HTTP_METHODS), str(status)).inc()
        self._child(self.request_seconds, route).observe(seconds)

    def message(self, route: str, message: Message) -> None:
        method = bounded(message.method, MCP_METHODS)
        self._child(self.mcp_messages, route, method, message.target, message.name, message.outcome).inc()
        self._child(self.mcp_seconds, route, method, message.target).observe(message.seconds)

    def a2a_call(self, route: str, agent: str, method: str, outcome: str) -> None:
        self._child(self.a2a_calls, route, agent, bounded(method, A2A_METHODS), outcome).inc()

    def llm_call(self, route: str, call: Any) -> None:
        """`call`: a gateway.observability.exchange.LlmCall."""
        labels = (route, call.model, call.provider)
        self._child(self.llm_calls, *labels).inc()
        if call.input_tokens:
            self._child(self.llm_tokens, *labels, "input").inc(call.input_tokens)
        if call.output_tokens:
            self._child(self.llm_tokens, *labels, "output").inc(call.output_tokens)
        if call.first_token is not None:
            self._child(self.llm_first_token, *labels).observe(call.first_token)

    def ratelimit_decision(self, route: str, allowed: bool) -> None:
        self._child(self.ratelimit, route, "allowed" if allowed else "limited").inc()


class UpstreamCollector(Collector):
    """Upstream health, session counts and stdio restarts, read from the federations at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("agentplex_upstream_up", "1 if the target is connected", labels=["route", "target"])
        sessions = GaugeMetricFamily(
            "agentplex_upstream_sessions",
            "Client sessions with an upstream session of their own",
            labels=["route", "target"],
        )
        restarts = CounterMetricFamily(
            "agentplex_stdio_restarts", "stdio target processes started again", labels=["route", "target"]
        )
        for route, federation in self.metrics.federations():
            again = federation.restarts()
            for target, state in federation.status().items():
                up.add_metric([route, target], 1.0 if state["connected"] else 0.0)
                sessions.add_metric([route, target], float(state["sessions"]))
                if federation.upstreams[target].spec.transport == "stdio":
                    restarts.add_metric([route, target], float(again.get(target, 0)))
        yield up
        yield sessions
        yield restarts


def totals(metrics: Metrics) -> dict[str, Any]:
    """Running totals for the admin UI's live counters, summed from the counters' samples."""
    statuses: dict[str, float] = {}
    outcomes: dict[str, float] = {}
    tools: dict[tuple[str, str, str], dict[str, Any]] = {}
    a2a: dict[str, float] = {}
    decisions: dict[str, float] = {}
    for labels, value in _samples(metrics.requests):
        klass = f"{labels['status'][:1]}xx"
        statuses[klass] = statuses.get(klass, 0) + value
    for labels, value in _samples(metrics.mcp_messages):
        outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + value
        if labels["method"] == "tools/call" and labels["name"]:
            key = (labels["route"], labels["name"], labels["target"])
            tool = tools.setdefault(key, {"route": key[0], "name": key[1], "target": key[2], "calls": 0, "failed": 0})
            tool["calls"] += value
            if labels["outcome"] != "ok":
                tool["failed"] += value
    for labels, value in _samples(metrics.a2a_calls):
        a2a[labels["outcome"]] = a2a.get(labels["outcome"], 0) + value
    for labels, value in _samples(metrics.ratelimit):
        decisions[labels["decision"]] = decisions.get(labels["decision"], 0) + value
    busiest = sorted(tools.values(), key=lambda tool: (-tool["calls"], tool["route"], tool["name"]))
    models: dict[tuple[str, str, str], dict[str, Any]] = {}
    for labels, value in _samples(metrics.llm_calls):
        key = (labels["route"], labels["model"], labels["provider"])
        models.setdefault(key, {"route": key[0], "model": key[1], "provider": key[2], "calls": 0, "inputTokens": 0,
                                "outputTokens": 0})["calls"] += value
    for labels, value in _samples(metrics.llm_tokens):
        entry = models.get((labels["route"], labels["model"], labels["provider"]))
        if entry is not None:
            entry["inputTokens" if labels["type"] == "input" else "outputTokens"] += value
    return {
        "requests": int(sum(statuses.values())),
        "statuses": {klass: int(n) for klass, n in sorted(statuses.items())},
        "mcpMessages": int(sum(outcomes.values())),
        "mcpOutcomes": {outcome: int(n) for outcome, n in sorted(outcomes.items())},
        "toolCalls": [{**tool, "calls": int(tool["calls"]), "failed": int(tool["failed"])} for tool in busiest[:20]],
        "a2aCalls": int(sum(a2a.values())),
        "a2aOutcomes": {outcome: int(n) for outcome, n in sorted(a2a.items())},
        "rateLimit": {decision: int(n) for decision, n in sorted(decisions.items())},
        # AI routes: calls and tokens per model entry, the busiest first
        "llmModels": [
            {**m, "calls": int(m["calls"]), "inputTokens": int(m["inputTokens"]), "outputTokens": int(m["outputTokens"])}
            for m in sorted(models.values(), key=lambda m: (-m["calls"], m["route"], m["model"]))
        ],
    }


def _samples(counter: Counter) -> Iterator[tuple[dict[str, str], float]]:
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                yield sample.labels, sample.value
