"""The admin API: what the running gateway serves, and a way to reload it, as JSON on `config.adminAddr`.

    GET  /healthz          200 while the process serves
    GET  /readyz           200 when the config is loaded and the MCP routes' targets are up, else 503
    GET  /config           the effective config, secrets redacted (gateway/config/redact.py)
    GET  /targets          per MCP route and target: transport, URL or command, health, era, sessions, last error
    GET  /catalog          per MCP route: the federated tools, prompts, resources and templates with their origin
    GET  /sessions         per MCP route: the live client sessions (id, principal, age)
    GET  /agents           every A2A route's agents with their health
    POST /agents, GET|DELETE /agents/<name>   the `a2a:` block's registry (gateway/a2a_registry.py)
    POST /reload           apply the config file again: 200 with the generation, 422 with the problems

It always answers for the runtime's current config generation. Off loopback it needs `config.adminToken`
(checked when the config loads); with a token, every request but the probes must carry
`Authorization: Bearer <token>`. A browser page cannot drive it: requests whose Origin is another site,
and (without a token) requests whose Host is not a loopback name (DNS rebinding), are refused.
"""

from __future__ import annotations

import hmac
import logging
import socket
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import uvicorn
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.catalog import Kind
from federation.server import Federation
from gateway.a2a_registry import RegistryApi
from gateway.app import Gateway, SignalFreeServer
from gateway.config.models import is_loopback, split_addr
from gateway.config.redact import redacted_args, redacted_config
from protocols.a2a.card import rewrite_card
from protocols.urls import redacted as url_without_credentials

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("agentplex.admin")

PROBES = frozenset({"/healthz", "/readyz"})
PROBE_TIMEOUT = 5.0  # /readyz: how long a target that is not connected gets to connect
LIST_TIMEOUT = 15.0  # /catalog: how long one route's listing may take
_registry_apis: weakref.WeakKeyDictionary[Gateway, RegistryApi] = weakref.WeakKeyDictionary()  # one per generation
_CATALOG: tuple[tuple[Kind, str], ...] = (("tool", "tools"), ("prompt", "prompts"), ("resource", "resources"), ("template", "resourceTemplates"))


class AdminServer:
    """The admin API's socket and uvicorn server, owned by the Runtime (one per process)."""

    def __init__(self, runtime: Runtime, address: str) -> None:
        self.address = address
        self.app = build_admin_app(runtime)
        host, port = split_addr(address)
        config = uvicorn.Config(
            self.app, host=host, port=int(port), lifespan="off", log_level="warning", access_log=False
        )
        self.server = SignalFreeServer(config)
        self.sock: socket.socket | None = None

    def open(self) -> bool:
        """Bind the address; False (with a warning naming it) if it cannot be: the gateway runs without it."""
        host, port = split_addr(self.address)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            logger.warning(
                "admin API: cannot listen on %s (%s); running without it (set config.adminAddr to another"
                " address, or null to turn it off)",
                self.address,
                exc.strerror or exc,
            )
            return False
        sock.set_inheritable(False)
        self.sock = sock
        return True

    @property
    def port(self) -> int | None:
        return self.sock.getsockname()[1] if self.sock is not None else None

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock] if self.sock is not None else None)

    async def started(self) -> None:
        with anyio.fail_after(30):
            while not self.server.started:
                await anyio.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True


def build_admin_app(runtime: Runtime) -> ASGIApp:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "serving", "generation": runtime.generation})

    async def readyz(request: Request) -> Response:
        if runtime.generation < 1:
            return JSONResponse({"ready": False, "reason": "the config is not loaded yet"}, status_code=503)
        down, degraded = await _readiness(runtime.gateway)
        body: dict[str, Any] = {"ready": not down, "generation": runtime.generation, "down": down}
        if degraded:
            body["degraded"] = degraded
        return JSONResponse(body, status_code=200 if not down else 503)

    async def config(request: Request) -> Response:
        return JSONResponse(
            {
                "source": runtime.config.source,
                "generation": runtime.generation,
                "config": redacted_config(runtime.config),
            }
        )

    async def targets(request: Request) -> Response:
        gateway = runtime.gateway
        return JSONResponse({"routes": [_route_targets(gateway, name, fed) for name, fed in gateway.federations]})

    async def catalog(request: Request) -> Response:
        gateway = runtime.gateway
        return JSONResponse({"routes": [await _route_catalog(name, fed) for name, fed in gateway.federations]})

    async def sessions(request: Request) -> Response:
        gateway = runtime.gateway
        routes = [{"route": name, "sessions": endpoints.sessions()} for name, endpoints in gateway.endpoints.items()]
        return JSONResponse({"routes": routes})

    async def agents(request: Request) -> Response:
        gateway = runtime.gateway
        found = [_agent(route, agent) for route, registry in gateway.a2a.registries.items() for agent in registry.all()]
        return JSONResponse({"agents": found})

    async def reload(request: Request) -> Response:
        if not runtime.reloadable:
            return _error(409, "not_reloadable", "this gateway was not started from a config file")
        problems = await runtime.apply()
        if problems:
            body = {"reloaded": False, "generation": runtime.generation, "problems": problems}
            return JSONResponse(body, status_code=422)
        return JSONResponse({"reloaded": True, "generation": runtime.generation, "source": runtime.config.source})

    registry = _RegistryProxy(runtime)
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/config", config, methods=["GET"]),
            Route("/targets", targets, methods=["GET"]),
            Route("/catalog", catalog, methods=["GET"]),
            Route("/sessions", sessions, methods=["GET"]),
            Route("/agents", agents, methods=["GET"]),
            Route("/agents", registry, methods=["POST"]),
            Route("/agents/{name:path}", registry, methods=["GET", "DELETE"]),
            Route("/reload", reload, methods=["POST"]),
        ]
    )
    return _Guarded(app, runtime)


class _RegistryProxy:
    """The `a2a:` block's registry API (gateway/a2a_registry.py) at /agents, as an operator sees it:
    registration allowed, and the cards' URLs those of the gateway's A2A route, not of this address."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.runtime.gateway
        api = _registry_api(gateway)
        if api is None:
            await _error(404, "not_found", "no agent registry: the config has no `a2a:` block")(scope, receive, send)
            return
        path = api.base + scope["path"][len("/agents") :]
        headers = [(k, v) for k, v in scope["headers"] if not k.startswith(b"x-forwarded-") and k != b"host"]
        headers.append((b"host", _a2a_host(gateway).encode()))
        await api({**scope, "path": path, "raw_path": path.encode(), "headers": headers}, receive, send)


class _Guarded:
    """Token, Origin and Host checks in front of the admin routes."""

    def __init__(self, app: Starlette, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return _error(403, "forbidden", "the admin API does not answer other sites' pages (Origin differs)")
        token = self.runtime.config.config.adminToken
        if not token:
            if host and not is_loopback(_hostname(host)):
                return _error(403, "forbidden", f"Host {host!r} is not a loopback name (set adminToken to allow it)")
            return None
        if scope["path"] in PROBES:
            return None
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return _error(
                401,
                "unauthorized",
                "the admin API needs Authorization: Bearer <adminToken>",
                {"www-authenticate": "Bearer"},
            )
        return None


# -- answers ------------------------------------------------------------------------------------


async def _readiness(gateway: Gateway) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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


def _route_targets(gateway: Gateway, route: str, federation: Federation) -> dict[str, Any]:
    targets = []
    for name, state in federation.status().items():
        spec = federation.upstreams[name].spec
        version = state["protocolVersion"]
        entry: dict[str, Any] = {"name": name, "transport": spec.transport}
        if spec.transport == "stdio":
            entry["command"] = [spec.command, *redacted_args(list(spec.args))]
        elif spec.transport == "memory":
            entry["server"] = spec.describe()
        else:
            entry["url"] = url_without_credentials(spec.url) if "@" in spec.url else spec.url
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
                "lastError": state["lastError"],
            }
        )
        targets.append(entry)
    return {
        "route": route,
        "listener": _listener_of(gateway, route),
        "failureMode": federation.settings.failure_mode,
        "targets": targets,
    }


async def _route_catalog(route: str, federation: Federation) -> dict[str, Any]:
    """Every kind listed now from every target: an unfiltered operator view (no caller's rules apply)."""
    catalogs, failures = await federation.survey(LIST_TIMEOUT)
    out: dict[str, Any] = {"route": route}
    for kind, key in _CATALOG:
        out[key] = [_item(kind, exposed, entry) for exposed, entry in catalogs[kind].entries.items()]
    out["failed"] = dict(sorted(failures.items()))
    out["problems"] = [problem for kind, _ in _CATALOG for problem in catalogs[kind].problems]
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


def _agent(route: str, agent: Any) -> dict[str, Any]:
    return {
        "name": agent.name,
        "route": route,
        "url": url_without_credentials(agent.url) if "@" in agent.url else agent.url,
        "health": "up" if agent.healthy and agent.card else "down",
        "lastError": agent.last_error,
        "source": agent.source,
        "version": agent.version,
        "skills": [skill.get("id") for skill in agent.skills()],
    }


def _registry_api(gateway: Gateway) -> RegistryApi | None:
    if gateway.agent_registry is None or gateway.config.a2a is None:
        return None
    api = _registry_apis.get(gateway)
    if api is None:
        api = RegistryApi(gateway.agent_registry, path=gateway.config.a2a.path, rewrite=rewrite_card, allow="true")
        _registry_apis[gateway] = api
    return api


def _a2a_host(gateway: Gateway) -> str:
    """host:port of the `a2a:` route, so the cards the registry API returns point where clients go."""
    for bind in gateway.binds:
        if any(route.name == "a2a" for route in bind.routes):
            host = "127.0.0.1" if bind.address in ("0.0.0.0", "") else "[::1]" if bind.address == "::" else bind.address
            host = f"[{host}]" if ":" in host and not host.startswith("[") else host
            return f"{host}:{bind.bound_port}"
    return "127.0.0.1"


def _listener_of(gateway: Gateway, route: str) -> str | None:
    for bind in gateway.binds:
        if any(r.name == route for r in bind.routes):
            return f"{bind.address}:{bind.bound_port}"
    return None


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)
