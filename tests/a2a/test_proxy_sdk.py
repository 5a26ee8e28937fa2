"""The a2a-sdk client talks to agents through the gateway: it reads the rewritten card, follows it to
the gateway (never to the agent directly) and every A2A method works on both bindings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.helpers import get_artifact_text
from a2a.types import (
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)

from tests.a2a.harness import a2a_yaml
from tests.conftest import RunningGateway, run_gateway
from tests.fixtures.a2a_agent import RunningAgent, echo_agent, legacy_agent, serve

pytestmark = pytest.mark.anyio

BINDINGS = ["JSONRPC", "HTTP+JSON"]


@contextlib.asynccontextmanager
async def through_gateway() -> AsyncIterator[tuple[RunningGateway, RunningAgent, RunningAgent]]:
    async with (
        serve(echo_agent) as echo,
        serve(legacy_agent) as legacy,
        run_gateway(a2a_yaml({"echo": echo.url, "legacy": legacy.url})) as gw,
    ):
        yield gw, echo, legacy


def base(gw: RunningGateway, name: str) -> str:
    return f"http://127.0.0.1:{gw.port}/a2a/{name}"


@contextlib.asynccontextmanager
async def client_for(url: str, binding: str = "JSONRPC", **config: Any) -> AsyncIterator[Client]:
    cfg = ClientConfig(supported_protocol_bindings=[binding], **config)
    async with await create_client(url, client_config=cfg) as client:
        yield client


def say(text: str, **fields: Any) -> SendMessageRequest:
    msg = Message(role=Role.ROLE_USER, message_id=f"m-{id(fields)}-{text}", parts=[Part(text=text)], **fields)
    return SendMessageRequest(message=msg)


def task_id(event: StreamResponse) -> str:
    kind = event.WhichOneof("payload")
    return event.task.id if kind == "task" else getattr(event, kind).task_id


def states(seen: list[StreamResponse]) -> list[str]:
    out = []
    for ev in seen:
        kind = ev.WhichOneof("payload")
        if kind in ("task", "status_update"):
            out.append(TaskState.Name(getattr(ev, kind).status.state).removeprefix("TASK_STATE_"))
    return out


@pytest.mark.parametrize("binding", BINDINGS)
async def test_messages_blocking_and_streaming_go_through_the_gateway(binding: str) -> None:
    async with through_gateway() as (gw, echo, _):
        for streaming in (False, True):
            async with client_for(base(gw, "echo"), binding, streaming=streaming) as client:
                seen = [ev async for ev in client.send_message(say("hello"))]
                if streaming:
                    assert states(seen) == ["SUBMITTED", "WORKING", "COMPLETED"]
                    assert any(ev.WhichOneof("payload") == "artifact_update" for ev in seen)
                else:
                    (only,) = seen
                    assert TaskState.Name(only.task.status.state) == "TASK_STATE_COMPLETED"
                    assert [get_artifact_text(a) for a in only.task.artifacts] == ["echo: hello"]
                task = await client.get_task(GetTaskRequest(id=task_id(seen[-1])))
                assert [get_artifact_text(a) for a in task.artifacts] == ["echo: hello"]
        calls = [(m, p, h) for m, p, h in echo.seen if p != "/.well-known/agent-card.json"]
        assert calls, "the agent saw no calls"
        for _, _, headers in calls:  # every call came through the gateway, none directly
            assert headers["x-forwarded-for"] == "127.0.0.1"
            assert headers["x-forwarded-host"] == f"127.0.0.1:{gw.port}"
        prefix = "/rest/" if binding == "HTTP+JSON" else "/"
        assert all(p.startswith(prefix) for _, p, _ in calls)


@pytest.mark.parametrize("binding", BINDINGS)
async def test_list_cancel_and_subscribe(binding: str) -> None:
    async with (
        through_gateway() as (gw, _, _),
        client_for(base(gw, "echo"), binding, streaming=False) as blocking,
        client_for(base(gw, "echo"), binding) as client,
    ):
        request = say("slow")
        request.configuration.CopyFrom(SendMessageConfiguration(return_immediately=True))
        (first,) = [ev async for ev in blocking.send_message(request)]
        slow = task_id(first)
        seen: list[StreamResponse] = []
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:

                async def subscribe() -> None:
                    async for ev in client.subscribe(SubscribeToTaskRequest(id=slow)):
                        seen.append(ev)

                tg.start_soon(subscribe)
                while not seen:  # the subscription's first event arrives while the task is still running
                    await anyio.sleep(0.02)
                canceled = await client.cancel_task(CancelTaskRequest(id=slow))
                assert TaskState.Name(canceled.status.state) == "TASK_STATE_CANCELED"
        assert states(seen)[-1] == "CANCELED"
        listed = await client.list_tasks(ListTasksRequest())
        assert slow in [t.id for t in listed.tasks]


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_task_that_needs_input_continues(binding: str) -> None:
    async with through_gateway() as (gw, _, _), client_for(base(gw, "echo"), binding, streaming=False) as client:
        (first,) = [ev async for ev in client.send_message(say("input"))]
        assert TaskState.Name(first.task.status.state) == "TASK_STATE_INPUT_REQUIRED"
        follow = say("more", task_id=first.task.id, context_id=first.task.context_id)
        (done,) = [ev async for ev in client.send_message(follow)]
        assert TaskState.Name(done.task.status.state) == "TASK_STATE_COMPLETED"
        assert [get_artifact_text(a) for a in done.task.artifacts] == ["echo: more"]


@pytest.mark.parametrize("binding", BINDINGS)
async def test_push_notification_configs(binding: str) -> None:
    async with through_gateway() as (gw, _, _), client_for(base(gw, "echo"), binding, streaming=False) as client:
        (done,) = [ev async for ev in client.send_message(say("hi"))]
        tid = done.task.id
        config = TaskPushNotificationConfig(task_id=tid, id="p1", url="http://127.0.0.1:9/hook", token="tok")
        created = await client.create_task_push_notification_config(config)
        assert (created.id, created.url) == ("p1", "http://127.0.0.1:9/hook")
        got = await client.get_task_push_notification_config(GetTaskPushNotificationConfigRequest(task_id=tid, id="p1"))
        assert got.token == "tok"
        listed = await client.list_task_push_notification_configs(ListTaskPushNotificationConfigsRequest(task_id=tid))
        assert [c.id for c in listed.configs] == ["p1"]
        await client.delete_task_push_notification_config(DeleteTaskPushNotificationConfigRequest(task_id=tid, id="p1"))
        listed = await client.list_task_push_notification_configs(ListTaskPushNotificationConfigsRequest(task_id=tid))
        assert list(listed.configs) == []


@pytest.mark.parametrize("binding", BINDINGS)
async def test_the_extended_card_points_at_the_gateway_too(binding: str) -> None:
    async with through_gateway() as (gw, echo, _), client_for(base(gw, "echo"), binding) as client:
        card = await client.get_extended_agent_card(GetExtendedAgentCardRequest())
        assert "secret" in [s.id for s in card.skills]
        assert [i.url for i in card.supported_interfaces] == [base(gw, "echo") + "/", base(gw, "echo") + "/rest"]
        assert echo.url not in str(card)


async def test_a_0_3_agent_through_the_gateway() -> None:
    async with through_gateway() as (gw, _, legacy):
        for binding in BINDINGS:
            for streaming in (False, True):
                cfg = ClientConfig(supported_protocol_bindings=[binding], streaming=streaming)
                async with await create_client(
                    base(gw, "legacy"), client_config=cfg, relative_card_path="/.well-known/agent.json"
                ) as client:
                    seen = [ev async for ev in client.send_message(say("old times"))]
                    assert states(seen)[-1] == "COMPLETED"
                    task = await client.get_task(GetTaskRequest(id=task_id(seen[-1])))
                    assert [get_artifact_text(a) for a in task.artifacts] == ["echo: old times"]
        paths = {p for _, p, _ in legacy.seen}
        assert {"/", "/rest/v1/message:send", "/rest/v1/message:stream"} <= paths
        assert all("x-forwarded-for" in h for _, p, h in legacy.seen if not p.startswith("/.well-known"))


async def test_the_card_the_client_reads_names_only_the_gateway() -> None:
    async with through_gateway() as (gw, echo, _), httpx.AsyncClient() as http:
        card = (await http.get(base(gw, "echo") + "/.well-known/agent-card.json")).json()
        assert echo.url not in str(card)
        assert [i["url"] for i in card["supportedInterfaces"]] == [base(gw, "echo") + "/", base(gw, "echo") + "/rest"]
