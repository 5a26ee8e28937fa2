"""What the admin API and UI show: built from the running gateway, as plain JSON-ready dicts."""

from __future__ import annotations

from typing import Any

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from redis.exceptions import RedisError

from federation.catalog import Kind
from federation.server import Federation
from gateway.app import Gateway
from gateway.observability.metrics import Metrics, totals
from protocols import redaction

PROBE_TIMEOUT = 5.0  # /readyz: how long a target that is not connected gets to connect
LIST_TIMEOUT = 15.0  # /catalog: how long one route's listing may take
CALL_TIMEOUT = 60.0  # POST /call: how long the playground's tools/call may take
CATALOG: tuple[tuple[Kind, str], ...] = (
    ("tool", "tools"),
    ("prompt", "prompts"),
    ("resource", "resources"),
    ("template", "resourceTemplates"),
)


async def readiness(gateway: Gateway) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(targets that keep a route from being ready, targets down on failOpen routes that still serve).

    A failClosed route (the default) refuses new sessions while any target is down, so every target
    counts; a failOpen route serves what is up, so it is ready while at least one target is."""
    down: list[dict[str, Any]] = []
    degraded: list[dict[str, Any]] = []
    for route, federation in gateway.federations:
        failed = await _unreachable(federation)
        if not failed:
            continue
        entries = [{"route": route, "target": name, "error": error} for name, error in failed]
        if federation.settings.failure_mode == "failOpen" and len(failed) < len(federation.upstreams):
            degraded.extend(entries)
        else:
            down.extend(entries)
    return down, degraded


async def _unreachable(federation: Federation) -> list[tuple[str, str]]:
    """Targets without a live session after one (short) attempt to connect the ones that are not connected."""
    failed: list[tuple[str, str]] = []

    async def probe(name: str) -> None:
        upstream = federation.upstreams[name]
        if upstream.connected:
            return
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await upstream.session()
        except MCPError as exc:
            failed.append((name, exc.message))
        except TimeoutError:
            failed.append((name, upstream.last_error or f"no connection within {PROBE_TIMEOUT:g}s"))

    async with anyio.create_task_group() as tg:
        for name in federation.upstreams:
            tg.start_soon(probe, name)
    return sorted(failed)


def route_targets(gateway: Gateway, route: str, federation: Federation) -> dict[str, Any]:
    targets = []
    for name, state in federation.status().items():
        spec = federation.upstreams[name].spec
        version = state["protocolVersion"]
        entry: dict[str, Any] = {"name": name, "transport": spec.transport}
        if spec.transport == "stdio":
            entry["command"] = [spec.command, *redaction.args(spec.args)]
        elif spec.transport == "memory":
            entry["server"] = spec.describe()
        else:
            entry["url"] = redaction.url(spec.url)
        entry.update(
            {
                "health": "up" if state["connected"] else "down",
                "era": spec.era,  # as configured: handshake, modern or auto
                "protocolVersion": version,
                "protocolEra": None
                if version is None
                else "modern"
                if version in MODERN_PROTOCOL_VERSIONS
                else "handshake",
                "sharing": spec.sharing,
                "sessions": state["sessions"],
                "spares": state["spares"],  # connections lent to sessionless callers' calls (federation/spares.py)
                "lastError": state["lastError"],
            }
        )
        targets.append(entry)
    return {
        "route": route,
        "listener": listener_of(gateway, route),
        "failureMode": federation.settings.failure_mode,
        "targets": targets,
    }


async def route_catalog(route: str, federation: Federation) -> dict[str, Any]:
    """Every kind listed now from every target: an unfiltered operator view (no caller's rules apply)."""
    catalogs, failures = await federation.survey(LIST_TIMEOUT)
    out: dict[str, Any] = {"route": route}
    for kind, key in CATALOG:
        out[key] = [_item(kind, exposed, entry) for exposed, entry in catalogs[kind].entries.items()]
    out["failed"] = dict(sorted(failures.items()))
    out["problems"] = [problem for kind, _ in CATALOG for problem in catalogs[kind].problems]
    return out


def _item(kind: str, exposed: str, entry: Any) -> dict[str, Any]:
    item = entry.item
    if kind in ("tool", "prompt"):
        return {
            "name": exposed,
            "target": entry.target,
            "originalName": entry.original,
            "description": getattr(item, "description", None),
        }
    key = "uri" if kind == "resource" else "uriTemplate"
    return {
        key: exposed,
        "target": entry.target,
        f"original{key[0].upper()}{key[1:]}": entry.original,
        "name": getattr(item, "name", None),
    }


def agent_view(route: str, agent: Any) -> dict[str, Any]:
    return {
        "name": agent.name,
        "route": route,
        "url": redaction.url(agent.url),
        "health": "up" if agent.healthy and agent.card else "down",
        "lastError": agent.last_error,
        "source": agent.source,
        "version": agent.version,
        "skills": [skill.get("id") for skill in agent.skills()],
    }


def listener_of(gateway: Gateway, route: str) -> str | None:
    for bind in gateway.binds:
        if any(r.name == route for r in bind.routes):
            return f"{bind.address}:{bind.bound_port}"
    return None


def agents(gateway: Gateway) -> list[dict[str, Any]]:
    return [agent_view(route, agent) for route, registry in gateway.a2a.registries.items() for agent in registry.all()]


def stats(gateway: Gateway, metrics: Metrics | None) -> dict[str, Any]:
    """The live counters: totals since the process started (when metrics are on) and what is up now."""
    targets = [state for _, federation in gateway.federations for state in federation.status().values()]
    now = {
        "targets": len(targets),
        "targetsUp": sum(1 for state in targets if state["connected"]),
        "sessions": sum(len(endpoints.sessions()) for endpoints in gateway.endpoints.values()),
        "agents": len(agents(gateway)),
    }
    return {"now": now, "totals": totals(metrics) if metrics is not None else None}


async def call_tool(gateway: Gateway, body: Any, timeout: float = CALL_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """POST /call: one tools/call made by an operator (the UI's playground), as (status, answer).

    It runs on the route's shared upstream with no caller, so no caller's rules or rate limits apply; it
    is counted and traced like any tools/call. A tool's own failure (isError) is a 200 with that result.
    """
    if not isinstance(body, dict) or not isinstance(body.get("route"), str) or not isinstance(body.get("tool"), str):
        return 400, _problem("bad_request", 'expected a JSON object {"route": str, "tool": str, "arguments": {...}}')
    arguments = body.get("arguments", {})
    if not isinstance(arguments, dict):
        return 400, _problem("bad_request", "arguments must be a JSON object")
    route, tool = body["route"], body["tool"]
    federation = dict(gateway.federations).get(route)
    if federation is None:
        return 404, _problem("unknown_route", f"no MCP route named {route!r}")
    try:
        result = await federation.operator_call(tool, arguments, timeout)
    except MCPError as exc:
        if exc.error.code == INVALID_PARAMS and exc.error.message == f"Unknown tool: {tool}":
            return 404, _problem("unknown_tool", f"route {route!r} serves no tool named {tool!r}")
        return 502, {**_problem("call_failed", exc.error.message), "code": exc.error.code}
    answer = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return 200, {"route": route, "tool": tool, "result": answer}


def _problem(error: str, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": description}


async def replicas(gateway: Gateway) -> dict[str, Any]:
    """With `config.cluster`: this replica's id, and every live replica with its sessions (from Redis)."""
    if gateway.cluster is None:
        return {}
    cluster = gateway.cluster.value
    try:
        with anyio.fail_after(2 * cluster.settings.redis.timeout + 1):
            return {"replica": cluster.id, "replicas": await cluster.replicas()}
    except (RedisError, OSError, TimeoutError) as exc:
        return {"replica": cluster.id, "replicas": None, "replicasError": f"Redis did not answer: {exc or 'timeout'}"}
