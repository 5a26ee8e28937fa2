"""Registration is not a way into the gateway or the networks behind it: a registered agent may not live at
the gateway's own listening addresses (binds, admin API) nor, unless `registration.allowNetworks` lists them,
on loopback, private or link-local networks; that holds again on every connection (a stored registration,
a name that resolves elsewhere later). Registrations may not set hop, Host, credential, cookie or proxy
headers, and a URL that gives no card tells the registrant nothing about why."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from starlette.types import Message, Receive, Scope, Send

from gateway import agent_addresses
from gateway.agent_addresses import AddressPolicy
from gateway.config import load_config
from gateway.runtime import Runtime
from protocols.a2a import proxy
from tests.a2a.harness import V1, message, rpc
from tests.conftest import free_port, mcp_yaml, run_gateway, started, stdio_target
from tests.fixtures.a2a_agent import Recorder, card_server, echo_agent, serve

pytestmark = pytest.mark.anyio

OPEN = "registry: {sqlite: null, healthInterval: 0}\n  registration: {allow: 'true'"
LOOPBACK_ALLOWED = f"{OPEN}, allowNetworks: [127.0.0.0/8]}}"


def a2a_block(registration: str, admin: bool = False) -> str:
    head = "config: {adminAddr: 127.0.0.1:0}\n" if admin else ""
    return f"{head}a2a:\n  port: 0\n  {registration}\n  agents: []\n"


async def test_the_admin_api_and_the_gateways_own_binds_cannot_be_registered(tmp_path: Path) -> None:
    """Even with loopback allowed (as for local agents), the gateway's own sockets stay out of reach: the old
    attack registered `http://127.0.0.1:<admin port>/agents/ok?x=`, whose JSON passed for a card."""
    path = tmp_path / "gw.yaml"
    path.write_text(a2a_block(LOOPBACK_ALLOWED, admin=True))
    async with (
        serve(echo_agent) as echo,
        started(Runtime(load_config(path), lambda: load_config(path), poll=60)) as runtime,
        httpx.AsyncClient(timeout=20) as http,
    ):
        port = next(iter(runtime.sockets.values())).bind.bound_port
        agents = f"http://127.0.0.1:{port}/a2a/agents"
        admin = f"http://127.0.0.1:{runtime.admin_port}"
        assert (await http.post(agents, json={"name": "ok", "url": echo.url})).status_code == 201  # loopback allowed
        the_attack = await http.post(agents, json={"name": "evil", "url": f"{admin}/agents/ok?x="})
        assert the_attack.status_code == 422, the_attack.text  # a query swallowing the card's path, too
        for url in (
            f"{admin}/agents/ok",
            f"http://localhost:{runtime.admin_port}/agents/ok",
            f"http://127.0.0.1:{port}/a2a/ok",
            f"http://[::ffff:127.0.0.1]:{port}/a2a/ok",
        ):
            refused = await http.post(agents, json={"name": "evil", "url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert refused.json()["error"] == "forbidden_address"
        assert sorted(a["name"] for a in (await http.get(agents)).json()["agents"]) == ["ok"]
        assert (await http.get(f"http://127.0.0.1:{port}/a2a/evil/")).status_code == 404


async def test_non_public_networks_are_refused_unless_allowed() -> None:
    async with (
        serve(echo_agent) as echo,
        run_gateway(a2a_block(f"{OPEN}}}")) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        agents = f"http://127.0.0.1:{gw.port}/a2a/agents"
        port = echo.url.rsplit(":", 1)[1]
        for url in (
            echo.url,
            f"http://localhost:{port}",
            f"http://0.0.0.0:{port}",
            f"http://[::1]:{port}",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3:8080",
        ):
            refused = await http.post(agents, json={"name": "inside", "url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert "forbidden_address" in refused.text and "169.254" not in refused.text
        assert echo.seen == []  # refused before any request was made
        unresolvable = await http.post(agents, json={"name": "x", "url": "http://no-such-host.invalid/"})
        assert unresolvable.status_code == 502 and unresolvable.json()["error"] == "bad_agent_card"


async def test_registrations_carry_no_hop_host_credential_or_proxy_headers_and_no_credentials_in_the_url() -> None:
    async with (
        serve(echo_agent) as echo,
        run_gateway(a2a_block(LOOPBACK_ALLOWED)) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        agents = f"http://127.0.0.1:{gw.port}/a2a/agents"
        host = echo.url.removeprefix("http://")
        for headers in (
            {"Host": "admin.internal"},
            {"authorization": "Bearer stolen"},
            {"Cookie": "agentplex-ui=1"},
            {"proxy-authorization": "Basic eA=="},
            {"X-Forwarded-For": "10.0.0.1"},
            {"transfer-encoding": "chunked"},
            {"connection": "close"},
            {"bad name": "v"},
            {"x-split": "a\r\nhost: evil"},
        ):
            refused = await http.post(agents, json={"name": "h", "url": echo.url, "headers": headers})
            assert refused.status_code == 422, (headers, refused.text)
            assert refused.json()["error"] == "invalid_agent" and "may not be set" in refused.text
        for url in (f"http://user:pw@{host}", f"http://{host}/base?x=", f"http://{host}/#x"):
            refused = await http.post(agents, json={"name": "h", "url": url})
            assert refused.status_code == 422 and "user:password@, query or fragment" in refused.text, url
        assert echo.seen == []
        fine = await http.post(agents, json={"name": "h", "url": echo.url, "headers": {"x-agent-key": "k"}})
        assert fine.status_code == 201, fine.text


async def test_failed_probes_all_look_alike() -> None:
    bodies = set()
    async with (
        serve(lambda base: card_server(None)) as missing,
        serve(lambda base: card_server(b'{"secret": "internal data"}', status=500)) as failing,
        serve(lambda base: card_server(b'{"name": "not a card"}')) as wrong,
        run_gateway(a2a_block(LOOPBACK_ALLOWED)) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        for url in (missing.url, failing.url, wrong.url, f"http://127.0.0.1:{free_port()}"):
            answer = await http.post(f"http://127.0.0.1:{gw.port}/a2a/agents", json={"name": "probe", "url": url})
            assert answer.status_code == 502, answer.text
            bodies.add(answer.text)
    (body,) = bodies
    assert "no usable agent card could be fetched" in body


async def test_a_stored_registration_is_held_to_the_rule_on_every_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration made where loopback was allowed (another replica, an older version) sits in the shared
    store; a gateway that does not allow loopback loads it but never connects to it."""
    async with serve(echo_agent) as echo:
        monkeypatch.chdir(tmp_path)  # the relative sqlite path opens from the working directory
        db = tmp_path / "agents.db"
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("CREATE TABLE agents (name TEXT PRIMARY KEY, spec TEXT NOT NULL)")
            conn.execute("INSERT INTO agents VALUES ('inner', ?)", (f'{{"url": "{echo.url}", "headers": {{}}}}',))
        text = "a2a:\n  port: 0\n  registry: {sqlite: agents.db, healthInterval: 0}\n  agents: []\n"
        async with run_gateway(text, str(tmp_path / "gw.yaml")) as gw, httpx.AsyncClient(timeout=20) as http:
            (agent,) = (await http.get(f"http://127.0.0.1:{gw.port}/a2a/agents")).json()["agents"]
            assert agent["name"] == "inner" and agent["healthy"] is False
            call = await http.post(f"http://127.0.0.1:{gw.port}/a2a/inner/", json={})
            assert call.status_code == 502
        assert echo.seen == []


async def test_the_rule_is_checked_against_the_address_each_connection_reaches() -> None:
    """The connect-time half on its own: what decides is where the socket went, not the name asked for."""
    async with serve(echo_agent) as echo, run_gateway(a2a_block(f"{OPEN}}}")) as gw:
        card = f"{echo.url}/.well-known/agent-card.json"
        for policy, url, ok in [
            (None, card, True),  # config agents: not checked
            (AddressPolicy(), card, False),
            (AddressPolicy(), card.replace("127.0.0.1", "localhost"), False),
            (AddressPolicy(["127.0.0.0/8"]), card, True),
            (AddressPolicy(["127.0.0.0/8"]), f"http://127.0.0.1:{gw.port}/a2a/agents", False),  # the gateway itself
        ]:
            async with proxy.new_client() as client:  # a new pool: every request connects
                agent_addresses.install(client)
                with policy.enforced() if policy else contextlib.nullcontext():
                    if ok:
                        assert (await client.get(url)).status_code == 200
                    else:
                        with pytest.raises(httpx.ConnectError, match="refused by the gateway"):
                            await client.get(url)
        assert len(echo.seen) == 2


def closing(app: Recorder) -> Recorder:
    """`app` answering every request with `Connection: close`, so each request is a new connection."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, closing_send)

    return Recorder(wrapped)


async def test_calls_and_tool_calls_to_a_registered_agent_follow_the_rule_in_force() -> None:
    """An agent registered while its address was allowed is not reached once the rule no longer allows it
    (the rule a reload brings, or the address a name resolves to after registration): neither by proxied
    calls nor through the agents-as-tools bridge."""
    a2a = a2a_block(LOOPBACK_ALLOWED).replace("agents: []", "agents: []\n  tools: {}")
    text = mcp_yaml(stdio_target("local")) + a2a
    async with (
        serve(lambda base: closing(echo_agent(base))) as echo,
        run_gateway(text) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        port = next(b.bound_port for b in gw.gateway.binds if any(r.name == "a2a" for r in b.routes))
        base = f"http://127.0.0.1:{port}/a2a"
        assert (await http.post(f"{base}/agents", json={"name": "inner", "url": echo.url})).status_code == 201
        send = rpc("SendMessage", {"message": message("quick hi")})
        assert (await http.post(f"{base}/inner/", json=send, headers=V1)).status_code == 200
        seen = len(echo.seen)

        gw.gateway.a2a.addresses = AddressPolicy()  # loopback no longer allowed
        refused = await http.post(f"{base}/inner/", json=send, headers=V1)
        assert refused.status_code == 502 and "unreachable" in refused.text, refused.text
        async with Client(gw.url, cache=None) as client:
            result = await client.call_tool("agents_inner", {"message": "quick hi"})
            assert result.is_error
        assert len(echo.seen) == seen  # nothing reached the agent


async def test_a_reload_that_tightens_the_rule_holds_kept_agents_and_tools_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload keeps the registry and its agent tools when their config is unchanged; a new
    `allowNetworks` is a change: the tools must not keep checking connections against the old rule."""
    monkeypatch.chdir(tmp_path)  # the relative sqlite path opens from the working directory
    path = tmp_path / "gw.yaml"
    a2a = a2a_block(f"{OPEN}NETWORKS}}").replace("sqlite: null", "sqlite: agents.db")
    text = mcp_yaml(stdio_target("local")) + a2a.replace("agents: []", "agents: []\n  tools: {}")
    path.write_text(text.replace("NETWORKS", ", allowNetworks: [127.0.0.0/8]"))
    async with (
        serve(lambda base: closing(echo_agent(base))) as echo,
        started(Runtime(load_config(path), lambda: load_config(path), poll=0.1)) as runtime,
        httpx.AsyncClient(timeout=20) as http,
    ):
        binds = runtime.gateway.binds
        port = next(b.bound_port for b in binds if any(r.name == "a2a" for r in b.routes))
        mcp = next(b.bound_port for b in binds if any(r.name == "mcp" for r in b.routes))
        registered = await http.post(f"http://127.0.0.1:{port}/a2a/agents", json={"name": "inner", "url": echo.url})
        assert registered.status_code == 201, registered.text
        path.write_text(text.replace("NETWORKS", ""))
        with anyio.fail_after(15):
            while runtime.generation < 2:
                await anyio.sleep(0.05)
        seen = len(echo.seen)
        async with Client(f"http://127.0.0.1:{mcp}/mcp", cache=None) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            if "agents_inner" in tools:  # listed while its last card is kept: a call must still not reach it
                assert (await client.call_tool("agents_inner", {"message": "quick hi"})).is_error
        send = rpc("SendMessage", {"message": message("x")})
        call = await http.post(f"http://127.0.0.1:{port}/a2a/inner/", json=send, headers=V1)
        assert call.status_code in (404, 502), call.text
        assert len(echo.seen) == seen
