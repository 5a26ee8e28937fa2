"""The admin web UI at /ui: server-rendered pages over the same views as the JSON API, plus a little
JavaScript (static/ui.js) for the catalog search, the playground's call and the live counters.

    /ui             dashboard: readiness, listeners and routes, targets and their health, live counters
    /ui/catalog     the federated tools, prompts, resources and templates, with search (?q=)
    /ui/playground  call one tool through a form generated from its input schema (POST /call)
    /ui/agents      the A2A agents and their health
    /ui/config      the effective config (secrets redacted), and a reload button (POST /reload)
    /ui/login       with config.adminToken: the token, kept in an HttpOnly, SameSite=Strict cookie
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.admin import views
from gateway.admin.schema_form import form_fields
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


def ui_cookie(token: str) -> str:
    """The sign-in cookie's value: derived from the admin token, so the cookie never holds the token itself."""
    return hmac.new(token.encode(), b"agentplex admin ui", hashlib.sha256).hexdigest()


def ui_routes(runtime: Runtime) -> list[BaseRoute]:
    def page(request: Request, name: str, **context: Any) -> Response:
        context.setdefault("generation", runtime.generation)
        context.setdefault("token_login", bool(runtime.config.config.adminToken))
        return templates.TemplateResponse(request, name, context, headers=PAGE_HEADERS)

    async def dashboard(request: Request) -> Response:
        gateway = runtime.gateway
        down, degraded = await views.readiness(gateway)
        return page(
            request,
            "dashboard.html",
            active="dashboard",
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
        )

    async def catalog(request: Request) -> Response:
        gateway = runtime.gateway
        query = request.query_params.get("q", "").strip()
        routes = [await views.route_catalog(name, federation) for name, federation in gateway.federations]
        return page(request, "catalog.html", active="catalog", routes=routes, query=query)

    async def playground(request: Request) -> Response:
        gateway = runtime.gateway
        federations = dict(gateway.federations)
        route, tool = request.query_params.get("route", ""), request.query_params.get("tool", "")
        choices: list[dict[str, Any]] = []
        for name, federation in federations.items():
            catalogs, _ = await federation.survey(views.LIST_TIMEOUT, kinds=("tool",))
            choices.extend({"route": name, "tool": exposed} for exposed in catalogs["tool"].entries)
            if name == route and tool in catalogs["tool"].entries:
                entry = catalogs["tool"].entries[tool]
                selected = {
                    "route": name,
                    "tool": tool,
                    "target": entry.target,
                    "description": entry.item.description,
                    "fields": form_fields(entry.item.input_schema),
                    "schema": entry.item.input_schema,
                }
                return page(request, "playground.html", active="playground", choices=choices, selected=selected)
        missing = f"route {route!r} serves no tool named {tool!r}" if route or tool else None
        return page(request, "playground.html", active="playground", choices=choices, selected=None, missing=missing)

    async def agents(request: Request) -> Response:
        return page(request, "agents.html", active="agents", agents=views.agents(runtime.gateway))

    async def config(request: Request) -> Response:
        return page(
            request,
            "config.html",
            active="config",
            source=runtime.config.source,
            config=redacted_config(runtime.config),
            reloadable=runtime.reloadable,
        )

    async def login(request: Request) -> Response:
        token = runtime.config.config.adminToken
        if request.method == "GET":
            return page(request, "login.html", active=None, failed=False)
        form = await request.form()
        given = str(form.get("token", ""))
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return page(request, "login.html", active=None, failed=True)
        response = RedirectResponse("/ui", status_code=303)
        response.set_cookie(COOKIE, ui_cookie(token), httponly=True, samesite="strict", path="/")
        return response

    return [
        Route("/ui", dashboard, methods=["GET"]),
        Route("/ui/catalog", catalog, methods=["GET"]),
        Route("/ui/playground", playground, methods=["GET"]),
        Route("/ui/agents", agents, methods=["GET"]),
        Route("/ui/config", config, methods=["GET"]),
        Route(LOGIN, login, methods=["GET", "POST"]),
        Mount(STATIC, StaticFiles(directory=HERE / "static"), name="static"),
    ]
