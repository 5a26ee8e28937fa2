"""The admin API: what the running gateway serves, and a way to reload it, as JSON on `config.adminAddr`.

    GET  /healthz          200 while the process serves
    GET  /readyz           200 when the config is loaded and the MCP routes' targets are up, else 503
    GET  /config           the effective config, secrets redacted (gateway/config/redact.py)
    GET  /targets          per MCP route and target: transport, URL or command, health, era, sessions, last error
    GET  /catalog          per MCP route: the federated tools, prompts, resources and templates with their origin
    GET  /sessions         per MCP route: the live client sessions (id, principal, age); with `config.cluster`,
                           also every live replica's (`replicas`)
    GET  /agents           every A2A route's agents with their health
    GET  /stats            live counters: targets up, sessions, agents, and totals since start (with metrics on)
    POST /call             {"route", "tool", "arguments"}: call one tool as the operator (the UI playground)
    GET  /ui               the web UI (gateway/admin/ui.py)
    POST /agents, GET|DELETE /agents/<name>   the `a2a:` block's registry (gateway/a2a_registry.py)
    POST /reload           apply the config file again: 200 with the generation, 422 with the problems

It always answers for the runtime's current config generation. Off loopback it needs `config.adminToken`
(checked when the config loads); with a token, every request but the probes must carry
`Authorization: Bearer <token>` or the cookie the UI's sign-in page sets. A browser page of another
site cannot drive it: requests whose Origin is another site, and (without a token) requests whose
Host is not a loopback name (DNS rebinding), are refused.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.a2a_registry import RegistryApi
from gateway.admin import views
from gateway.admin.throttle import FailureThrottle
from gateway.admin.ui import COOKIE, LOGIN, STATIC, SignIns, ui_routes
from gateway.app import Gateway, SignalFreeServer
from gateway.config.models import is_loopback, split_addr
from gateway.config.redact import redacted_config
from gateway.http_limits import OPERATOR_CONCURRENCY, server_config
from gateway.listening import tcp_listener
from protocols.a2a.card import rewrite_card

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("agentplex.admin")

PROBES = frozenset({"/healthz", "/readyz"})
_registry_apis: weakref.WeakKeyDictionary[Gateway, RegistryApi] = weakref.WeakKeyDictionary()  # one per generation


class AdminServer:
    """The admin API's socket and uvicorn server, owned by the Runtime (one per process)."""

    def __init__(self, runtime: Runtime, address: str) -> None:
        self.address = address
        self.app = build_admin_app(runtime)
        host, port = split_addr(address)
        config = server_config(self.app, concurrency=OPERATOR_CONCURRENCY, host=host, port=int(port))
        self.server = SignalFreeServer(config)
        self.sock: socket.socket | None = None

    def open(self) -> bool:
        """Bind the address; False (with a warning naming it) if it cannot be: the gateway runs without it."""
        host, port = split_addr(self.address)
        try:
            self.sock = tcp_listener(host, int(port))
        except OSError as exc:
            logger.warning(
                "admin API: cannot listen on %s (%s); running without it (set config.adminAddr to another"
                " address, or null to turn it off)",
                self.address,
                exc.strerror or exc,
            )
            return False
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
        down, degraded = await views.readiness(runtime.gateway)
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
        return JSONResponse({"routes": [views.route_targets(gateway, name, fed) for name, fed in gateway.federations]})

    async def catalog(request: Request) -> Response:
        gateway = runtime.gateway
        return JSONResponse({"routes": [await views.route_catalog(name, fed) for name, fed in gateway.federations]})

    async def sessions(request: Request) -> Response:
        gateway = runtime.gateway
        routes = [{"route": name, "sessions": endpoints.sessions()} for name, endpoints in gateway.endpoints.items()]
        return JSONResponse({"routes": routes, **await views.replicas(gateway)})

    async def agents(request: Request) -> Response:
        return JSONResponse({"agents": views.agents(runtime.gateway)})

    async def stats(request: Request) -> Response:
        return JSONResponse(views.stats(runtime.gateway, runtime.metrics))

    async def call(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "bad_request", "the body is not JSON")
        status, answer = await views.call_tool(runtime.gateway, body)
        if status == 200:
            logger.info("admin: called tool %s on route %s", body["tool"], body["route"])
        return JSONResponse(answer, status_code=status)

    async def reload(request: Request) -> Response:
        if not runtime.reloadable:
            return _error(409, "not_reloadable", "this gateway was not started from a config file")
        problems = await runtime.apply()
        if problems:
            body = {"reloaded": False, "generation": runtime.generation, "problems": problems}
            return JSONResponse(body, status_code=422)
        return JSONResponse({"reloaded": True, "generation": runtime.generation, "source": runtime.config.source})

    registry = _RegistryProxy(runtime)
    signins, throttle = SignIns(), FailureThrottle()
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
            Route("/stats", stats, methods=["GET"]),
            Route("/call", call, methods=["POST"]),
            *ui_routes(runtime, signins, throttle),
        ]
    )
    return _Guarded(app, runtime, signins, throttle)


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

    def __init__(self, app: Starlette, runtime: Runtime, signins: SignIns, throttle: FailureThrottle) -> None:
        self.app = app
        self.runtime = runtime
        self.signins = signins
        self.throttle = throttle  # wrong bearer tokens count as wrong sign-ins do

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
        path = scope["path"]
        if path in PROBES or path == LOGIN or path.startswith(STATIC + "/"):
            return None
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer":
            address = scope["client"][0] if scope.get("client") else ""
            wait = self.throttle.retry_after(address)
            if wait is not None:
                problem = f"too many wrong admin tokens from this address; retry in {wait} s"
                return _error(429, "too_many_requests", problem, {"retry-after": str(wait)})
            if hmac.compare_digest(value.strip().encode(), token.encode()):
                self.throttle.succeeded(address)
                return None
            self.throttle.failed(address)
        if self.signins.valid(cookie_parser(headers.get("cookie", "")).get(COOKIE, ""), token):
            return None
        if path == "/ui" or path.startswith("/ui/"):
            return RedirectResponse(LOGIN, status_code=303)
        return _error(
            401,
            "unauthorized",
            "the admin API needs Authorization: Bearer <adminToken>",
            {"www-authenticate": "Bearer"},
        )


def _registry_api(gateway: Gateway) -> RegistryApi | None:
    if gateway.agent_registry is None or gateway.config.a2a is None:
        return None
    api = _registry_apis.get(gateway)
    if api is None:
        api = RegistryApi(
            gateway.agent_registry,
            path=gateway.config.a2a.path,
            rewrite=rewrite_card,
            allow="true",
            addresses=gateway.a2a.addresses,  # the operator too: the gateway is no way into itself
        )
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


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)
