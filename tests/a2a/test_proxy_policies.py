"""Route policies on A2A: authentication as on any route, and message-layer rules and rate limits over
`a2a.method` (1.0 names, whatever the binding or version), `a2a.agent` and `a2a.skill`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest
from a2a.utils.errors import UnsupportedOperationError

from tests.a2a.harness import V1, a2a_yaml, message, rpc
from tests.conftest import run_gateway
from tests.fixtures.a2a_agent import RunningAgent, echo_agent, legacy_agent, serve

pytestmark = pytest.mark.anyio

POLICIES = """  policies:
    apiKey:
      keys:
      - {key: alice-key, metadata: {user: alice}}
      - {key: bob-key, metadata: {user: bob}}
      - {key: carol-key, metadata: {user: carol}}
    mcpAuthorization:
      rules:
      - deny: 'a2a.method in ["SendMessage", "SendStreamingMessage"] && apiKey.user == "bob"'
      - deny: 'a2a.skill == "shout" && apiKey.user != "alice"'
      - deny: 'a2a.agent == "secret" && apiKey.user != "alice"'
    localRateLimit:
    - {maxTokens: 2, tokensPerFill: 1, fillInterval: 60s, methods: [GetTask], key: 'apiKey.user'}
"""
ALICE, BOB, CAROL = ({"authorization": f"Bearer {who}-key", **V1} for who in ("alice", "bob", "carol"))


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, RunningAgent]]:
    async with (
        serve(echo_agent) as echo,
        serve(legacy_agent) as legacy,
        run_gateway(a2a_yaml({"echo": echo.url, "old": legacy.url, "secret": echo.url}, policies=POLICIES)) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}/a2a", timeout=20) as http,
    ):
        yield http, echo


async def test_a_caller_denied_sendmessage_gets_unsupported_operation_in_every_dialect() -> None:
    async with gateway() as (http, echo):
        before = len(echo.seen)
        denied = await http.post("/echo/", json=rpc("SendMessage", {"message": message("hi")}, "b-1"), headers=BOB)
        assert denied.status_code == 200
        assert denied.json() == {
            "jsonrpc": "2.0",
            "id": "b-1",
            "error": {"code": -32004, "message": "SendMessage on agent 'echo' is not allowed"},
        }
        streaming = await http.post(
            "/echo/", json=rpc("SendStreamingMessage", {"message": message("hi")}, 2), headers=BOB
        )
        assert streaming.json()["error"]["code"] == -32004
        legacy = await http.post(
            "/old/", json=rpc("message/send", {"message": message("hi", legacy=True)}, 3), headers=BOB
        )
        assert (
            legacy.json()["error"]["message"] == "SendMessage on agent 'old' is not allowed"
        )  # 0.3 names are 1.0 names
        rest = await http.post("/echo/rest/message:send", json={"message": message("hi")}, headers=BOB)
        assert rest.status_code == 403
        assert rest.json()["error"]["details"][0]["reason"] == "UNSUPPORTED_OPERATION"
        assert len(echo.seen) == before  # none of it reached the agent
        allowed = await http.post("/echo/", json=rpc("SendMessage", {"message": message("hi")}, 4), headers=ALICE)
        assert allowed.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        task = allowed.json()["result"]["task"]["id"]
        got = await http.post("/echo/", json=rpc("GetTask", {"id": task}, 5), headers=BOB)  # other methods are fine
        assert got.json()["result"]["id"] == task
        assert "authorization" not in echo.seen[-1][2]  # the caller's key stays at the gateway


async def test_the_sdk_client_reads_the_denial() -> None:
    async with gateway() as (http, _):
        for binding in ("JSONRPC", "HTTP+JSON"):
            async with (
                httpx.AsyncClient(headers={"authorization": "Bearer bob-key"}, timeout=20) as bob,
                await create_client(
                    f"{http.base_url}echo", ClientConfig(httpx_client=bob, supported_protocol_bindings=[binding])
                ) as client,
            ):
                msg = Message(role=Role.ROLE_USER, message_id="m", parts=[Part(text="hi")])
                with pytest.raises(
                    UnsupportedOperationError, match="SendStreamingMessage on agent 'echo' is not allowed"
                ):
                    [ev async for ev in client.send_message(SendMessageRequest(message=msg))]


async def test_rules_see_the_skill_a_message_asks_for() -> None:
    async with gateway() as (http, _):
        for headers, skill, ok in ((CAROL, "shout", False), (CAROL, "echo", True), (ALICE, "shout", True)):
            body = {"message": message("x", skill=skill)}
            answer = await http.post("/echo/", json=rpc("SendMessage", body, 1), headers=headers)
            rest = await http.post("/echo/rest/message:send", json=body, headers=headers)
            if ok:
                assert answer.json()["result"]["task"]["artifacts"][0]["parts"][0]["text"] == f"echo[{skill}]: x"
                assert rest.status_code == 200, rest.text
            else:
                assert answer.json()["error"]["code"] == -32004
                assert rest.status_code == 403


async def test_an_agent_a_rule_hides_has_no_card_for_that_caller() -> None:
    async with gateway() as (http, _):
        assert (await http.get("/secret/.well-known/agent-card.json", headers=ALICE)).status_code == 200
        hidden = await http.get("/secret/.well-known/agent-card.json", headers=CAROL)
        assert hidden.status_code == 404 and hidden.json()["error"]["message"] == "no agent named 'secret'"
        call = await http.post("/secret/", json=rpc("GetTask", {"id": "x"}, 1), headers=CAROL)
        assert call.json()["error"]["code"] == -32004


async def test_rate_limits_answer_in_the_callers_dialect() -> None:
    async with gateway() as (http, _):
        sent = await http.post("/echo/", json=rpc("SendMessage", {"message": message("hi")}), headers=ALICE)
        task = sent.json()["result"]["task"]["id"]
        for _ in range(2):
            assert "result" in (await http.post("/echo/", json=rpc("GetTask", {"id": task}), headers=ALICE)).json()
        limited = await http.post("/echo/", json=rpc("GetTask", {"id": task}, 9), headers=ALICE)
        assert limited.status_code == 200 and int(limited.headers["retry-after"]) >= 1
        error = limited.json()["error"]
        assert (limited.json()["id"], error["code"]) == (9, -32029)
        assert "retry after" in error["message"] and error["data"]["retryAfter"] > 0
        rest = await http.get(f"/echo/rest/tasks/{task}", headers=ALICE)
        assert rest.status_code == 429 and int(rest.headers["retry-after"]) >= 1
        assert rest.json()["error"]["details"][0]["reason"] == "RATE_LIMITED"
        other = await http.post("/echo/", json=rpc("GetTask", {"id": task}), headers=CAROL)  # her own bucket
        assert "result" in other.json()


async def test_authentication_applies_to_cards_and_calls() -> None:
    async with gateway() as (http, _):
        assert (await http.get("/echo/.well-known/agent-card.json")).status_code == 401
        assert (await http.post("/echo/", json=rpc("GetTask", {"id": "x"}), headers=V1)).status_code == 401
        wrong = {"authorization": "Bearer nope", **V1}
        assert (await http.post("/echo/", json=rpc("GetTask", {"id": "x"}), headers=wrong)).status_code == 401
