"""Redirects from an agent: a Location (or Content-Location) naming the agent's own address is moved to the
gateway's URL for that agent, so its internal address never reaches the client."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.a2a.harness import a2a_yaml
from tests.conftest import run_gateway
from tests.fixtures.a2a_agent import serve

pytestmark = pytest.mark.anyio


def redirecting_agent(base: str) -> Starlette:
    """A card, and `/go/<kind>` answering with a Location of that kind; `/moved` an answer with a Content-Location."""
    card = {"name": "mover", "supportedInterfaces": [{"url": base + "/", "protocolBinding": "HTTP+JSON"}]}
    host = base.removeprefix("http://")
    targets = {
        "absolute": f"{base}/tasks/1?view=full#top",
        "scheme-relative": f"//{host}/tasks/2",
        "path": "/tasks/3",
        "relative": "tasks/4",
        "elsewhere": "https://example.com/login",
    }

    async def serve_card(request: Request) -> JSONResponse:
        return JSONResponse(card)

    async def go(request: Request) -> Response:
        return Response(status_code=302, headers={"location": targets[request.path_params["kind"]]})

    async def moved(request: Request) -> Response:
        return JSONResponse({"id": "t9"}, headers={"content-location": f"{base}/tasks/t9"})

    return Starlette(
        routes=[
            Route("/.well-known/agent-card.json", serve_card),
            Route("/go/{kind}", go),
            Route("/moved", moved),
        ]
    )


async def test_locations_naming_the_agent_point_at_the_gateway() -> None:
    async with (
        serve(redirecting_agent) as agent,  # type: ignore[arg-type]
        run_gateway(a2a_yaml({"mover": agent.url})) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=20) as http,
    ):
        public = f"http://127.0.0.1:{gw.port}/a2a/mover"
        expected = {
            "absolute": f"{public}/tasks/1?view=full#top",
            "scheme-relative": f"{public}/tasks/2",
            "path": f"{public}/tasks/3",
            "relative": "tasks/4",  # resolves against the gateway's URL already
            "elsewhere": "https://example.com/login",
        }
        for kind, location in expected.items():
            answer = await http.get(f"/a2a/mover/go/{kind}")
            assert answer.status_code == 302, (kind, answer.text)
            assert answer.headers.get("location") == location, kind
        created = await http.get("/a2a/mover/moved")
        assert created.status_code == 200 and created.headers["content-location"] == f"{public}/tasks/t9"
        port = agent.url.rsplit(":", 1)[1]
        assert all(port not in value for value in created.headers.values())
