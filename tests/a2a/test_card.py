"""Agent cards: fetched from real servers (1.0 path, 0.3 fallback), refused with a reason naming the
agent, and rewritten so every interface URL points at the gateway."""

from __future__ import annotations

import json

import httpx
import pytest

from federation.agents import Agent, AgentSpec
from protocols.a2a.card import fetch_card, rewrite_card
from tests.conftest import free_port
from tests.fixtures.a2a_agent import card_server, echo_agent, legacy_agent, serve

pytestmark = pytest.mark.anyio


async def test_a_1_0_card_is_fetched_with_the_version_header() -> None:
    async with serve(echo_agent) as agent, httpx.AsyncClient() as client:
        found = await fetch_card(client, AgentSpec("echo", agent.url, {"x-team": "a"}))
        assert (found.name, found.url, found.version, found.headers) == ("echo", agent.url, "1.0", {"x-team": "a"})
        assert found.card["name"] == "Echo"
        assert [s["id"] for s in found.skills()] == ["echo", "shout"]
        method, path, headers = agent.seen[-1]
        assert (method, path, headers["a2a-version"], headers["x-team"]) == (
            "GET",
            "/.well-known/agent-card.json",
            "1.0",
            "a",
        )


async def test_a_0_3_card_is_found_at_the_old_path() -> None:
    async with serve(legacy_agent) as agent, httpx.AsyncClient() as client:
        found = await fetch_card(client, AgentSpec("old", agent.url))
        assert found.version == "0.3"
        assert found.card["url"] == agent.url + "/"
        assert [p for _, p, _ in agent.seen] == ["/.well-known/agent-card.json", "/.well-known/agent.json"]


@pytest.mark.parametrize(
    ("body", "status", "content_type", "problem"),
    [
        (b"oops", 500, "text/plain", "answered 500"),
        (b"<html>not a card</html>", 200, "text/html", "is not JSON"),
        (b"[1, 2]", 200, "application/json", "is not a JSON object"),
        (json.dumps({"description": "no name"}).encode(), 200, "application/json", "lacks a name"),
        (json.dumps({"name": "x", "skills": []}).encode(), 200, "application/json", "lacks supportedInterfaces"),
        (
            json.dumps({"name": "x", "supportedInterfaces": []}).encode(),
            200,
            "application/json",
            "lacks supportedInterfaces",
        ),
        (
            json.dumps({"name": "x", "supportedInterfaces": [{"url": "http://a/", "protocolBinding": 7}]}).encode(),
            200,
            "application/json",
            "is not a valid A2A 1.0 card",
        ),
        (
            json.dumps({"name": "x", "url": "http://a/", "skills": "many"}).encode(),
            200,
            "application/json",
            "not a valid A2A 0.3 card",
        ),
    ],
)
async def test_a_bad_card_is_refused_naming_the_agent(
    body: bytes, status: int, content_type: str, problem: str
) -> None:
    async with serve(lambda base: card_server(body, status, content_type)) as agent, httpx.AsyncClient() as client:
        with pytest.raises(ValueError) as info:
            await fetch_card(client, AgentSpec("broken", agent.url))
        message = str(info.value)
        assert message.startswith(f"agent 'broken': card at {agent.url}/.well-known/agent-card.json"), message
        assert problem in message


async def test_a_missing_card_and_a_dead_agent_are_refused_naming_the_agent() -> None:
    async with serve(lambda base: card_server(None)) as agent, httpx.AsyncClient() as client:
        with pytest.raises(
            ValueError, match=r"agent 'ghost': no card at .*agent-card\.json or .*agent\.json \(both answered 404\)"
        ):
            await fetch_card(client, AgentSpec("ghost", agent.url))
    async with httpx.AsyncClient() as client:
        with pytest.raises(
            ValueError,
            match=r"agent 'gone': cannot fetch the card at http://127\.0\.0\.1:\d+/\.well-known/agent-card\.json: ConnectError",
        ):
            await fetch_card(client, AgentSpec("gone", f"http://127.0.0.1:{free_port()}"))


def test_interface_urls_move_to_the_public_url_by_their_path() -> None:
    """Whatever host they name (the agent's own, another): below the agent's path what follows moves, any
    other path moves whole (the reference's rule); a URL that is not http(s) stays."""
    card = {
        "name": "x",
        "supportedInterfaces": [
            {"url": "http://127.0.0.1:9100/", "protocolBinding": "JSONRPC"},
            {"url": "HTTP://127.0.0.1:9100/rest?v=1", "protocolBinding": "HTTP+JSON"},
            {"url": "http://127.0.0.1:9100/agentx", "protocolBinding": "JSONRPC"},  # not below /agent
            {"url": "http://elsewhere:9100/agent/", "protocolBinding": "JSONRPC"},
            {"url": "127.0.0.1:9100", "protocolBinding": "GRPC"},
        ],
        "skills": [{"id": "s", "examples": ["http://127.0.0.1:9100/"]}],
    }
    agent = Agent("x", "http://127.0.0.1:9100/agent", card=card)
    card["supportedInterfaces"][0]["url"] = "http://127.0.0.1:9100/agent/"
    card["supportedInterfaces"][1]["url"] = "HTTP://127.0.0.1:9100/agent/rest?v=1"
    out = rewrite_card(agent, "https://gw.example/a2a/x")
    assert [i["url"] for i in out["supportedInterfaces"]] == [
        "https://gw.example/a2a/x/",
        "https://gw.example/a2a/x/rest?v=1",
        "https://gw.example/a2a/x/agentx",
        "https://gw.example/a2a/x/",
        "127.0.0.1:9100",
    ]
    assert out["skills"] == card["skills"]  # the rest is untouched
    assert card["supportedInterfaces"][0]["url"] == "http://127.0.0.1:9100/agent/"  # the original too


def test_a_0_3_card_has_its_url_and_additional_interfaces_moved() -> None:
    card = {
        "name": "old",
        "url": "http://127.0.0.1:80/",
        "additionalInterfaces": [{"url": "http://127.0.0.1/rest", "transport": "HTTP+JSON"}],
    }
    out = rewrite_card(Agent("old", "http://127.0.0.1", card=card, version="0.3"), "http://gw:3000/a2a/old/")
    assert out["url"] == "http://gw:3000/a2a/old/"
    assert out["additionalInterfaces"] == [{"url": "http://gw:3000/a2a/old/rest", "transport": "HTTP+JSON"}]
