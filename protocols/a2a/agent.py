"""An A2A agent as the gateway knows it: where it is and the card it served (the wire-level record).

Kept in protocols/ so card fetching (protocols/a2a/card.py) needs nothing above it; the registry
(federation/agents.py) builds on it.
"""

from __future__ import annotations

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
    full_rewrite: bool = False  # a route's full urlRewrite: every request, the card's too, goes to `url` itself
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
    full_rewrite: bool = False
