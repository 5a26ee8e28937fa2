"""Agents as MCP tools: an in-process MCP server whose tools send a text message to A2A agents.

MCP-only clients cannot speak A2A; this server lets them use the registry's agents anyway. The
gateway mounts it as a `memory` target of a federation, so the tools get federation's naming,
authorization rules, rate limits, list-change relaying and progress relaying like any other tool.

One tool per agent (named after the agent) or, with `skills`, one per skill (`<agent>.<skill id>`).
A call sends `message` to the agent with the a2a-sdk client (streaming when the card allows it);
each status or artifact update is reported as MCP progress, and the result is the agent's reply:
a Message's text, or the finished Task's artifacts. A task that fails, is rejected or canceled is a
tool error; one that needs input says so, with the ids to answer it with (`taskId`, `contextId`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import mcp_types as types
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.helpers import get_artifact_text
from a2a.types import (
    AgentCard,
    Artifact,
    CancelTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict, ParseError
from google.protobuf.struct_pb2 import Struct
from mcp.server import Server, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError

from federation.agents import Agent, AgentRegistry
from protocols import internals

logger = logging.getLogger("agentplex.agent_tools")

_TOOL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_FAILED = {
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_REJECTED: "was rejected",
    TaskState.TASK_STATE_CANCELED: "was canceled",
}

# States a task rests in: nothing to cancel when a call ends there.
_SETTLED = {
    *_FAILED,
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "The text to send to the agent"},
        "contextId": {
            "type": "string",
            "description": "Continue a conversation: the contextId of an earlier answer",
        },
        "taskId": {
            "type": "string",
            "description": "Answer a task that asked for input: the taskId of that answer (with its contextId)",
        },
    },
    "required": ["message"],
}


@dataclass(frozen=True)
class AgentToolOptions:
    """Which agents become tools, and how (the `a2a.tools` config block, as plain values)."""

    agents: Sequence[str] = ()  # empty: every agent in the registry
    skills: bool = False  # one tool per skill instead of one per agent
    timeout: float = 300.0  # seconds one call may take, end to end


@dataclass(frozen=True)
class _AgentTool:
    """One exposed tool: which agent (and skill) it speaks to."""

    tool: types.Tool
    agent: str
    skill: str | None = None


@dataclass
class _Run:
    """One run of the server (one in-memory connection): its clients and its change announcer."""

    changes: Any  # MemoryObjectSendStream[None]: a wake-up for the announcer, coalesced
    connections: set[Any] = field(default_factory=set)


class Reach(Protocol):
    """How connections to agents are held to the gateway's address rules (gateway/agent_addresses.py)."""

    def prepare(self, client: httpx.AsyncClient) -> None:
        """Make `client`'s connections checkable."""

    def reaching(self, source: str) -> contextlib.AbstractContextManager[None]:
        """The context to connect to an agent from `source` ("config" or "runtime") in."""
        ...


def build_agent_server(
    registry: AgentRegistry, options: AgentToolOptions | Any, reach: Reach | None = None
) -> Server[Any]:
    """The MCP server that exposes `registry`'s agents as tools (for a `memory` target).

    `options` is an `AgentToolOptions` or anything with the same attributes (the config model).
    """
    opts = AgentToolOptions(tuple(options.agents), bool(options.skills), float(options.timeout))
    return AgentToolServer(registry, opts, reach).server


class AgentToolServer:
    """Keeps the tool list in step with the registry and answers calls by talking A2A.

    A low-level `Server` rather than `MCPServer`: the tool list is data derived from the registry
    (replaced whole on each change, exact input schema), and `MCPServer()` would configure the
    process's root logging.
    """

    def __init__(self, registry: AgentRegistry, options: AgentToolOptions, reach: Reach | None = None) -> None:
        self.registry = registry
        self.options = options
        self.reach = reach
        self.tools: dict[str, _AgentTool] = {}
        self._runs: list[_Run] = []
        self._clients: dict[str, tuple[Any, httpx.AsyncClient]] = {}  # agent -> (its url+headers, client)
        self.server: Server[Any] = _AgentsServer(
            "agentplex-agents",
            version="0.1.0",
            lifespan=self._lifespan,
            get_tool_input_schema=lambda name: INPUT_SCHEMA if name in self.tools else None,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        self.server.middleware.append(self._track)
        self._sync()
        registry.on_change(self._changed)

    # -- the tool list ---------------------------------------------------------------------

    def _sync(self) -> bool:
        """Rebuild the tool list from the registry; True when what clients see changed."""
        wanted = set(self.options.agents)
        tools: dict[str, _AgentTool] = {}
        for agent in self.registry.all():
            if wanted and agent.name not in wanted:
                continue
            for entry in _agent_tools(agent, self.options.skills):
                if entry.tool.name in tools:
                    logger.warning("agent tools: %s would be exposed twice; keeping the first", entry.tool.name)
                    continue
                tools[entry.tool.name] = entry
        before = _fingerprint(self.tools)
        self.tools = tools
        return _fingerprint(tools) != before

    def _changed(self) -> None:
        """Registry listener (sync): swap the tool list now, announce it from each run's task."""
        if not self._sync():
            return
        for run in self._runs:
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                run.changes.send_nowait(None)  # a wake-up already pending covers this change too

    async def _list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return types.ListToolsResult(tools=[entry.tool for entry in self.tools.values()])

    # -- runs, connections, announcements ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        """Each run (one per in-memory connection) announces tool-list changes to its clients."""
        send, receive = anyio.create_memory_object_stream[None](1)
        run = _Run(send)
        self._runs.append(run)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._announce, run, receive)
                try:
                    yield {"run": run}
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._runs.remove(run)
            send.close()
            if not self._runs:  # nobody is connected: free the agents' HTTP clients
                await self._close_clients()

    async def _track(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        """Remember each connection that talks to us, so changes can be announced to it."""
        run = ctx.lifespan_context.get("run") if isinstance(ctx.lifespan_context, dict) else None
        connection = internals.connection_of(ctx.session)
        if run is not None and connection is not None and connection not in run.connections:
            run.connections.add(connection)
            connection.exit_stack.callback(run.connections.discard, connection)
        return await call_next(ctx)

    async def _announce(self, run: _Run, changes: Any) -> None:
        async with changes:
            async for _ in changes:
                for connection in list(run.connections):
                    await connection.send_tool_list_changed()  # best effort: never raises
                for name in [n for n in self._clients if self.registry.get(n) is None]:
                    _, client = self._clients.pop(name)  # a removed agent's connections are closed
                    await client.aclose()

    # -- calls -----------------------------------------------------------------------------

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        entry = self.tools.get(params.name)
        if entry is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        args = params.arguments or {}
        text = args.get("message")
        context_id, task_id = args.get("contextId") or "", args.get("taskId") or ""
        if not isinstance(text, str) or not all(isinstance(v, str) for v in (context_id, task_id)):
            raise MCPError(types.INVALID_PARAMS, "'message' must be a string (and contextId, taskId strings if given)")
        agent = self.registry.get(entry.agent)
        if agent is None:
            return _error(f"agent '{entry.agent}' is no longer registered")
        if not agent.healthy:
            return _error(f"agent '{agent.name}' is unavailable: {agent.last_error or 'its health check failed'}")
        message = Message(
            role=Role.ROLE_USER,
            message_id=uuid.uuid4().hex,
            parts=[Part(text=text)],
            context_id=context_id,
            task_id=task_id,
        )
        if entry.skill is not None:
            message.metadata.CopyFrom(_struct({"skillId": entry.skill}))  # a hint: A2A has no skill selector
        with self.reach.reaching(agent.source) if self.reach is not None else contextlib.nullcontext():
            return await self._send(ctx, params.name, agent, message)

    async def _send(self, ctx: ServerRequestContext[Any], tool: str, agent: Agent, message: Message) -> Any:
        """Send `message` to `agent` and follow the answer; the call's result (or tool error)."""
        outcome = _Outcome()
        try:
            card = _pinned(parse_agent_card(copy.deepcopy(agent.card)), agent.url)
            if not card.supported_interfaces:
                raise ValueError("its card lists no interface to reach it at")
            config = ClientConfig(streaming=True, httpx_client=await self._client(agent))
            client = ClientFactory(config).create(card)  # streams only when the card says it can
        except (ParseError, ValueError) as exc:
            return _error(f"agent '{agent.name}' cannot be called: {exc}")
        try:
            with anyio.fail_after(self.options.timeout):
                await self._exchange(ctx, client, message, outcome)
        except TimeoutError:
            canceled = " (its task was canceled)" if await _abandon(client, outcome) else ""
            return _error(
                f"agent '{agent.name}' did not finish within {self.options.timeout:g}s{canceled}", outcome.ids()
            )
        except anyio.get_cancelled_exc_class():
            await _abandon(client, outcome)  # the caller gave up: so does the agent
            raise
        except (A2AError, httpx.HTTPError, ParseError, ValueError, OSError) as exc:
            logger.info("agent tool %s: agent %s failed: %s", tool, agent.name, exc)
            return _error(f"agent '{agent.name}' failed: {exc or type(exc).__name__}", outcome.ids())
        return outcome.result(agent.name)

    async def _exchange(self, ctx: ServerRequestContext[Any], client: Any, message: Message, outcome: _Outcome) -> None:
        """Send one message and follow the answer to its end, relaying updates as progress."""
        steps = 0
        async for event in client.send_message(SendMessageRequest(message=message)):
            update = outcome.apply(event)
            if update is not None:
                steps += 1
                with contextlib.suppress(Exception):  # a client that went away does not fail the call
                    await ctx.session.report_progress(steps, None, update)

    async def _client(self, agent: Agent) -> httpx.AsyncClient:
        """One pooled HTTP client per agent (its headers set once); replaced when the agent's URL or headers change."""
        key = (agent.url, tuple(sorted(agent.headers.items())))
        held = self._clients.get(agent.name)
        if held is not None and held[0] == key and not held[1].is_closed:
            return held[1]
        timeout = self.options.timeout
        client = httpx.AsyncClient(headers=agent.headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        if self.reach is not None:
            self.reach.prepare(client)
        self._clients[agent.name] = (key, client)
        if held is not None:
            await held[1].aclose()
        return client

    async def _close_clients(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            with anyio.CancelScope(shield=True):
                await client.aclose()


class _AgentsServer(Server[Any]):
    """Advertises `tools.listChanged` in the handshake era: the tool list follows the registry."""

    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True), *args, **kwargs
        )


class _Outcome:
    """Folds an answer's events (a Message, or a Task and its updates) into the final state."""

    def __init__(self) -> None:
        self.message: Message | None = None
        self.task: Task | None = None
        self.artifacts: dict[str, Artifact] = {}  # by artifact id, in arrival order

    def apply(self, event: StreamResponse) -> str | None:
        """Record one event; returns the progress text for an update worth reporting."""
        kind = event.WhichOneof("payload")
        if kind == "message":
            self.message = event.message
            return None
        if kind == "task":
            self.task = event.task
            for artifact in event.task.artifacts:
                self.artifacts[artifact.artifact_id] = artifact
            return None
        if kind == "status_update":
            update = event.status_update
            task = self._task(update.task_id, update.context_id)
            task.status.CopyFrom(update.status)
            text = _parts_text(update.status.message.parts) if update.status.HasField("message") else ""
            return text or _state(update.status.state)
        if kind == "artifact_update":
            update = event.artifact_update
            self._task(update.task_id, update.context_id)
            held = self.artifacts.get(update.artifact.artifact_id)
            if update.append and held is not None:
                held.parts.extend(update.artifact.parts)
            else:
                self.artifacts[update.artifact.artifact_id] = update.artifact
            artifact = update.artifact
            return _parts_text(artifact.parts) or f"artifact {artifact.name or artifact.artifact_id}"
        return None

    def _task(self, task_id: str, context_id: str) -> Task:
        if self.task is None:  # an update before the task itself: start from its ids
            self.task = Task(id=task_id, context_id=context_id)
        return self.task

    def ids(self) -> dict[str, Any]:
        task = self.task
        if task is None:
            return {}
        return {"taskId": task.id, "contextId": task.context_id, "state": _state(task.status.state)}

    def result(self, agent: str) -> types.CallToolResult:
        if self.message is not None and self.task is None:
            text = _parts_text(self.message.parts) or "(the agent answered without text)"
            return _answer(text, {"contextId": self.message.context_id})
        task = self.task
        if task is None:
            return _error(f"agent '{agent}' sent no answer")
        state = task.status.state
        ids = self.ids()
        said = _parts_text(task.status.message.parts) if task.status.HasField("message") else ""
        if self.message is not None:  # a final Message after the task's updates is the agent's last word
            said = _parts_text(self.message.parts) or said
        if state in _FAILED:
            return _error(f"agent '{agent}': task {task.id} {_FAILED[state]}: {said or 'no reason given'}", ids)
        if state == TaskState.TASK_STATE_AUTH_REQUIRED:
            return _error(f"agent '{agent}': task {task.id} needs authentication: {said or 'no details given'}", ids)
        if state == TaskState.TASK_STATE_INPUT_REQUIRED:
            return _answer(
                f"agent '{agent}' needs more input: {said or '(no question given)'}\n"
                f"To answer, call this tool again with taskId={task.id!r} and contextId={task.context_id!r}.",
                ids,
            )
        produced = "\n\n".join(t for t in (get_artifact_text(a) for a in self.artifacts.values()) if t)
        if state == TaskState.TASK_STATE_COMPLETED:
            return _answer(produced or said or f"agent '{agent}' completed task {task.id}", ids)
        so_far = f"\n{produced}" if produced else ""
        return _answer(f"agent '{agent}': task {task.id} is {_state(state)} (the answer ended here){so_far}", ids)


async def _abandon(client: Any, outcome: _Outcome) -> bool:
    """Cancel the agent's task when the call ends before the task did (timeout, caller cancelled);
    True if the agent confirmed it."""
    task = outcome.task
    if task is None or task.status.state in _SETTLED:
        return False
    with anyio.CancelScope(shield=True), anyio.move_on_after(5), contextlib.suppress(Exception):
        await client.cancel_task(CancelTaskRequest(id=task.id))
        return True
    return False


def _pinned(card: AgentCard, url: str) -> AgentCard:
    """The card with every interface on the agent's registered origin (scheme://host:port).

    Calls go where the agent was registered, whatever host its card names: a card cannot send the
    gateway elsewhere, and an agent that advertises an address only it can resolve still works.
    """
    origin = urlsplit(url)
    for interface in card.supported_interfaces:
        there = urlsplit(interface.url)
        if (there.scheme, there.netloc) != (origin.scheme, origin.netloc):
            interface.url = urlunsplit((origin.scheme, origin.netloc, there.path, there.query, ""))
    return card


def _agent_tools(agent: Agent, per_skill: bool) -> list[_AgentTool]:
    card = agent.card
    about = str(card.get("description") or card.get("name") or f"A2A agent {agent.name}").strip()
    skills = agent.skills()
    if not per_skill:
        listed = "; ".join(_skill_line(s) for s in skills)
        text = f"{about}\nSkills: {listed}" if listed else about
        return [_AgentTool(_tool(_tool_name(agent.name), f"Ask the A2A agent '{agent.name}': {text}"), agent.name)]
    tools = []
    for skill in skills:
        skill_id = str(skill.get("id") or skill.get("name") or "")
        if not skill_id:
            continue
        description = f"{_skill_line(skill)} (skill of the A2A agent '{agent.name}': {about})"
        examples = [str(e) for e in skill.get("examples") or [] if isinstance(e, str)]
        if examples:
            description += "\nExamples: " + "; ".join(examples[:5])
        tools.append(_AgentTool(_tool(_tool_name(f"{agent.name}.{skill_id}"), description), agent.name, skill_id))
    return tools


def _skill_line(skill: dict[str, Any]) -> str:
    name = str(skill.get("name") or skill.get("id") or "")
    description = str(skill.get("description") or "").strip()
    return f"{name}: {description}" if description else name


def _tool(name: str, description: str) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=INPUT_SCHEMA)


def _tool_name(raw: str) -> str:
    """A valid MCP tool name (128 of `[A-Za-z0-9._-]`); a changed one gets a digest of the original,
    so two skills never end up with the same name."""
    if _TOOL_NAME.fullmatch(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{_BAD_CHARS.sub('_', raw)[:119]}-{digest}"


def _parts_text(parts: Sequence[Part]) -> str:
    """The readable content of parts: text as is, data as JSON, files by URL or size."""
    out = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            out.append(part.text)
        elif kind == "data":
            out.append(json.dumps(MessageToDict(part.data)))
        elif kind == "url":
            out.append(part.url)
        elif kind == "raw":
            out.append(f"[{len(part.raw)} bytes{' of ' + part.media_type if part.media_type else ''}]")
    return "\n".join(out)


def _state(state: int) -> str:
    return TaskState.Name(state).removeprefix("TASK_STATE_").lower().replace("_", "-")  # type: ignore[arg-type]


def _struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def _answer(text: str, details: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content={k: v for k, v in details.items() if v},
    )


def _error(text: str, details: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content={k: v for k, v in (details or {}).items() if v} or None,
        is_error=True,
    )


def _fingerprint(tools: dict[str, _AgentTool]) -> list[Any]:
    return [entry.tool.model_dump(mode="json", exclude_none=True) for entry in tools.values()]
