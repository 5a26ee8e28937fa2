"""Answers to server-to-client requests (elicitation, sampling, roots) count only from whom they were asked.

The attack: a second caller, on her own session, POSTs JSON-RPC responses with guessed (or stolen)
request ids, hoping to answer another caller's pending elicitation.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import INIT, http_target, mcp_yaml, run_gateway, stdio_target
from tests.gateway.test_auth import bearer, call, session

pytestmark = pytest.mark.anyio

KEYS = "{apiKey: {keys: [{key: sk-alice, metadata: {name: alice}}, {key: sk-bob, metadata: {name: bob}}]}}"


def accept(request_id: Any, answer: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"action": "accept", "content": {"answer": answer}}}


async def sse_messages(response: httpx.Response) -> Any:
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


@pytest.mark.parametrize("transport", ["mcp", "stdio"])  # the raw relay, and the SDK's own sessions
async def test_another_caller_cannot_answer_an_elicitation(upstream: Any, transport: str) -> None:
    target = stdio_target("web") if transport == "stdio" else http_target("web", upstream("web", "mcp"))
    yaml = mcp_yaml(target, policies=KEYS)
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        alice = await session(http, gw.url, bearer("sk-alice"))
        bob = await session(http, gw.url, bearer("sk-bob"))
        await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=alice)
        # A session's first call into a target opens its upstream session (the SDK path); later ones take the relay.
        await http.post(gw.url, json=call("echo", 9, text="warm"), headers=alice)
        with anyio.fail_after(30):
            async with http.stream("POST", gw.url, json=call("ask", question="ship it?"), headers=alice) as asked:
                assert asked.headers["content-type"].startswith("text/event-stream")
                messages = sse_messages(asked)
                question = await anext(messages)
                assert question["method"] == "elicitation/create", question
                rid = question["id"]
                # Bob sprays guesses in the old id pattern, then the very id Alice was sent, on his own session.
                guesses = [f"agentplex-{n}" for n in range(1, 101)] + [rid]
                for guess in guesses:
                    sprayed = await http.post(gw.url, json=accept(guess, "bob says yes"), headers=bob)
                    assert sprayed.status_code < 500 and "Traceback" not in sprayed.text
                # Alice's session with Bob's key is not Alice's session at all.
                stolen = await http.post(gw.url, json=accept(rid, "bob says yes"), headers={**alice, **bearer("sk-bob")})
                assert stolen.status_code == 404
                # Alice's own answer still counts, once.
                answered = await http.post(gw.url, json=accept(rid, "alice says no"), headers=alice)
                assert answered.status_code == 202
                again = await http.post(gw.url, json=accept(rid, "alice again"), headers=alice)
                assert again.status_code < 500
                final = await anext(messages)
        assert final["id"] == 2 and final["result"]["content"][0]["text"] == "alice says no"
        # Bob's session is unharmed by what he sprayed.
        echoed = await http.post(gw.url, json=call("echo", text="still here"), headers=bob)
        assert "web: still here" in echoed.text


async def test_request_ids_sent_down_are_unguessable(upstream: Any) -> None:
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=KEYS)
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        alice = await session(http, gw.url, bearer("sk-alice"))
        await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=alice)
        # A session's first call into a target opens its upstream session (the SDK path); later ones take the relay.
        await http.post(gw.url, json=call("echo", 9, text="warm"), headers=alice)
        ids = []
        with anyio.fail_after(30):
            for n in range(2):
                async with http.stream("POST", gw.url, json=call("ask", 10 + n, question="?"), headers=alice) as asked:
                    messages = sse_messages(asked)
                    ids.append((await anext(messages))["id"])
                    await http.post(gw.url, json=accept(ids[-1], "ok"), headers=alice)
                    assert (await anext(messages))["result"]["content"][0]["text"] == "ok"
        assert all(len(rid) >= 20 for rid in ids) and ids[0] != ids[1]
        assert not any(rid.removeprefix("agentplex-").isdigit() for rid in ids)


def modern_client(url: str, key: str) -> Any:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode="2026-07-28", cache=None)


@pytest.mark.parametrize("era", ["handshake", "modern"])  # a parked call, and a target's own request_state
async def test_another_caller_cannot_resume_a_2026_call(upstream: Any, era: str) -> None:
    """A 2026-07-28 client is asked through InputRequiredResult; a second caller retrying with the first
    one's request_state and her own answer is refused, and the first caller's retry still works."""
    target = stdio_target("up") + f"\n    era: {era}"
    tool, arguments = ("ask", {"question": "ship it?"}) if era == "handshake" else ("ask_any_era", {"question": "?"})
    async with (
        run_gateway(mcp_yaml(target, policies=KEYS)) as gw,
        modern_client(gw.url, "sk-alice") as alice,
        modern_client(gw.url, "sk-bob") as bob,
    ):
        with anyio.fail_after(60):
            asked = await alice.session.call_tool(tool, arguments, allow_input_required=True)
            assert isinstance(asked, types.InputRequiredResult) and asked.request_state
            (key,) = asked.input_requests

            def answer(text: str) -> dict[str, Any]:
                return {key: types.ElicitResult(action="accept", content={"answer": text})}

            with pytest.raises(MCPError) as refused:
                await bob.session.call_tool(
                    tool, arguments, input_responses=answer("bob"), request_state=asked.request_state
                )
            assert refused.value.error.code == -32602 and "requestState" in refused.value.error.message
            done = await alice.session.call_tool(
                tool, arguments, input_responses=answer("alice"), request_state=asked.request_state
            )
        assert "alice" in done.content[0].text


async def test_another_caller_cannot_answer_over_the_sse_front_end(upstream: Any) -> None:
    """The legacy HTTP+SSE front end: each stream is its own SDK session, owned by its caller."""
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=KEYS)
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http, contextlib.AsyncExitStack() as stack:
        base = gw.url.rsplit("/", 1)[0]

        async def open_session(key: str) -> tuple[str, Any]:
            """(messages URL, the stream's JSON-RPC messages) of a new, initialized SSE session of `key`."""
            request = http.build_request("GET", f"{base}/sse", headers={"authorization": f"Bearer {key}"})
            response = await http.send(request, stream=True)
            stack.push_async_callback(response.aclose)
            lines = response.aiter_lines()
            endpoint = ""
            async for line in lines:  # the transport's `endpoint` event comes first
                if line.startswith("data:"):
                    endpoint = base + line[5:].strip()
                    break

            async def messages() -> Any:
                async for line in lines:
                    if line.startswith("data:") and line[5:].strip():
                        yield json.loads(line[5:])

            stream = messages()
            auth = {"authorization": f"Bearer {key}"}
            await http.post(endpoint, json=INIT, headers=auth)
            assert (await anext(stream))["id"] == 1
            await http.post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=auth)
            return endpoint, stream

        alice_auth, bob_auth = {"authorization": "Bearer sk-alice"}, {"authorization": "Bearer sk-bob"}
        with anyio.fail_after(30):
            alice, alice_messages = await open_session("sk-alice")
            bob, _ = await open_session("sk-bob")
            await http.post(alice, json=call("ask", question="ship it?"), headers=alice_auth)
            question = await anext(alice_messages)
            assert question["method"] == "elicitation/create"
            for guess in [*range(5), question["id"]]:  # the SDK's ids are per session, so guessable: and useless
                await http.post(bob, json=accept(guess, "bob says yes"), headers=bob_auth)
            stolen = await http.post(alice, json=accept(question["id"], "bob says yes"), headers=bob_auth)
            assert stolen.status_code == 404
            await http.post(alice, json=accept(question["id"], "alice says no"), headers=alice_auth)
            final = await anext(alice_messages)
        assert final["id"] == 2 and final["result"]["content"][0]["text"] == "alice says no"

