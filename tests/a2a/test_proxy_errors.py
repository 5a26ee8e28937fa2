"""What goes wrong is said clearly and in the caller's dialect, naming the agent: unknown agents, agents
without a usable card, malformed JSON-RPC, agents that are down or slow, oversized requests."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.errors import A2AClientError
from a2a.types import Message, Part, Role, SendMessageRequest

from tests.a2a.harness import V1, a2a_yaml, message, rpc
from tests.conftest import run_gateway
from tests.fixtures.a2a_agent import RunningAgent, card_server, echo_agent, serve

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def gateway(agents: dict[str, str], policies: str = "") -> AsyncIterator[httpx.AsyncClient]:
    async with (
        run_gateway(a2a_yaml(agents, policies=policies)) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}/a2a", timeout=20) as http,
    ):
        yield http


async def test_unknown_agents_and_paths_without_one_are_404() -> None:
    async with serve(echo_agent) as echo, gateway({"echo": echo.url}) as http:
        for path in ("/nobody/.well-known/agent-card.json", "/nobody/"):
            answer = await http.post(path, json=rpc("SendMessage")) if path.endswith("/") else await http.get(path)
            assert answer.status_code == 404
            assert answer.json()["error"]["message"] == "no agent named 'nobody'"
        for path in ("", "/"):
            answer = await http.get(path)
            assert answer.status_code == 404 and "/a2a/<name>/" in answer.json()["error"]["message"]


async def test_an_agent_without_a_usable_card_is_502_naming_it() -> None:
    async with (
        serve(lambda base: card_server(b"{not json")) as malformed,
        serve(lambda base: card_server(None)) as missing,
        gateway({"bad": malformed.url, "ghost": missing.url}) as http,
    ):
        for name, why in (("bad", "is not JSON"), ("ghost", "both answered 404")):
            for answer in (
                await http.get(f"/{name}/.well-known/agent-card.json"),
                await http.post(f"/{name}/", json=rpc("SendMessage")),
            ):
                assert answer.status_code == 502
                text = answer.json()["error"]["message"]
                assert text.startswith(f"agent {name!r} has no usable card: agent {name!r}: ") and why in text


async def test_malformed_jsonrpc_is_answered_by_the_gateway() -> None:
    async with serve(echo_agent) as echo, gateway({"echo": echo.url}) as http:
        cases = [
            (b"{not json", -32700, None),
            (b"[" + json.dumps(rpc("GetTask", {"id": "x"})).encode() + b"]", -32600, None),
            (json.dumps({"jsonrpc": "2.0", "id": 9, "params": {}}).encode(), -32600, 9),
            (json.dumps({"jsonrpc": "2.0", "id": True, "method": 3}).encode(), -32600, None),
        ]
        for body, code, request_id in cases:
            answer = await http.post("/echo/", content=body, headers={**V1, "content-type": "application/json"})
            assert answer.status_code == 200
            error = answer.json()
            assert (error["jsonrpc"], error["id"], error["error"]["code"]) == ("2.0", request_id, code)
        unknown = (await http.post("/echo/", json=rpc("Teleport", {}, 4), headers=V1)).json()
        assert (unknown["id"], unknown["error"]["code"]) == (4, -32601)  # the agent's own answer
        assert not [p for m, p, _ in echo.seen if m == "POST" and p == "/"][:-1]  # only Teleport reached it


async def test_an_oversized_request_is_413() -> None:
    async with serve(echo_agent) as echo, gateway({"echo": echo.url}) as http:
        big = json.dumps(rpc("SendMessage", {"message": message("x" * (5 * 1024 * 1024))})).encode()
        answer = await http.post("/echo/", content=big, headers=V1)
        assert answer.status_code == 413 and answer.json()["error"]["code"] == -32600


async def stopped(agent: RunningAgent) -> None:
    agent.stop()
    port = int(agent.url.rsplit(":", 1)[1])
    with anyio.fail_after(10):
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    return
            await anyio.sleep(0.02)


async def test_an_agent_that_is_down_is_a_clear_502() -> None:
    async with serve(echo_agent) as echo, gateway({"echo": echo.url}) as http:
        assert (await http.post("/echo/", json=rpc("ListTasks", {}), headers=V1)).status_code == 200
        await stopped(echo)
        for _ in range(2):  # the pooled connection that was cut, then a new one that is refused
            answer = await http.post("/echo/", json=rpc("SendMessage", {"message": message("hi")}, "r-1"), headers=V1)
            assert answer.status_code == 502
            body = answer.json()
            assert (body["id"], body["error"]["code"], body["error"]["data"]) == ("r-1", -32603, {"agent": "echo"})
            assert body["error"]["message"].startswith("agent 'echo' ")
        rest = await http.post("/echo/rest/message:send", json={"message": message("hi")}, headers=V1)
        assert rest.status_code == 502
        assert rest.json()["error"]["message"].startswith("agent 'echo' is unreachable (ConnectError")
        cfg = ClientConfig(streaming=False)  # the card is still served: the registry's health check marks the agent
        async with await create_client(f"{http.base_url}echo", client_config=cfg) as client:
            msg = Message(role=Role.ROLE_USER, message_id="m", parts=[Part(text="hi")])
            with pytest.raises(A2AClientError, match=r"HTTP Error 502.*/a2a/echo/"):
                [ev async for ev in client.send_message(SendMessageRequest(message=msg))]


async def test_an_agent_that_does_not_answer_in_time_is_504() -> None:
    async with (
        serve(echo_agent) as echo,
        gateway({"echo": echo.url}, "  policies: {timeout: {backendRequestTimeout: 300ms}}\n") as http,
    ):
        with anyio.fail_after(5):
            answer = await http.post("/echo/", json=rpc("SendMessage", {"message": message("slow")}, 3), headers=V1)
        assert answer.status_code == 504
        assert answer.json()["error"]["message"] == "agent 'echo' did not answer within 0.3 s"
        quick = await http.post("/echo/", json=rpc("SendMessage", {"message": message("quick")}, 4), headers=V1)
        assert quick.json()["result"]["message"]["parts"][0]["text"] == "quick: quick"
