"""The A2A agent registry: agents from config and registered at runtime, with their (original) cards.

The registry knows agents by name. An agent's card is fetched and validated when it is added
(protocols/a2a/card.py); the gateway serves a rewritten copy. This module is the interface the
A2A front end, the registration API, discovery and the agents-as-MCP-tools bridge share.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

AgentSource = Literal["config", "runtime"]


@dataclass
class Agent:
    """One agent as the gateway knows it."""

    name: str
    url: str  # base URL: its card is at <url>/.well-known/agent-card.json (0.3: agent.json)
    card: dict[str, Any] = field(default_factory=dict)  # the agent's own card, as it served it (JSON)
    version: Literal["1.0", "0.3"] = "1.0"
    source: AgentSource = "config"
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request to the agent
    healthy: bool = True
    last_error: str | None = None

    def skills(self) -> list[dict[str, Any]]:
        skills = self.card.get("skills")
        return [s for s in skills if isinstance(s, dict)] if isinstance(skills, list) else []


@dataclass(frozen=True)
class AgentSpec:
    """What is needed to add an agent: the card is fetched from `url`."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    source: AgentSource = "config"


CardFetcher = Callable[[AgentSpec], Any]  # async (spec) -> Agent (card fetched and validated), raises ValueError


class AgentRegistry:
    """Agents by name. Config agents are added at start; runtime ones come and go through `register`.

    `fetch` turns a spec into an Agent (fetching and validating the card); a failure raises ValueError
    with a message that names the agent. Config agents whose card cannot be fetched at start are kept,
    marked unhealthy, and retried by the health check: an agent that is down is marked, not dropped.
    """

    def __init__(self, specs: Sequence[AgentSpec], fetch: CardFetcher) -> None:
        self.specs = list(specs)
        self.fetch = fetch
        self.agents: dict[str, Agent] = {}
        self._listeners: list[Callable[[], Any]] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AgentRegistry]:
        for spec in self.specs:
            await self.add(spec, strict=False)
        yield self

    def get(self, name: str) -> Agent | None:
        return self.agents.get(name)

    def all(self) -> list[Agent]:
        return list(self.agents.values())

    async def add(self, spec: AgentSpec, *, strict: bool = True) -> Agent:
        """Fetch the card and add (or replace) the agent. strict=False keeps it, unhealthy, on failure."""
        try:
            agent = await self.fetch(spec)
        except ValueError as exc:
            if strict:
                raise
            agent = Agent(spec.name, spec.url, source=spec.source, headers=dict(spec.headers))
            agent.healthy, agent.last_error = False, str(exc)
        self.agents[spec.name] = agent
        self._changed()
        return agent

    async def register(self, spec: AgentSpec) -> Agent:
        """A runtime registration: the card must be good now."""
        return await self.add(AgentSpec(spec.name, spec.url, dict(spec.headers), "runtime"))

    async def remove(self, name: str) -> bool:
        found = self.agents.pop(name, None) is not None
        if found:
            self._changed()
        return found

    def on_change(self, listener: Callable[[], Any]) -> None:
        """Call `listener()` whenever the set of agents or a card changes (the MCP tool bridge listens)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
