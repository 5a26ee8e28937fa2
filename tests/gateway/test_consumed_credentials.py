"""The credentials an authentication policy reads are the gateway's: whatever header, cookie or query parameter
jwtAuth, apiKey, basicAuth or mcpAuthentication consumed never reaches an A2A agent, a plain HTTP backend or a
mirror; backendAuth says what the backend gets instead (passthrough: the caller's validated token)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import bcrypt
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.a2a.harness import a2a_yaml
from tests.conftest import http_route_yaml, run_gateway
from tests.fixtures.a2a_agent import serve
from tests.gateway.test_auth import SIGNER, jwt_policy
from tests.gateway.test_mirror import mirror_policy, recording_app

pytestmark = pytest.mark.anyio

LOCATION = "{header: x-api-key, prefix: '', queryParameter: api_key}"
API_KEY = f"{{apiKey: {{keys: [{{key: sk-agent-caller}}], location: {LOCATION}}}}}"


def card_and_echo(base: str, seen: list[dict[str, Any]]) -> Starlette:
    """An agent that serves a card and records every other request (headers, query) as it got it."""
    card = {"name": "raw", "supportedInterfaces": [{"url": base + "/", "protocolBinding": "HTTP+JSON"}]}

    async def serve_card(request: Request) -> JSONResponse:
        return JSONResponse(card)

    async def record(request: Request) -> JSONResponse:
        seen.append({"query": request.url.query, "headers": dict(request.headers)})
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/.well-known/agent-card.json", serve_card),
            Route("/{path:path}", record, methods=["GET", "POST"]),
        ]
    )


async def test_an_api_key_from_a_header_or_the_query_does_not_reach_the_agent() -> None:
    seen: list[dict[str, Any]] = []
    async with serve(lambda base: card_and_echo(base, seen)) as agent:  # type: ignore[arg-type,return-value]
        yaml = a2a_yaml({"raw": agent.url}, policies=f"  policies: {API_KEY}\n")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            url = f"http://127.0.0.1:{gw.port}/a2a/raw/tasks/t1"
            assert (await http.get(url)).status_code == 401
            sent = await http.get(url, headers={"x-api-key": "sk-agent-caller", "x-custom": "kept"})
            assert sent.status_code == 200, sent.text
            by_query = await http.get(url + "?x=1&api_%6Bey=sk-agent-caller&api_key=again&y=a%20b")
            assert by_query.status_code == 200, by_query.text
    header, query = seen
    assert "x-api-key" not in header["headers"] and header["headers"]["x-custom"] == "kept"
    assert query["query"] == "x=1&y=a%20b"  # the rest as the client encoded it
    assert "sk-agent-caller" not in json.dumps(seen)


async def test_a_jwt_from_a_cookie_reaches_neither_the_backend_nor_its_mirror() -> None:
    real: list[dict[str, Any]] = []
    copies: list[dict[str, Any]] = []
    token = SIGNER.token("alice")
    cookie_jwt = jwt_policy(extra=", location: {header: null, cookie: session}")[1:-1]
    async with (
        serve(lambda base: recording_app(real)) as backend,  # type: ignore[arg-type,return-value]
        serve(lambda base: recording_app(copies)) as mirror,  # type: ignore[arg-type,return-value]
    ):
        policies = f"{{{cookie_jwt}, {mirror_policy(mirror.url, 1.0)[1:-1]}}}"
        async with run_gateway(http_route_yaml(backend.url, policies)) as gw, httpx.AsyncClient(timeout=20) as http:
            url = f"http://127.0.0.1:{gw.port}/api/items"
            assert (await http.get(url)).status_code == 401
            answer = await http.get(url, headers={"cookie": f"theme=dark; session={token}; lang=en"})
            assert answer.status_code == 200, answer.text
            only = await http.get(url, headers={"cookie": f"session={token}"})
            assert only.status_code == 200, only.text
            with anyio.fail_after(10):
                while len(copies) < 2:
                    await anyio.sleep(0.02)
    for got in (*real, *copies):
        assert token not in json.dumps(got["headers"]), got
    assert real[0]["headers"]["cookie"] == "theme=dark; lang=en" == copies[0]["headers"]["cookie"]
    assert "cookie" not in real[1]["headers"] and "cookie" not in copies[1]["headers"]  # nothing else was left


async def test_passthrough_sends_the_callers_token_and_nothing_else() -> None:
    real: list[dict[str, Any]] = []
    token = SIGNER.token("alice")
    cookie_jwt = jwt_policy(extra=", location: {header: null, cookie: session}")[1:-1]
    async with serve(lambda base: recording_app(real)) as backend:  # type: ignore[arg-type,return-value]
        policies = f"{{{cookie_jwt}, backendAuth: {{passthrough: {{}}}}}}"
        async with run_gateway(http_route_yaml(backend.url, policies)) as gw, httpx.AsyncClient(timeout=20) as http:
            answer = await http.get(f"http://127.0.0.1:{gw.port}/api/x", headers={"cookie": f"session={token}; a=1"})
            assert answer.status_code == 200, answer.text
    (got,) = real
    assert got["headers"]["authorization"] == f"Bearer {token}" and got["headers"]["cookie"] == "a=1"


async def test_basic_auth_credentials_stay_with_the_gateway() -> None:
    """(Authorization never went on; kept as a check that basicAuth's place is consumed like the others.)"""
    real: list[dict[str, Any]] = []
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    policies = f"{{basicAuth: {{htpasswd: {{inline: 'ann:{hashed}'}}}}}}"
    async with (
        serve(lambda base: recording_app(real)) as backend,  # type: ignore[arg-type,return-value]
        run_gateway(http_route_yaml(backend.url, policies)) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        answer = await http.get(f"http://127.0.0.1:{gw.port}/api/x", auth=("ann", "pw"))
        assert answer.status_code == 200, answer.text
    assert "authorization" not in real[0]["headers"]

