"""The agent registry: runtime registration through the admin API, persistence (SQLite across a restart,
Redis across replicas), health checks, and discovery filtered by query and by the caller's authorization.

Everything is real and on 127.0.0.1: a2a-sdk agents (tests/fixtures/a2a_agent.py) served by uvicorn,
redis-server (tests/redis_server.py), and the registry's HTTP face behind the route's real policies
(apiKey identities, mcpAuthorization rules over `a2a.agent`) on a real socket.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Message,
    Part,
    Role,
    SendMessageRequest,
)
from google.protobuf.json_format import MessageToDict

from federation.agent_store import RedisStore
from federation.agents import AgentRegistry, AgentSpec, StoreError
from gateway.a2a import A2AEndpoint, A2ARoutes
from gateway.a2a_registry import RegistryApi, build_registry
from gateway.agent_addresses import AddressPolicy
from gateway.config import ConfigError, parse_config
from gateway.policies import PolicyApp, compile_policies
from protocols.a2a.card import fetch_card, rewrite_card
from tests.conftest import free_port
from tests.fixtures.a2a_agent import Recorder, card_server, echo_agent, serve
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.anyio

ADMIN = {"authorization": "Bearer admin-key"}
USER = {"authorization": "Bearer user-key"}
POLICIES = """
  registration:
    allow: 'apiKey.role == "admin"'
    allowNetworks: [127.0.0.0/8]  # the test agents' loopback addresses
  policies:
    apiKey:
      keys:
      - key: admin-key
        metadata: {role: admin}
      - key: user-key
        metadata: {role: user}
    mcpAuthorization:
      rules:
      - 'a2a.agent != "secret" || apiKey.role == "admin"'
"""


def config(*, agents: dict[str, str] | None = None, registry: str = "", policies: str = POLICIES) -> str:
    listed = "".join(f"\n  - {{name: {name}, url: '{url}'}}" for name, url in (agents or {}).items())
    return f"a2a:\n  port: 0\n  agents:{listed or ' []'}\n  registry: {{healthInterval: 300ms{registry}}}\n{policies}"


# -- harness ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite files (the default store among them) open from the working directory: keep each test's own."""
    monkeypatch.chdir(tmp_path)


@dataclass
class Gateway:
    """The registry API on a real socket, behind the a2a block's real HTTP-stage policies."""

    origin: str
    registry: AgentRegistry
    http: httpx.AsyncClient

    async def list(self, headers: dict[str, str] = ADMIN, **query: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.origin}/a2a/agents", params=query, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["agents"]

    async def names(self, headers: dict[str, str] = ADMIN, **query: str) -> list[str]:
        return sorted(agent["name"] for agent in await self.list(headers, **query))

    async def show(self, name: str, headers: dict[str, str] = ADMIN) -> httpx.Response:
        return await self.http.get(f"{self.origin}/a2a/agents/{name}", headers=headers)

    async def register(self, body: Any, headers: dict[str, str] = ADMIN) -> httpx.Response:
        return await self.http.post(f"{self.origin}/a2a/agents", json=body, headers=headers)

    async def delete(self, name: str, headers: dict[str, str] = ADMIN) -> httpx.Response:
        return await self.http.delete(f"{self.origin}/a2a/agents/{name}", headers=headers)


class Front:
    """The a2a block's app as gateway/a2a.py is to mount it: the registry API first, the proxy for the rest."""

    def __init__(self, api: RegistryApi, proxy: A2AEndpoint) -> None:
        self.api = api
        self.proxy = proxy

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await (self.api if self.api.handles(scope) else self.proxy)(scope, receive, send)


@contextlib.asynccontextmanager
async def gateway(text: str, source: Path) -> AsyncIterator[Gateway]:
    """Parse `text` as if read from `source`, build the registry, its API and the A2A proxy, serve them on port 0."""
    a2a = parse_config(text, str(source)).a2a
    assert a2a is not None
    levels = [(f"{source}: a2a.policies", a2a.policies)] if a2a.policies is not None else []
    compiled = compile_policies(levels, base_dir=Path.cwd(), route_path=a2a.path)
    routes = A2ARoutes()
    registry = build_registry(a2a, Path.cwd(), routes.fetch)
    routes.registries["a2a"] = registry  # routes.running() opens the card client, then the registry
    proxy = A2AEndpoint(routes, registry, a2a.path, single=None, guard=compiled.guard, timeout=None)
    routes.addresses = AddressPolicy(a2a.registration.allowNetworks)
    api = RegistryApi(
        registry,
        path=a2a.path,
        rewrite=rewrite_card,
        guard=compiled.guard,
        allow=a2a.registration.allow,
        addresses=routes.addresses,
    )
    app = PolicyApp(Front(api, proxy), compiled.steps)
    async with httpx.AsyncClient(timeout=10) as http, routes.running(), served(app) as origin:
        yield Gateway(origin, registry, http)


async def send_text(agent_url: str, text: str, headers: dict[str, str] = ADMIN) -> str:
    """Fetch the card at `agent_url` and send `text` with the a2a-sdk client; the reply's artifact text."""
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        client = await create_client(
            agent_url, client_config=ClientConfig(httpx_client=http, streaming=False), resolver_http_kwargs={}
        )
        async with client:
            message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)])
            replies = [event async for event in client.send_message(SendMessageRequest(message=message))]
    (last,) = replies
    return get_artifact_text(last.task.artifacts[0])


@contextlib.asynccontextmanager
async def served(app: Any, port: int = 0) -> AsyncIterator[str]:
    """uvicorn serving `app` on 127.0.0.1:`port` in this event loop; its origin. Stopped on exit (1 s grace)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted agent gets its port back
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True


class Restartable:
    """An echo agent on a fixed port that can be stopped and started again (same URL, same card).

    It runs in a task of `tg`, so it can stop and start in any order relative to other contexts."""

    def __init__(self, tg: anyio.abc.TaskGroup, name: str) -> None:
        self.tg = tg
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = echo_agent(self.url, name)
        self._stop: anyio.Event | None = None
        self._stopped = anyio.Event()

    async def start(self) -> None:
        assert self._stop is None
        stop, self._stopped = anyio.Event(), anyio.Event()
        self._stop = stop
        await self.tg.start(self._run, stop, self._stopped)

    async def _run(self, stop: anyio.Event, stopped: anyio.Event, *, task_status: Any) -> None:
        try:
            async with served(self.app, self.port):
                task_status.started()
                await stop.wait()
        finally:
            stopped.set()

    async def stop(self) -> None:
        assert self._stop is not None
        self._stop.set()
        self._stop = None
        with anyio.fail_after(10):
            await self._stopped.wait()


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` (and the last value) after `timeout`."""
    last: Any = None
    with anyio.move_on_after(timeout):
        while True:
            last = await check()
            if last:
                return last
            await anyio.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout} s (last: {last!r})")


def custom_card(base: str, name: str, skills: list[tuple[str, list[str]]]) -> bytes:
    """A valid A2A 1.0 card with the given (skill id, tags)."""
    card = AgentCard(
        name=name,
        description=f"{name} for discovery tests",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=base + "/", protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=sid, name=sid, description=sid, tags=tags) for sid, tags in skills],
    )
    return json.dumps(MessageToDict(card)).encode()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


# -- persistence ----------------------------------------------------------------------------------


async def test_sqlite_registration_survives_a_restart(tmp_path: Path) -> None:
    source = tmp_path / "gateway.yaml"
    async with serve(echo_agent) as echo:
        async with gateway(config(), source) as gw:
            assert not (tmp_path / "agentplex-agents.db").exists()  # nothing registered, no file
            created = await gw.register({"name": "echo", "url": echo.url})
            assert created.status_code == 201, created.text
            assert created.headers["location"] == "/a2a/agents/echo"
            record = created.json()
            assert record["name"] == "echo" and record["source"] == "runtime" and record["healthy"] is True
            assert record["url"] == f"{gw.origin}/a2a/echo"
            # the discovered card points at the gateway, not at the agent
            urls = [i["url"] for i in record["card"]["supportedInterfaces"]]
            assert urls == [f"{gw.origin}/a2a/echo/", f"{gw.origin}/a2a/echo/rest"]
            assert await gw.names() == ["echo"]
        db = tmp_path / "agentplex-agents.db"  # the default file, beside the config
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # a damaged record hides nothing else
            conn.execute("INSERT INTO agents (name, spec) VALUES ('broken', 'not json')")

        # a new gateway on the same file: the agent is back, card fetched anew, and can be deleted
        async with gateway(config(), source) as gw:
            (agent,) = await gw.list()
            assert agent["name"] == "echo" and agent["source"] == "runtime" and agent["healthy"] is True
            assert agent["card"]["name"] == "Echo"
            # ... and callable through the gateway: the card the client reads points back at it
            before = len(echo.seen)
            assert await send_text(agent["url"], "hello again") == "echo: hello again"
            assert [path for _, path, _ in echo.seen[before:]] == ["/"]  # one JSON-RPC call, card from the gateway
            assert (await gw.delete("echo")).json() == {"deleted": "echo"}
            assert await gw.names() == []
            assert (await gw.delete("echo")).status_code == 404

        async with gateway(config(), source) as gw:
            assert await gw.names() == []  # the deletion persisted too


async def test_sqlite_file_shared_by_two_gateways(tmp_path: Path) -> None:
    """Two gateways on one machine may share the file: a miss asks it, the health loop reloads it."""
    text = config(registry=", sqlite: shared.db")
    async with (
        serve(echo_agent) as echo,
        gateway(text, tmp_path / "a.yaml") as a,
        gateway(text, tmp_path / "b.yaml") as b,
    ):
        assert (await a.register({"name": "echo", "url": echo.url})).status_code == 201
        assert (await b.show("echo")).status_code == 200
        assert (await b.delete("echo")).status_code == 200
        await eventually(lambda: _names_are(a, []), "A reloading B's deletion from the file")


async def test_sqlite_file_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    text = config(registry=", sqlite: missing/agents.db")
    with pytest.raises(ConfigError, match=r"a2a\.registry\.sqlite: .*folder .*missing.* does not exist"):
        async with gateway(text, tmp_path / "gateway.yaml"):
            pass


async def test_redis_registry_is_shared_by_replicas(tmp_path: Path, redis: RedisServer) -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}:agents"
    text = config(registry=f", redis: {{url: '{redis.url}', timeout: 1s}}, prefix: '{prefix}'")
    async with (
        serve(echo_agent) as echo,
        gateway(text, tmp_path / "a.yaml") as a,
        gateway(text, tmp_path / "b.yaml") as b,
    ):
        assert (await a.register({"name": "echo", "url": echo.url})).status_code == 201
        # B asks the store about a name it does not know yet: served at once
        shown = await b.show("echo")
        assert shown.status_code == 200, shown.text
        assert shown.json()["url"] == f"{b.origin}/a2a/echo" and shown.json()["card"]["name"] == "Echo"
        assert await b.names() == ["echo"]
        assert await send_text(f"{b.origin}/a2a/echo", "via B") == "echo: via B"  # B proxies A's registration

        async with serve(functools.partial(echo_agent, name="Second")) as second:
            assert (await b.register({"name": "second", "url": second.url})).status_code == 201
            await eventually(lambda: _names_are(a, ["echo", "second"]), "A seeing B's registration")
            # a deletion on A reaches B (pub/sub), and a third replica starts with what is stored
            assert (await a.delete("second")).status_code == 200
            await eventually(lambda: _names_are(b, ["echo"]), "B seeing A's deletion")
            async with gateway(text, tmp_path / "c.yaml") as c:
                assert await c.names() == ["echo"]
        assert not (tmp_path / "agentplex-agents.db").exists()  # Redis replaces the SQLite file


async def _names_are(gw: Gateway, names: list[str]) -> bool:
    return await gw.names() == names


# -- health -----------------------------------------------------------------------------------------


async def test_unhealthy_agents_are_marked_not_dropped(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        fixed, runtime = Restartable(tg, "Fixed"), Restartable(tg, "Runtime")
        await runtime.start()  # `fixed` is down when the gateway starts: kept, unhealthy
        async with gateway(config(agents={"fixed": fixed.url}), tmp_path / "g.yaml") as gw:
            (down,) = await gw.list()
            assert down["name"] == "fixed" and down["source"] == "config"
            assert down["healthy"] is False and "'fixed'" in down["lastError"] and down["card"] is None
            assert (await gw.register({"name": "runtime", "url": runtime.url})).status_code == 201

            await fixed.start()
            await eventually(lambda: _health(gw, fixed=True, runtime=True), "the config agent coming up")
            assert (await gw.show("fixed")).json()["card"]["name"] == "Fixed"

            await runtime.stop()
            record = await eventually(lambda: _health(gw, fixed=True, runtime=False), "the runtime agent marked down")
            error = record["runtime"]["lastError"]
            assert "'runtime'" in error and runtime.url in error
            assert record["runtime"]["card"]["name"] == "Runtime"  # the last good card is kept

            await fixed.stop()
            await eventually(lambda: _health(gw, fixed=False, runtime=False), "both marked down")
            await fixed.start()
            await runtime.start()
            record = await eventually(lambda: _health(gw, fixed=True, runtime=True), "both healthy again")
            assert record["runtime"]["lastError"] is None and record["fixed"]["lastError"] is None
        await fixed.stop()
        await runtime.stop()


async def _health(gw: Gateway, **expected: bool) -> dict[str, dict[str, Any]] | None:
    found = {agent["name"]: agent for agent in await gw.list()}
    if {name: agent["healthy"] for name, agent in found.items()} == expected:
        return found
    return None


# -- registration -----------------------------------------------------------------------------------


async def test_registration_rules_and_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    not_json = card_server(b"<html>hello</html>", content_type="text/html")
    no_interfaces = card_server(b'{"name": "Nameless", "skills": []}')
    async with (
        serve(echo_agent) as echo,
        serve(lambda base: not_json) as html,
        serve(lambda base: no_interfaces) as incomplete,
        serve(lambda base: card_server(None)) as nothing,
        gateway(config(agents={"fixed": echo.url}), tmp_path / "g.yaml") as gw,
    ):
        good = {"name": "echo", "url": echo.url}
        # authentication is the route's; the registration rule decides who may change the registry
        assert (await gw.register(good, headers={})).status_code == 401
        refused = await gw.register(good, headers=USER)
        assert refused.status_code == 403 and "registration.allow" in refused.json()["error_description"]
        assert (await gw.delete("fixed", headers=USER)).status_code == 403

        # why a URL gave no card is the operator's to read (in the log), not the registrant's: it would make
        # the registry a probe that reports the status and content of any URL the gateway can reach
        for url, reason in [
            (html.url, "is not JSON"),
            (incomplete.url, "lacks supportedInterfaces"),
            (nothing.url, "answered 404"),
            (f"http://127.0.0.1:{free_port()}", "cannot fetch the card"),
        ]:
            with caplog.at_level(logging.WARNING, "agentplex.a2a.registry"):
                bad = await gw.register({"name": "bad", "url": url})
            assert bad.status_code == 502, bad.text
            assert bad.json() == {
                "error": "bad_agent_card",
                "error_description": "agent 'bad': no usable agent card could be fetched from its URL",
            }
            assert reason in caplog.records[-1].getMessage()
        assert await gw.names() == ["fixed"]

        for body, status, words in [
            ({"name": "no spaces", "url": echo.url}, 422, "invalid name"),
            ({"name": "agents", "url": echo.url}, 422, "reserved"),
            ({"name": "x", "url": "ftp://example.com"}, 422, "http:// or https://"),
            ({"name": "x", "url": echo.url, "extra": 1}, 422, "extra"),
            ({"name": "x"}, 422, "url"),
            ([1, 2], 400, "JSON object"),
            ({"name": "fixed", "url": echo.url}, 409, "config"),
        ]:
            response = await gw.register(body)
            assert response.status_code == status, (body, response.text)
            assert words in response.json()["error_description"], (body, response.json())
        not_json_body = await gw.http.post(f"{gw.origin}/a2a/agents", content=b"{nope", headers=ADMIN)
        assert not_json_body.status_code == 400
        huge = await gw.register({"name": "x", "url": echo.url, "headers": {"h": "v" * 70_000}})
        assert huge.status_code == 413

        assert (await gw.delete("fixed")).status_code == 409
        assert (await gw.delete("ghost")).status_code == 404
        put = await gw.http.put(f"{gw.origin}/a2a/agents", headers=ADMIN)
        assert put.status_code == 405 and put.headers["allow"] == "GET, POST"

        # registering again under the same runtime name replaces the registration (200, not 201)
        assert (await gw.register(good)).status_code == 201
        async with serve(functools.partial(echo_agent, name="Newer")) as newer:
            again = await gw.register({"name": "echo", "url": newer.url, "headers": {"x-token": "t"}})
            assert again.status_code == 200 and again.json()["card"]["name"] == "Newer"
            assert newer.seen[-1][2]["x-token"] == "t"  # the agent's headers go with the card fetch
            assert (await gw.delete("echo")).status_code == 200
        assert await gw.names() == ["fixed"]


# -- discovery --------------------------------------------------------------------------------------


async def test_discovery_filters_by_skill_tag_name_and_authorization(tmp_path: Path) -> None:
    cards = {
        "weather": [("forecast", ["weather", "daily"]), ("alerts", ["weather"])],
        "translator": [("translate", ["language"])],
        "secret": [("forecast", ["internal"])],
    }
    async with contextlib.AsyncExitStack() as stack:
        urls = {
            name: (await stack.enter_async_context(serve(_card_app(name, skills)))).url
            for name, skills in cards.items()
        }
        gw = await stack.enter_async_context(gateway(config(), tmp_path / "g.yaml"))
        for name, url in urls.items():
            assert (await gw.register({"name": name, "url": url})).status_code == 201

        assert await gw.names() == ["secret", "translator", "weather"]
        assert await gw.names(skill="forecast") == ["secret", "weather"]
        assert await gw.names(skill="translate") == ["translator"]
        assert await gw.names(skill="nope") == []
        assert await gw.names(tag="WEATHER") == ["weather"]
        assert await gw.names(tag="internal") == ["secret"]
        assert await gw.names(name="TRANS") == ["translator"]
        assert await gw.names(name="e", skill="forecast") == ["secret", "weather"]
        both = await gw.http.get(f"{gw.origin}/a2a/agents?tag=language&tag=internal", headers=ADMIN)
        assert sorted(a["name"] for a in both.json()["agents"]) == ["secret", "translator"]

        # the rule hides `secret` from callers whose key is not an admin's: in lists and by name
        assert await gw.names(USER) == ["translator", "weather"]
        assert await gw.names(USER, skill="forecast") == ["weather"]
        hidden = await gw.show("secret", USER)
        assert hidden.status_code == 404 and hidden.json()["error_description"] == "no agent named 'secret'"
        assert (await gw.show("ghost", USER)).json()["error_description"] == "no agent named 'ghost'"
        assert (await gw.show("secret")).status_code == 200
        assert (await gw.http.get(f"{gw.origin}/a2a/agents")).status_code == 401

        (weather,) = await gw.list(USER, name="weather")
        assert weather["card"]["supportedInterfaces"][0]["url"] == f"{gw.origin}/a2a/weather/"
        assert [s["id"] for s in weather["card"]["skills"]] == ["forecast", "alerts"]


def _card_app(name: str, skills: list[tuple[str, list[str]]]) -> Callable[[str], Recorder]:
    return lambda base: card_server(custom_card(base, name.title(), skills))


async def test_redis_change_feed_and_outage(tmp_path: Path, redis: RedisServer) -> None:
    """Without periodic reloads (no health loop), replicas follow each other through pub/sub alone;
    while Redis is down registration answers 503 and discovery keeps working; afterwards both recover."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:agents"
    async with serve(echo_agent) as echo, httpx.AsyncClient() as cards:
        fetch = functools.partial(fetch_card, cards)

        def replica() -> AgentRegistry:
            store = RedisStore(redis.url, prefix=prefix, timeout=1.0)
            return AgentRegistry([], fetch, store=store, health_interval=0)

        async with replica().running() as a, replica().running() as b:
            await a.register(AgentSpec("echo", echo.url))
            await eventually(lambda: _known(b, "echo"), "B learning of A's registration from the change feed")
            assert await b.unregister("echo") is True
            await eventually(lambda: _unknown(a, "echo"), "A learning of B's deletion from the change feed")

            redis.stop()
            with pytest.raises(StoreError, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
                await a.register(AgentSpec("echo", echo.url))
            assert a.get("echo") is None  # not stored, so not served either
            redis.start()
            await eventually(lambda: _registers(a, AgentSpec("echo", echo.url)), "registration once Redis is back")
            await eventually(lambda: _known(b, "echo"), "B following again after the outage", timeout=20)

    text = config(registry=f", redis: {{url: '{redis.url}', timeout: 500ms}}, prefix: '{prefix}-gw'")
    async with serve(echo_agent) as echo, gateway(text, tmp_path / "g.yaml") as gw:
        redis.stop()
        down = await gw.register({"name": "echo", "url": echo.url})
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "registry_unavailable" and "'echo'" in down.json()["error_description"]
        assert await gw.names() == []
        assert (await gw.show("other")).status_code == 404  # a miss whose store lookup fails is still a 404
        redis.start()


async def _known(registry: AgentRegistry, name: str) -> bool:
    return registry.get(name) is not None


async def _unknown(registry: AgentRegistry, name: str) -> bool:
    return registry.get(name) is None


async def _registers(registry: AgentRegistry, spec: AgentSpec) -> bool:
    try:
        await registry.register(spec)
    except StoreError:
        return False
    return True


async def test_names_are_decoded_once_unique_whatever_their_case_and_short(tmp_path: Path) -> None:
    async with serve(echo_agent) as echo, gateway(config(agents={"Fixed": echo.url}), tmp_path / "g.yaml") as gw:
        assert (await gw.register({"name": "good", "url": echo.url})).status_code == 201
        # `%25` is `%`: the path names `go%6fd` (decoded once), which is not `good`
        for verb in ("GET", "DELETE"):
            response = await gw.http.request(verb, f"{gw.origin}/a2a/agents/go%256fd", headers=ADMIN)
            assert response.status_code == 404, (verb, response.text)
            assert response.json()["error_description"] == "no agent named 'go%6fd'"
        assert await gw.names() == ["Fixed", "good"]

        for name, taken in [("GOOD", "good"), ("fixed", "Fixed"), ("AGENTS", None)]:
            clash = await gw.register({"name": name, "url": echo.url})
            assert clash.status_code == (422 if taken is None else 409), clash.text
            assert (repr(taken) if taken else "reserved") in clash.json()["error_description"]
        assert (await gw.register({"name": "good", "url": echo.url})).status_code == 200  # the same name replaces

        long = await gw.register({"name": "a" * 65, "url": echo.url})
        assert long.status_code == 422 and "at most 64" in long.json()["error_description"], long.text
        assert (await gw.register({"name": "a" * 64, "url": echo.url})).status_code == 201
        assert await gw.names() == ["Fixed", "a" * 64, "good"]

    twice = "a2a:\n  agents: [{name: Echo, url: 'http://127.0.0.1:1'}, {name: echo, url: 'http://127.0.0.1:2'}]\n"
    with pytest.raises(ConfigError, match=r"a2a\.agents\[1\]\.name: .*duplicate agent name 'echo'.*'Echo'"):
        parse_config(twice, "g.yaml")
