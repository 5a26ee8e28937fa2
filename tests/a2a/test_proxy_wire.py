"""The proxy on the wire, with raw HTTP: JSON-RPC and REST calls, SSE that flows as the agent writes it,
uploads that stream, A2A 0.3 calls, the card at both well-known paths, and the headers that cross."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.a2a.harness import V1, a2a_yaml, events, message, rpc, state
from tests.conftest import RunningGateway, run_gateway
from tests.fixtures.a2a_agent import Recorder, RunningAgent, echo_agent, legacy_agent, serve

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def gateway(**agents: RunningAgent) -> AsyncIterator[tuple[RunningGateway, httpx.AsyncClient]]:
    yaml = a2a_yaml({name: a.url for name, a in agents.items()}, headers="{authorization: 'Bearer for-the-agent'}")
    async with (
        run_gateway(yaml) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}/a2a", timeout=20) as http,
    ):
        yield gw, http


async def test_jsonrpc_send_blocking_and_get_task() -> None:
    async with serve(echo_agent) as echo, gateway(echo=echo) as (_, http):
        answer = await http.post("/echo/", json=rpc("SendMessage", {"message": message("hi")}, "a-1"), headers=V1)
        assert answer.status_code == 200
        body = answer.json()
        assert body["id"] == "a-1" and body["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        task = body["result"]["task"]["id"]
        got = (await http.post("/echo/", json=rpc("GetTask", {"id": task}, 2), headers=V1)).json()
        assert got["result"]["artifacts"][0]["parts"][0]["text"] == "echo: hi"
        listed = (await http.post("/echo/", json=rpc("ListTasks", {}, 3), headers=V1)).json()
        assert task in [t["id"] for t in listed["result"]["tasks"]]


async def test_sse_events_reach_the_client_while_the_agent_is_still_working() -> None:
    """`slow` stays WORKING for 30 s: seeing WORKING (and then the cancel) within seconds proves nothing is buffered."""
    async with serve(echo_agent) as echo, gateway(echo=echo) as (_, http):
        body = rpc("SendStreamingMessage", {"message": message("slow")})
        seen: list[str] = []
        with anyio.fail_after(10):
            async with http.stream("POST", "/echo/", json=body, headers=V1) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for event in events(response):
                    seen.append(state(event["result"]))
                    if seen[-1] == "TASK_STATE_WORKING":
                        task = event["result"]["statusUpdate"]["taskId"]
                        cancel = await http.post("/echo/", json=rpc("CancelTask", {"id": task}), headers=V1)
                        assert cancel.json()["result"]["status"]["state"] == "TASK_STATE_CANCELED"
        assert seen[0] == "TASK_STATE_SUBMITTED" and seen[-1] == "TASK_STATE_CANCELED"


async def test_rest_send_stream_and_subscribe() -> None:
    async with serve(echo_agent) as echo, gateway(echo=echo) as (_, http):
        sent = await http.post("/echo/rest/message:send", json={"message": message("rest")}, headers=V1)
        assert sent.status_code == 200, sent.text
        assert sent.json()["task"]["artifacts"][0]["parts"][0]["text"] == "echo: rest"
        task = sent.json()["task"]["id"]
        assert (await http.get(f"/echo/rest/tasks/{task}", headers=V1)).json()["status"][
            "state"
        ] == "TASK_STATE_COMPLETED"
        async with http.stream("POST", "/echo/rest/message:stream", json={"message": message("s")}, headers=V1) as r:
            seen = [state(event) async for event in events(r)]
        assert seen == ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "", "TASK_STATE_COMPLETED"]  # "" = the artifact
        slow = await http.post(
            "/echo/rest/message:send",
            json={"message": message("slow"), "configuration": {"returnImmediately": True}},
            headers=V1,
        )
        slow_id = slow.json()["task"]["id"]
        with anyio.fail_after(10):
            async with http.stream("GET", f"/echo/rest/tasks/{slow_id}:subscribe", headers=V1) as r:
                async for event in events(r):
                    if state(event) == "TASK_STATE_WORKING":
                        canceled = await http.post(f"/echo/rest/tasks/{slow_id}:cancel", headers=V1)
                        assert canceled.json()["status"]["state"] == "TASK_STATE_CANCELED"
                    last = state(event)
        assert last == "TASK_STATE_CANCELED"


async def test_a_0_3_agent_on_the_wire() -> None:
    async with serve(legacy_agent) as legacy, gateway(old=legacy) as (gw, http):
        card = (await http.get("/old/.well-known/agent.json")).json()
        assert card["url"] == f"http://127.0.0.1:{gw.port}/a2a/old/"
        assert [i["url"] for i in card["additionalInterfaces"]] == [card["url"], card["url"] + "rest"]
        assert (await http.get("/old/.well-known/agent-card.json")).json() == card  # 1.0 clients look here first
        sent = (await http.post("/old/", json=rpc("message/send", {"message": message("x", legacy=True)}, 7))).json()
        assert sent["id"] == 7 and sent["result"]["kind"] == "task"
        assert sent["result"]["status"]["state"] == "completed"
        got = (await http.post("/old/", json=rpc("tasks/get", {"id": sent["result"]["id"]}, 8))).json()
        assert got["result"]["artifacts"][0]["parts"][0]["text"] == "echo: x"
        body = rpc("message/stream", {"message": message("y", legacy=True)})
        async with http.stream("POST", "/old/", json=body) as response:
            kinds = [event["result"]["kind"] async for event in events(response)]
        assert kinds[0] == "task" and kinds[-1] == "status-update"


async def test_the_card_follows_forwarded_headers_and_the_path_prefix() -> None:
    async with serve(echo_agent) as echo:
        yaml = a2a_yaml({"echo": echo.url}, path="/team/agents")
        async with run_gateway(yaml) as gw, httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{gw.port}/team/agents/echo/.well-known/agent-card.json"
            plain = (await http.get(url)).json()
            assert plain["supportedInterfaces"][1]["url"] == f"http://127.0.0.1:{gw.port}/team/agents/echo/rest"
            behind = (
                await http.get(url, headers={"x-forwarded-proto": "https", "x-forwarded-host": "agents.example"})
            ).json()
            assert [i["url"] for i in behind["supportedInterfaces"]] == [
                "https://agents.example/team/agents/echo/",
                "https://agents.example/team/agents/echo/rest",
            ]
            forged = (await http.get(url, headers={"x-forwarded-host": 'evil"/x'})).json()  # not a host: ignored
            assert forged["supportedInterfaces"][0]["url"].startswith(f"http://127.0.0.1:{gw.port}/")
            legacy_path = await http.get(url.replace("agent-card.json", "agent.json"))
            assert legacy_path.status_code == 404 and "A2A 1.0" in legacy_path.json()["error"]["message"]


async def test_the_version_header_is_passed_on_as_sent() -> None:
    async with serve(echo_agent) as echo, gateway(echo=echo) as (_, http):
        body = rpc("SendMessage", {"message": message("hi")}, 5)
        for headers in ({}, {"A2A-Version": "0.9"}):
            answer = await http.post("/echo/", json=body, headers=headers)
            assert answer.status_code == 200
            assert answer.json()["id"] == 5 and answer.json()["error"]["code"] == -32009  # the agent's answer
        assert [h.get("a2a-version") for m, p, h in echo.seen if m == "POST"] == [None, "0.9"]


def raw_agent(base: str, first_chunk: anyio.Event, stream_closed: anyio.Event | None = None) -> Recorder:
    """Not an A2A agent: a valid card, and endpoints that show what the proxy does with bodies and headers."""
    card = {"name": "raw", "supportedInterfaces": [{"url": base + "/", "protocolBinding": "HTTP+JSON"}]}

    async def serve_card(request: Request) -> Response:
        return JSONResponse(card)

    async def upload(request: Request) -> Response:
        chunks = 0
        async for chunk in request.stream():
            if chunk:
                chunks += 1
                first_chunk.set()
        return JSONResponse({"chunks": chunks})

    async def headers(request: Request) -> Response:
        extra = {"x-agent": "yes", "keep-alive": "timeout=5", "x-private": "1", "connection": "x-private"}
        seen = {"?query": request.url.query, "?raw_path": request.scope["raw_path"].decode()}
        return JSONResponse({**request.headers, **seen}, headers=extra)

    async def subscribe(request: Request) -> Response:
        async def one_event_then_silence() -> AsyncIterator[bytes]:
            try:
                yield b'data: {"first": true}\n\n'
                await anyio.sleep(60)
            finally:
                if stream_closed is not None:
                    stream_closed.set()

        return StreamingResponse(one_event_then_silence(), media_type="text/event-stream")

    return Recorder(
        Starlette(
            routes=[
                Route("/.well-known/agent-card.json", serve_card),
                Route("/tasks/{id}:subscribe", subscribe),
                Route("/message:send", upload, methods=["POST"]),
                Route("/tasks/{id:path}", headers),
            ]
        )
    )


async def test_an_upload_streams_to_the_agent_before_it_is_complete() -> None:
    first = anyio.Event()
    async with serve(lambda base: raw_agent(base, first)) as raw, gateway(raw=raw) as (_, http):

        async def body() -> AsyncIterator[bytes]:
            yield b'{"message": '
            await first.wait()  # held back until the agent has the first part: a buffering proxy would hang here
            yield b'{"parts": []}}'

        with anyio.fail_after(10):
            answer = await http.post("/raw/message:send", content=body(), headers=V1)
        assert answer.json() == {"chunks": 2}


async def test_a_client_that_leaves_ends_the_agents_stream() -> None:
    first, closed = anyio.Event(), anyio.Event()
    async with serve(lambda base: raw_agent(base, first, closed)) as raw, gateway(raw=raw) as (_, http):
        with anyio.fail_after(10):
            async with http.stream("GET", "/raw/tasks/t1:subscribe", headers=V1) as response:
                async for event in events(response):
                    assert event == {"first": True}
                    break  # and leave: the connection to the gateway closes
            await closed.wait()  # the gateway closed its stream from the agent too


async def test_hop_by_hop_headers_and_credentials_stay_on_their_hop() -> None:
    first = anyio.Event()
    async with serve(lambda base: raw_agent(base, first)) as raw, gateway(raw=raw) as (gw, http):
        sent = {
            "authorization": "Bearer the-callers-token",
            "connection": "keep-alive, x-hop",
            "x-hop": "only for the gateway",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "x-forwarded-for": "203.0.113.7",
            "x-custom": "kept",
        }
        answer = await http.get("/raw/tasks/t1?x=1", headers=sent)
        got = answer.json()
        assert got["authorization"] == "Bearer for-the-agent"  # the agent's configured header, not the caller's
        for name in ("x-hop", "keep-alive", "te"):
            assert name not in got
        assert got["x-custom"] == "kept"
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 and reports the client as 203.0.113.7; the chain still starts there.
        assert got["x-forwarded-for"].split(", ")[0] == "203.0.113.7"
        assert (await http.get("/raw/tasks/t1")).json()["x-forwarded-for"] == "127.0.0.1"
        assert (got["x-forwarded-proto"], got["x-forwarded-host"]) == ("http", f"127.0.0.1:{gw.port}")
        assert raw.seen[-1][1] == "/tasks/t1"
        assert answer.headers["x-agent"] == "yes"
        assert "x-private" not in answer.headers and "keep-alive" not in answer.headers
        assert len(answer.headers.get_list("server")) == len(answer.headers.get_list("date")) == 1  # the gateway's


async def test_paths_and_queries_reach_the_agent_as_the_client_wrote_them() -> None:
    first = anyio.Event()
    async with serve(lambda base: raw_agent(base, first)) as raw, gateway(raw=raw) as (_, http):
        answer = (await http.get("/raw/tasks/a%2Fb%20c?filter=x%20y&z=1")).json()
        assert (answer["?raw_path"], answer["?query"]) == ("/tasks/a%2Fb%20c", "filter=x%20y&z=1")
        assert answer["host"] == raw.url.removeprefix("http://")


async def test_backend_auth_toward_agents_key_and_passthrough() -> None:
    """backendAuth on an A2A route: a static key, or the caller's own validated token (passthrough)."""
    from tests.gateway.test_auth import SIGNER, jwt_policy

    first = anyio.Event()
    async with serve(lambda base: raw_agent(base, first)) as raw:
        key = "  policies: {backendAuth: {key: {value: agent-secret}}}\n"
        async with run_gateway(a2a_yaml({"raw": raw.url}, policies=key)) as gw, httpx.AsyncClient(timeout=20) as http:
            got = (await http.get(f"http://127.0.0.1:{gw.port}/a2a/raw/tasks/t1")).json()
            assert got["authorization"] == "Bearer agent-secret"
        passthrough = f"  policies: {{{jwt_policy()[1:-1]}, backendAuth: {{passthrough: {{}}}}}}\n"
        token = SIGNER.token("alice")
        async with run_gateway(a2a_yaml({"raw": raw.url}, policies=passthrough)) as gw, httpx.AsyncClient(timeout=20) as http:
            url = f"http://127.0.0.1:{gw.port}/a2a/raw/tasks/t1"
            assert (await http.get(url)).status_code == 401  # jwtAuth first
            got = (await http.get(url, headers={"authorization": f"Bearer {token}"})).json()
            assert got["authorization"] == f"Bearer {token}"
