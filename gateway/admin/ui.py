"""The admin web UI at /ui: server-rendered pages over the same views as the JSON API, plus a little
JavaScript (static/ui.js) for the catalog search, the playground's call and the live counters.

    /ui             dashboard: readiness, listeners and routes, targets and their health, live counters
    /ui/catalog     the federated tools, prompts, resources and templates, with search (?q=)
    /ui/playground  call one tool through a form generated from its input schema (POST /call)
    /ui/agents      the A2A agents and their health
    /ui/config      the effective config (secrets redacted), and a reload button (POST /reload)
    /ui/login       with config.adminToken: signs a browser in (a random id in an HttpOnly, SameSite=Strict cookie);
                    five wrong tokens in a minute from one address get 429 until the oldest is a minute old
    /ui/logout      signs it out
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.admin import views
from gateway.admin.schema_form import form_fields, takes_more
from gateway.admin.throttle import FailureThrottle
from gateway.config.redact import redacted_config

if TYPE_CHECKING:
    from gateway.runtime import Runtime

HERE = Path(__file__).parent
COOKIE = "agentplex-admin"
LOGIN = "/ui/login"
STATIC = "/ui/static"
# Defence in depth for pages that show what upstreams wrote (descriptions, errors): no inline script
# runs even if escaping ever failed, and no other site may frame the pages (clickjacking).
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # not no-referrer: Chromium would then send `Origin: null` on our own POSTs
    "cache-control": "no-store",
}
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=False)


class SignIns:
    """Browsers signed in to the UI: random ids that expire, kept in memory (a restart signs everyone out).

    The cookie holds only the id, never the token or anything derived from it; an id is also void once
    the admin token it was given for changes. The gateway never passes it on to backends (its name starts
    with `agentplex-`, protocols/a2a/proxy.py), though browsers send it to every port of the host."""

    lifetime = 12 * 3600.0
    most = 1000  # signed-in browsers kept at once; the oldest go first

    def __init__(self) -> None:
        self._ids: dict[str, tuple[float, bytes]] = {}  # id -> (expires at, the token's fingerprint)

    def start(self, token: str) -> str:
        now = time.monotonic()
        self._ids = {sid: held for sid, held in self._ids.items() if held[0] > now}
        while len(self._ids) >= self.most:
            del self._ids[next(iter(self._ids))]
        sid = secrets.token_urlsafe(32)
        self._ids[sid] = (now + self.lifetime, _fingerprint(token))
        return sid

    def valid(self, sid: str, token: str) -> bool:
        held = self._ids.get(sid)
        if held is None:
            return False
        if held[0] <= time.monotonic() or not hmac.compare_digest(held[1], _fingerprint(token)):
            del self._ids[sid]
            return False
        return True

    def end(self, sid: str) -> None:
        self._ids.pop(sid, None)


def _fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def ui_routes(runtime: Runtime, signins: SignIns, throttle: FailureThrottle) -> list[BaseRoute]:
    def page(
        request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> Response:
        context.setdefault("active", name.removesuffix(".html"))
        context.setdefault("generation", runtime.generation)
        context.setdefault("token_login", bool(runtime.config.config.adminToken))
        headers = {**PAGE_HEADERS, **(headers or {})}
        return templates.TemplateResponse(request, name, context, status_code=status, headers=headers)

    async def dashboard(request: Request) -> Response:
        gateway = runtime.gateway
        down, degraded = await views.readiness(gateway)
        cluster = await views.replicas(gateway)  # {} without config.cluster
        others = [r for r in cluster.get("replicas") or [] if r["id"] != cluster.get("replica")]
        return page(
            request,
            "dashboard.html",
            ready=not down,
            down=down,
            degraded=degraded,
            listeners=[
                {"address": f"{bind.address}:{bind.bound_port}", "routes": [route.name for route in bind.routes]}
                for bind in gateway.binds
            ],
            routes=[views.route_targets(gateway, name, federation) for name, federation in gateway.federations],
            sessions=[
                {"route": name, **session} for name, endpoints in gateway.endpoints.items() for session in endpoints.sessions()
            ],
            stats=views.stats(gateway, runtime.metrics),
            replicas=others if cluster else None,
            replicas_error=cluster.get("replicasError"),
        )

    async def catalog(request: Request) -> Response:
        gateway = runtime.gateway
        query = request.query_params.get("q", "").strip()
        routes = [await views.route_catalog(name, federation) for name, federation in gateway.federations]
        # every word must appear in the row (name, target, upstream name, description), as the page's search does
        return page(request, "catalog.html", routes=routes, query=query, words=query.lower().split())

    async def playground(request: Request) -> Response:
        gateway = runtime.gateway
        federations = dict(gateway.federations)
        route, tool = request.query_params.get("route", ""), request.query_params.get("tool", "")
        choices: list[dict[str, Any]] = []
        failed: list[str] = []  # targets whose tools could not be listed: they are missing from the choices
        for name, federation in federations.items():
            catalogs, failures = await federation.survey(views.LIST_TIMEOUT, kinds=("tool",))
            failed.extend(f"route {name}, target {target}: {why}" for target, why in sorted(failures.items()))
            choices.extend({"route": name, "tool": exposed} for exposed in catalogs["tool"].entries)
            if name == route and tool in catalogs["tool"].entries:
                entry = catalogs["tool"].entries[tool]
                schema = entry.item.input_schema
                fields = form_fields(schema)
                selected = {
                    "route": name,
                    "tool": tool,
                    "target": entry.target,
                    "description": entry.item.description,
                    "fields": fields,
                    "more": takes_more(schema) or not fields,  # a JSON box for what the fields cannot hold
                    "schema": schema,
                }
                return page(request, "playground.html", choices=choices, selected=selected, failed=failed)
        missing = f"route {route!r} serves no tool named {tool!r}" if route or tool else None
        return page(request, "playground.html", choices=choices, selected=None, missing=missing, failed=failed)

    async def agents(request: Request) -> Response:
        return page(request, "agents.html", agents=views.agents(runtime.gateway))

    async def config(request: Request) -> Response:
        return page(
            request,
            "config.html",
            source=runtime.config.source,
            config=redacted_config(runtime.config),
            reloadable=runtime.reloadable,
        )

    async def login(request: Request) -> Response:
        token = runtime.config.config.adminToken
        if request.method == "GET":
            return page(request, "login.html", active=None, failed=False)
        address = request.client.host if request.client else ""
        wait = throttle.retry_after(address)
        if wait is not None:  # the token is not even compared: a right guess must look like a wrong one
            return page(request, "login.html", 429, {"retry-after": str(wait)}, active=None, failed=False, wait=wait)
        form = await request.form()
        given = str(form.get("token", ""))
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            throttle.failed(address)
            return page(request, "login.html", active=None, failed=True)
        throttle.succeeded(address)
        response = RedirectResponse("/ui", status_code=303)
        max_age = int(SignIns.lifetime)
        response.set_cookie(COOKIE, signins.start(token), max_age=max_age, httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request) -> Response:
        signins.end(request.cookies.get(COOKIE, ""))
        response = RedirectResponse(LOGIN if runtime.config.config.adminToken else "/ui", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return [
        Route("/ui", dashboard, methods=["GET"]),
        Route("/ui/catalog", catalog, methods=["GET"]),
        Route("/ui/playground", playground, methods=["GET"]),
        Route("/ui/agents", agents, methods=["GET"]),
        Route("/ui/config", config, methods=["GET"]),
        Route(LOGIN, login, methods=["GET", "POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Mount(STATIC, StaticFiles(directory=HERE / "static"), name="static"),
    ]
