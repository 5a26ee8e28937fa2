"""Cards served by the gateway lead to the gateway, whatever host the agent advertises, and a route's
urlRewrite mounts an agent under a prefix (the reference's semantics, crates/agentgateway/src/a2a/mod.rs).

An agent behind Docker or a load balancer advertises a name the gateway does not use to reach it
(`localhost`, a container name, a public DNS name): every http(s) interface URL of its card is
re-anchored at the gateway by its path, so a client that reads the card keeps calling the gateway.
Everything is real and on 127.0.0.1: a2a-sdk agents served by uvicorn, the a2a-sdk client, the gateway.
The client's HTTP client refuses any host but 127.0.0.1 before connecting, so a card that still named
the agent's advertised host could neither reach the agent behind the gateway's back nor look up a name.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text
from a2a.types import Message, Part, Role, SendMessageRequest
from starlette.applications import Starlette
from starlette.routing import Mount

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from protocols.a2a.agent import Agent
from protocols.a2a.card import public_interface_url, rewrite_card
from tests.a2a.harness import NO_STORE, V1, message, rpc
from tests.conftest import run_gateway
from tests.fixtures.a2a_agent import Recorder, echo_agent, legacy_agent, serve

pytestmark = pytest.mark.anyio

BINDINGS = ["JSONRPC", "HTTP+JSON"]


def advertising(build: Callable[[str], Recorder], host: str, path: str = "") -> Callable[[str], Recorder]:
    """`build` for an agent that listens on 127.0.0.1 but names `host` (and `path` below it) in its card."""

    def built(base: str) -> Recorder:
        return build(base.replace("127.0.0.1", host) + path)

    return built


def mounted(build: Callable[[str], Recorder], path: str, host: str = "127.0.0.1") -> Callable[[str], Recorder]:
    """`build`'s agent served below `path` of its server (its card says so), requests recorded with full paths."""

    def built(base: str) -> Recorder:
        inner = build(base.replace("127.0.0.1", host) + path)
        return Recorder(Starlette(routes=[Mount(path, app=inner)]))

    return built


def _loopback_only(request: httpx.Request) -> None:
    if request.url.host != "127.0.0.1":
        raise httpx.ConnectError(f"test client: {request.url.host} is not the gateway", request=request)


@contextlib.asynccontextmanager
async def loopback_client() -> AsyncIterator[httpx.AsyncClient]:
    async def hook(request: httpx.Request) -> None:
        _loopback_only(request)

    async with httpx.AsyncClient(timeout=20, trust_env=False, event_hooks={"request": [hook]}) as http:
        yield http


async def send_through(url: str, text: str, binding: str, *, legacy: bool = False) -> str:
    """What the agent at `url` answers, the a2a-sdk client following the card the gateway serves there."""
    async with loopback_client() as http:
        cfg = ClientConfig(supported_protocol_bindings=[binding], streaming=False, httpx_client=http)
        path = {"relative_card_path": "/.well-known/agent.json"} if legacy else {}
        async with await create_client(url, client_config=cfg, **path) as client:
            msg = Message(role=Role.ROLE_USER, message_id=f"m-{binding}-{text}", parts=[Part(text=text)])
            (answer,) = [ev async for ev in client.send_message(SendMessageRequest(message=msg))]
            return get_artifact_text(answer.task.artifacts[0])


def through_gateway(agent: Recorder, port: int) -> list[str]:
    """The paths of the calls (not card fetches) the agent got, each checked to have come through the gateway."""
    calls = [(path, h) for method, path, h in agent.seen if method == "POST"]
    assert calls, "the agent got no call"
    assert all(h.get("x-forwarded-host") == f"127.0.0.1:{port}" for _, h in calls), calls
    return [path for path, _ in calls]


# -- the card rewrite itself (the reference's test vectors) -----------------------------------


@pytest.mark.parametrize(
    ("url", "agent_path", "public"),
    [
        ("http://localhost:9100/", "", "http://gw/a2a/x/"),  # another host: re-anchored all the same
        ("http://agent.internal:9100/rest?v=1", "", "http://gw/a2a/x/rest?v=1"),
        ("https://upstream.example/a2a/tock/", "/a2a/tock", "http://gw/a2a/x/"),
        ("http://backend/internal/weather/jsonrpc", "/internal/weather", "http://gw/a2a/x/jsonrpc"),
        # not below the agent's path on a segment boundary: the whole path goes below the gateway's
        (
            "http://backend/internal/weather-v2/jsonrpc",
            "/internal/weather",
            "http://gw/a2a/x/internal/weather-v2/jsonrpc",
        ),
        ("http://localhost:9100", "", "http://gw/a2a/x/"),  # no path is the root
        # the agent's root keeps its '/' (the reference drops it when a urlRewrite prefix applies)
        ("http://agent.internal/inner/", "/inner", "http://gw/a2a/x/"),
        ("http://agent.internal/inner", "/inner", "http://gw/a2a/x"),
        ("https://upstream.example/svc/agent", "", "http://gw/a2a/x/svc/agent"),
        ("http://agent.internal/inner/jsonrpc/", "/inner", "http://gw/a2a/x/jsonrpc/"),
        # not http(s): left as it is (a gRPC host:port, a relative reference)
        ("127.0.0.1:50051", "", "127.0.0.1:50051"),
        ("/relative", "", "/relative"),
    ],
)
def test_an_interface_url_is_re_anchored_by_its_path(url: str, agent_path: str, public: str) -> None:
    assert public_interface_url(url, "http://gw/a2a/x", agent_path) == public


def test_every_card_field_with_an_interface_url_is_re_anchored() -> None:
    v1 = {
        "name": "x",
        "supportedInterfaces": [
            {"url": "http://agent.internal:9100/agent/", "protocolBinding": "JSONRPC"},
            {"url": "http://localhost:9100/agent/rest", "protocolBinding": "HTTP+JSON"},
        ],
    }
    out = rewrite_card(Agent("x", "http://127.0.0.1:9100/agent", card=v1), "https://gw.example/a2a/x")
    assert [i["url"] for i in out["supportedInterfaces"]] == [
        "https://gw.example/a2a/x/",
        "https://gw.example/a2a/x/rest",
    ]
    v03 = {
        "name": "old",
        "url": "http://old.internal/",
        "additionalInterfaces": [{"url": "http://old.internal/rest", "transport": "HTTP+JSON"}],
    }
    out = rewrite_card(Agent("old", "http://127.0.0.1:9200", card=v03, version="0.3"), "http://gw:3000/a2a/old")
    assert out["url"] == "http://gw:3000/a2a/old/"
    assert out["additionalInterfaces"] == [{"url": "http://gw:3000/a2a/old/rest", "transport": "HTTP+JSON"}]


# -- item 5: agents advertising another host ---------------------------------------------------


async def test_cards_lead_to_the_gateway_whatever_host_the_agent_advertises() -> None:
    """Config agents advertising `localhost` and an unresolvable name (1.0 and 0.3 cards), and an agent
    registered at run time: the card, the discovery list and the a2a-sdk client's calls all go through
    the gateway."""
    async with (
        serve(advertising(echo_agent, "localhost")) as local,
        serve(advertising(echo_agent, "agent.internal")) as hidden,
        serve(advertising(legacy_agent, "agent.internal")) as old,
        serve(advertising(echo_agent, "localhost")) as late,
    ):
        yaml = (
            f"a2a:\n  port: 0\n  {NO_STORE}\n"
            "  registration: {allow: 'true', allowNetworks: [127.0.0.0/8]}\n"
            f"  agents:\n  - {{name: local, url: '{local.url}'}}\n  - {{name: hidden, url: '{hidden.url}'}}\n"
            f"  - {{name: old, url: '{old.url}'}}\n"
        )
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            origin = f"http://127.0.0.1:{gw.port}"
            added = await http.post(f"{origin}/a2a/agents", json={"name": "late", "url": late.url})
            assert added.status_code == 201, added.text
            for name in ("local", "hidden", "late"):
                base = f"{origin}/a2a/{name}"
                card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
                assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/", f"{base}/rest"]
                extended = await http.post(f"{base}/", json=rpc("GetExtendedAgentCard"), headers=V1)
                urls = [i["url"] for i in extended.json()["result"]["supportedInterfaces"]]
                assert urls == [f"{base}/", f"{base}/rest"]
            old_card = (await http.get(f"{origin}/a2a/old/.well-known/agent.json")).json()
            assert old_card["url"] == f"{origin}/a2a/old/"
            assert [i["url"] for i in old_card["additionalInterfaces"]] == [
                f"{origin}/a2a/old/",
                f"{origin}/a2a/old/rest",
            ]
            listed = (await http.get(f"{origin}/a2a/agents")).json()["agents"]
            for record in listed:
                card = record["card"]
                urls = [i["url"] for i in card.get("supportedInterfaces") or card.get("additionalInterfaces")]
                assert all(u.startswith(f"{origin}/a2a/{record['name']}/") for u in urls), record
            for agent, name in ((local, "local"), (hidden, "hidden"), (late, "late"), (old, "old")):
                for binding in BINDINGS:
                    said = await send_through(f"{origin}/a2a/{name}", name, binding, legacy=agent is old)
                    assert said == f"echo: {name}"
                paths = through_gateway(agent.app, gw.port)
                assert {"/", "/rest/message:send" if agent is not old else "/rest/v1/message:send"} <= set(paths)


# -- item 6: urlRewrite on an A2A route --------------------------------------------------------


def route_yaml(agent: str, policies: str, prefix: str = "/agents/echo") -> str:
    return f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: echo
      matches: [{{path: {{pathPrefix: {prefix}}}}}]
      policies: {policies}
      backends: [{{host: "{agent}"}}]
"""


async def test_a_url_rewrite_mounts_an_agent_under_a_prefix() -> None:
    """`urlRewrite: {path: {prefix: /}}` next to `a2a: {}`: the agent sees its own paths, and the card's
    URLs are mapped back through the rewrite to the route's prefix."""
    async with serve(advertising(echo_agent, "localhost")) as echo:
        yaml = route_yaml(echo.url, "{a2a: {}, urlRewrite: {path: {prefix: /}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/agents/echo"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/", f"{base}/rest"]
            for binding in BINDINGS:
                assert await send_through(base, "mounted", binding) == "echo: mounted"
            assert set(through_gateway(echo.app, gw.port)) == {"/", "/rest/message:send"}
            assert ("GET", "/.well-known/agent-card.json") in {(m, p) for m, p, _ in echo.seen}


async def test_a_url_rewrite_to_a_path_maps_the_card_back_to_the_prefix() -> None:
    """The agent lives at /inner of its server and advertises an unresolvable host: the route's
    /agents/echo is rewritten to /inner toward it, and its card's /inner/... back to /agents/echo/....
    The rewrite's authority is the Host the agent gets (its card's fetch included)."""
    async with serve(mounted(echo_agent, "/inner", host="agent.internal")) as echo:
        rewrite = "{path: {prefix: /inner}, authority: {host: agent.internal}}"
        yaml = route_yaml(echo.url, f"{{a2a: {{}}, urlRewrite: {rewrite}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/agents/echo"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/", f"{base}/rest"]
            for binding in BINDINGS:
                assert await send_through(base, "inside", binding) == "echo: inside"
            assert set(through_gateway(echo.app, gw.port)) == {"/inner/", "/inner/rest/message:send"}
            port = echo.url.rsplit(":", 1)[1]
            assert {h["host"] for _, _, h in echo.seen} == {f"agent.internal:{port}"}


async def test_without_a_rewrite_the_agent_sees_the_path_the_client_used() -> None:
    """The reference passes the path on as it came: an agent served at /team/echo of its server, behind a
    route with that prefix, is reached at /team/echo (no implicit stripping of the route's prefix)."""
    async with (
        serve(mounted(echo_agent, "/team/echo", host="localhost")) as echo,
        run_gateway(route_yaml(echo.url, "{a2a: {}}", "/team/echo")) as gw,
        httpx.AsyncClient() as http,
    ):
        base = f"http://127.0.0.1:{gw.port}/team/echo"
        card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
        assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/", f"{base}/rest"]
        for binding in BINDINGS:
            assert await send_through(base, "as is", binding) == "echo: as is"
        assert set(through_gateway(echo.app, gw.port)) == {"/team/echo/", "/team/echo/rest/message:send"}


async def test_a_full_rewrite_sends_every_request_to_one_path() -> None:
    """`urlRewrite: {path: {full: ...}}`, as the reference does it: every request (the card's too) goes
    to that path, and the card's URLs are anchored at the route's prefix by their path below it."""
    async with serve(advertising(echo_agent, "agent.internal")) as echo:
        yaml = route_yaml(echo.url, "{a2a: {}, urlRewrite: {path: {full: /.well-known/agent-card.json}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/agents/echo"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/", f"{base}/rest"]
            await http.post(f"{base}/", json=rpc("SendMessage", {"message": message("x")}), headers=V1)
            assert echo.seen[-1][:2] == ("POST", "/.well-known/agent-card.json")


def test_url_rewrite_is_refused_where_the_gateway_maps_paths_itself() -> None:
    block = f"a2a: {{port: 0, {NO_STORE}, agents: [], policies: {{urlRewrite: {{path: {{prefix: /x}}}}}}}}"
    with pytest.raises(ConfigError, match=r"x\.yaml: a2a\.policies\.urlRewrite: the a2a block serves each agent"):
        Gateway(parse_config(block, "x.yaml"))
    mcp = "mcp: {port: 0, policies: {urlRewrite: {path: {full: /x}}}, targets: [{name: a, mcp: {host: 'http://127.0.0.1:1/mcp'}}]}"
    with pytest.raises(ConfigError, match=r"x\.yaml: mcp\.policies\.urlRewrite: applies to plain HTTP and A2A routes"):
        Gateway(parse_config(mcp, "x.yaml"))
