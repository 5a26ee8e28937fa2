"""Agents as MCP tools: an MCP-only client lists A2A agents as tools of the gateway, calls them, sees
their streaming updates as progress, and sees the tool list follow the registry."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, GetTaskRequest, Part, TaskState
from mcp import Client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette

from federation.agent_tools import AgentToolOptions, build_agent_server
from federation.agents import Agent, AgentRegistry, AgentSpec
from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import RunningGateway, free_port, mcp_yaml, run_gateway, stdio_target
from tests.fixtures.a2a_agent import Recorder, RunningAgent, echo_agent, legacy_agent, serve

pytestmark = pytest.mark.anyio


class Broken(AgentExecutor):
    """A task that starts, then fails with a reason (the shared fixture agents never fail)."""

    async def execute(self, context: RequestContext, event_queue: Any) -> None:
        await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        await updater.failed(updater.new_agent_message([Part(text="out of ink")]))

    async def cancel(self, context: RequestContext, event_queue: Any) -> None:
        return None


def broken_agent(base: str) -> Recorder:
    card = AgentCard(
        name="Broken",
        description="Always fails",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=base + "/", protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="fail", name="fail", description="fails", tags=["f"])],
    )
    handler = DefaultRequestHandler(agent_executor=Broken(), task_store=InMemoryTaskStore(), agent_card=card)
    return Recorder(Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")]))


@contextlib.asynccontextmanager
async def agents() -> AsyncIterator[dict[str, RunningAgent]]:
    """echo (A2A 1.0, streams), legacy (A2A 0.3) and broken, each on its own loopback port."""
    async with serve(echo_agent) as echo, serve(legacy_agent) as legacy, serve(broken_agent) as broken:
        yield {"echo": echo, "legacy": legacy, "broken": broken}


def config(running: dict[str, str], tools: str = "{}", policies: str = "") -> str:
    """`mcp:` (one stdio target, optional policies) + an `a2a:` block with these agents and `tools`."""
    listed = "".join(f"\n  - {{name: {name}, url: '{url}'}}" for name, url in running.items())
    opts = {"policies": policies} if policies else {}
    a2a = (
        f"a2a:\n  port: 0\n  registry: {{sqlite: null, healthInterval: 0}}\n  tools: {tools}\n  agents:{listed}\n"
        "  registration: {allowNetworks: [127.0.0.0/8]}\n"  # runtime agents on loopback (test_tool_list_follows_the_registry)
    )
    return mcp_yaml(stdio_target("local"), **opts) + a2a


def urls(running: dict[str, RunningAgent]) -> dict[str, str]:
    return {name: agent.url for name, agent in running.items()}


def text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def registry_of(gw: RunningGateway) -> AgentRegistry:
    registry = gw.gateway.agent_registry
    assert registry is not None
    return registry


async def test_each_agent_is_a_tool_that_answers() -> None:
    async with (
        agents() as running,
        run_gateway(config(urls(running))) as gw,
        Client(gw.url, mode="legacy", cache=None) as client,
    ):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"agents_echo", "agents_legacy", "agents_broken", "local_echo"} <= set(tools)
        echo = tools["agents_echo"]
        assert echo.input_schema["required"] == ["message"]
        assert set(echo.input_schema["properties"]) == {"message", "contextId", "taskId"}
        assert echo.description is not None and "Echoes what it is told" in echo.description
        assert "shout: echoes text loudly" in echo.description

        # A Message reply.
        quick = await client.call_tool("agents_echo", {"message": "quick hi"})
        assert not quick.is_error and text(quick) == "quick: quick hi"

        # A streamed task: each update is a progress notification; the result is the artifact.
        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        echoed = await client.call_tool("agents_echo", {"message": "the sea"}, progress_callback=on_progress)
        assert not echoed.is_error and text(echoed) == "echo: the sea"
        assert echoed.structured_content is not None and echoed.structured_content["state"] == "completed"
        assert "working" in progress  # the agent's status text
        assert "echo: the sea" in progress  # its artifact, as it arrived
        assert echo_agent_calls(running["echo"]) >= 2  # the calls went to the agent itself

        # A failed task is a tool error with the agent's reason.
        failed = await client.call_tool("agents_broken", {"message": "write"})
        assert failed.is_error and "'broken'" in text(failed) and "out of ink" in text(failed)

        # Input required: the answer says so, with the ids to answer with; answering completes the task.
        asked = await client.call_tool("agents_echo", {"message": "input"})
        assert not asked.is_error and "what next?" in text(asked)
        ids = asked.structured_content
        assert ids is not None and ids["state"] == "input-required" and ids["taskId"] in text(asked)
        answered = await client.call_tool(
            "agents_echo", {"message": "Ada", "taskId": ids["taskId"], "contextId": ids["contextId"]}
        )
        assert not answered.is_error and text(answered) == "echo: Ada"
        assert answered.structured_content is not None and answered.structured_content["taskId"] == ids["taskId"]

        # Continuing a conversation keeps its contextId.
        again = await client.call_tool("agents_echo", {"message": "quick more", "contextId": "conv-1"})
        assert again.structured_content == {"contextId": "conv-1"}

        # An A2A 0.3 agent works the same way.
        legacy = await client.call_tool("agents_legacy", {"message": "old times"})
        assert not legacy.is_error and text(legacy) == "echo: old times"


def echo_agent_calls(agent: RunningAgent) -> int:
    return sum(1 for method, path, _ in agent.seen if method == "POST" and path == "/")


async def test_tool_list_follows_the_registry() -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        agents() as running,
        run_gateway(config({"echo": running["echo"].url, "legacy": running["legacy"].url})) as gw,
        Client(gw.url, mode="legacy", cache=None, message_handler=on_message) as client,
        Client(gw.url, cache=None) as modern,
    ):
        assert {"agents_echo", "agents_legacy"} <= {t.name for t in (await client.list_tools()).tools}
        registry = registry_of(gw)

        await registry.remove("echo")
        with anyio.fail_after(10):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert "agents_echo" not in names and "agents_legacy" in names
        with pytest.raises(MCPError, match="Unknown tool: agents_echo"):
            await client.session.call_tool("agents_echo", {"message": "hi"})

        changed = anyio.Event()
        await modern.list_tools()
        async with modern.listen(tools_list_changed=True) as subscription:
            await registry.register(AgentSpec("newcomer", running["echo"].url))
            with anyio.fail_after(10):
                await changed.wait()  # the handshake-era client is told
                async for event in subscription:  # and so is the 2026-07-28 listener
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        assert "agents_newcomer" in {t.name for t in (await modern.list_tools()).tools}
        assert text(await modern.call_tool("agents_newcomer", {"message": "quick hello"})) == "quick: quick hello"


async def test_skills_become_tools_of_their_own() -> None:
    tools = "{agents: [echo], skills: true, target: team}"
    async with (
        agents() as running,
        run_gateway(config(urls(running), tools)) as gw,
        Client(gw.url, mode="legacy", cache=None) as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools if t.name.startswith("team_")}
        assert names == {"team_echo.echo", "team_echo.shout"}  # only the chosen agent, one tool per skill
        shouted = await client.call_tool("team_echo.shout", {"message": "hey"})
        assert text(shouted) == "echo[shout]: hey"  # the skill travels as the message's `skillId` metadata


async def test_skill_ids_become_valid_distinct_tool_names() -> None:
    skills = [{"id": "sum up!", "name": "summarize"}, {"id": "sum up?", "name": "summarize too"}, {"id": "x" * 200}]

    async def fetch(spec: AgentSpec) -> Agent:
        return Agent(spec.name, spec.url, card={"name": "w", "description": "writes", "skills": skills})

    registry = AgentRegistry([AgentSpec("writer", "http://127.0.0.1:9")], fetch)
    async with registry.running():
        server = build_agent_server(registry, AgentToolOptions(skills=True))
        async with Client(server, mode="legacy", cache=None) as client:
            names = [t.name for t in (await client.list_tools()).tools]
    assert len(set(names)) == 3
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", name)
    assert sorted(names)[0].startswith("writer.sum_up_-")


async def test_an_unreachable_agent_fails_its_calls_by_name() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with (
        serve(echo_agent) as echo,
        run_gateway(config({"echo": echo.url, "gone": dead})) as gw,
        Client(gw.url, mode="legacy", cache=None) as client,
    ):
        assert "agents_gone" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("agents_gone", {"message": "hi"})
        assert result.is_error and "agent 'gone' is unavailable" in text(result)
        assert text(await client.call_tool("agents_echo", {"message": "quick still"})) == "quick: quick still"


async def test_a_call_that_runs_out_of_time_cancels_the_agents_task() -> None:
    async with (
        serve(echo_agent) as echo,
        run_gateway(config({"echo": echo.url}, "{timeout: 1}")) as gw,
        Client(gw.url, mode="legacy", cache=None) as client,
    ):
        with anyio.fail_after(20):
            late = await client.call_tool("agents_echo", {"message": "slow"})
        assert late.is_error and "did not finish within 1s (its task was canceled)" in text(late)
        assert late.structured_content is not None
        async with await create_client(echo.url, ClientConfig(streaming=False)) as a2a:
            task = await a2a.get_task(GetTaskRequest(id=late.structured_content["taskId"]))
        assert task.status.state == TaskState.TASK_STATE_CANCELED


async def test_authorization_rules_apply_to_agent_tools() -> None:
    rules = "{mcpAuthorization: {rules: ['!(mcp.tool.target == \"agents\" && mcp.tool.name == \"echo\")']}}"
    async with (
        agents() as running,
        run_gateway(config(urls(running), policies=rules)) as gw,
        Client(gw.url, mode="legacy", cache=None) as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
        assert "agents_legacy" in names and "agents_echo" not in names
        with pytest.raises(MCPError, match="Unknown tool: agents_echo"):
            await client.session.call_tool("agents_echo", {"message": "hi"})
        assert echo_agent_calls(running["echo"]) == 0


def test_agent_tools_need_an_mcp_block() -> None:
    a2a = "a2a:\n  port: 0\n  registry: {sqlite: null}\n  tools: {}\n"
    with pytest.raises(ConfigError, match=r"a2a\.tools"):
        Gateway(parse_config(a2a, "<test>"))
    with pytest.raises(ConfigError, match=r"a2a\.tools\.target"):
        Gateway(parse_config(mcp_yaml(stdio_target("agents")) + a2a, "<test>"))
