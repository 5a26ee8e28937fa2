"""A2A config: the short `a2a:` block (agents by name and URL, the registry, tools) and the `a2a` route policy."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .base import AbsolutePath, Duration, Name, Port, _http_url, _Model, _problem_at
from .policies import CelExpr, Policies, RedisConnection

MAX_AGENT_NAME = 64  # an agent's name is a path segment and a tool name prefix: keep it short


def _short(value: str) -> str:
    if len(value) > MAX_AGENT_NAME:
        raise ValueError(f"is {len(value)} characters long; an agent's name has at most {MAX_AGENT_NAME}")
    return value


class AgentConfig(_Model):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: Annotated[Name, AfterValidator(_short)]
    url: Annotated[str, AfterValidator(_http_url)]  # the agent's base URL: its card is at <url>/.well-known/...
    headers: dict[str, str] = Field(default_factory=dict)  # sent to the agent (credentials from ${ENV})


class RegistryConfig(_Model):
    """Where runtime registrations persist: an embedded SQLite file (default) or Redis (shared by replicas)."""

    sqlite: str | None = "agentplex-agents.db"  # relative to the working directory
    redis: RedisConnection | None = None
    prefix: str = "agentplex:agents"  # Redis key prefix
    healthInterval: Duration = 30.0  # how often every agent's card is fetched to check it is up


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r} (expected an address or a CIDR such as 127.0.0.0/8)") from None
    return value


class Registration(_Model):
    """Runtime registration through the API: allowed for callers this CEL rule admits (none by default).

    A registered agent must live at a public address: loopback, private, link-local and other non-public
    networks are refused unless listed in `allowNetworks`; the gateway's own listening addresses always are."""

    allow: CelExpr = "false"
    allowNetworks: list[Annotated[str, AfterValidator(_network)]] = Field(default_factory=list)


class AgentTools(_Model):
    """Agents as tools of the `mcp:` block's federated server (a target named `target`)."""

    target: Name = "agents"
    agents: list[str] = Field(default_factory=list)  # empty: every agent
    skills: bool = False  # one tool per skill (`<agent>.<skill id>`) instead of one per agent
    timeout: Duration = 300.0


class A2aShort(_Model):
    """The short A2A shape: agents under `<path>/<name>/`, the registry API at `<path>/agents`."""

    port: Port = 3000  # may equal the `mcp:` block's port: then one listener serves both
    address: str = "127.0.0.1"
    path: AbsolutePath = "/a2a"
    agents: list[AgentConfig] = Field(default_factory=list)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    registration: Registration = Field(default_factory=Registration)
    tools: AgentTools | None = None
    policies: Policies | None = None

    @model_validator(mode="after")
    def _unique(self) -> A2aShort:
        seen: dict[str, str] = {}  # lower-cased -> as written: names differing only in case are one name
        for index, agent in enumerate(self.agents):
            if agent.name.lower() in ("agents", ".", ".."):
                raise _problem_at(("agents", index, "name"), f"{agent.name!r} is reserved (the registry API lives at <path>/agents)")
            if agent.name.lower() in seen:
                first = seen[agent.name.lower()]
                also = "" if first == agent.name else f" (names differing only in case clash with {first!r})"
                raise _problem_at(("agents", index, "name"), f"duplicate agent name {agent.name!r}{also}")
            seen[agent.name.lower()] = agent.name
        if self.path.rstrip("/") == "":
            raise _problem_at(("path",), "must not be '/' (agents live under it)")
        return self
