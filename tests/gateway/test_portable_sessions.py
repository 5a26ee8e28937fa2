"""Portable sessions: with a session key, a handshake-era session opened on one replica goes on at another
(same config, same key), on the same upstream session; an id that is not ours, or not the caller's, is 404."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import HEADERS, INIT, RunningGateway, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio

KEY = "ab" * 32
OTHER_KEY = "cd" * 32
VERSION = "2025-11-25"


def keyed(targets: str, key: str | None = KEY, previous: str = "", **options: str) -> str:
    """A short-shape config whose `config.session` has `key` (and previous keys)."""
    session = [f"key: {key}"] if key else []
    if previous:
        session.append(f"previousKeys: [{previous}]")
    head = f"config:\n  adminAddr: null\n  statsAddr: null\n  session: {{{', '.join(session)}}}\n"
    return head + mcp_yaml(targets, **options)


def rpc_result(response: httpx.Response) -> Any:
    """The JSON-RPC message of a JSON or single-event SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(next(d for d in data if d))
    return response.json()


class Client:
    """A raw handshake-era client that can send each request to any replica."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str] = HEADERS) -> None:
        self.http = http
        self.headers = headers
        self.sid = ""
        self._id = 1

    async def initialize(self, gw: RunningGateway) -> httpx.Response:
        response = await self.http.post(gw.url, json=INIT, headers=self.headers)
        self.sid = response.headers.get("mcp-session-id", "")
        await self.http.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.on())
        return response

    def on(self, sid: str | None = None) -> dict[str, str]:
        return {**self.headers, "mcp-session-id": sid or self.sid, "mcp-protocol-version": VERSION}

    async def request(self, gw: RunningGateway, method: str, params: dict[str, Any], sid: str | None = None) -> Any:
        self._id += 1
        message = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        return await self.http.post(gw.url, json=message, headers=self.on(sid))

    async def call(self, gw: RunningGateway, tool: str, sid: str | None = None, **arguments: Any) -> Any:
        response = await self.request(gw, "tools/call", {"name": tool, "arguments": arguments}, sid)
        assert response.status_code == 200, response.text
        return rpc_result(response)["result"]["content"][0]["text"]


@contextlib.asynccontextmanager
async def replicas(yaml_a: str, yaml_b: str | None = None) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    async with run_gateway(yaml_a) as a, run_gateway(yaml_b or yaml_a) as b:
        yield a, b


def not_found(response: httpx.Response) -> bool:
    body = response.json()
    return response.status_code == 404 and body["error"]["message"] == "Session not found" and body["id"] is None


async def test_a_session_opened_on_one_replica_goes_on_at_another_on_the_same_upstream_session(upstream: Any) -> None:
    url = upstream("web", "mcp")
    async with replicas(keyed(http_target("web", url))) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        assert (await client.initialize(a)).status_code == 200
        assert client.sid.startswith("s1.") and all(0x21 <= ord(c) <= 0x7E for c in client.sid)
        upstream_session = await client.call(a, "session")
        assert upstream_session  # the upstream session opened with the client's
        assert upstream_session not in client.sid  # sealed, not readable
        assert await client.call(b, "session") == upstream_session  # B took up the same upstream session
        assert await client.call(b, "echo", text="on B") == "web: on B"
        listed = rpc_result(await client.request(b, "tools/list", {}))
        assert "session" in [tool["name"] for tool in listed["result"]["tools"]]
        assert await client.call(a, "session") == upstream_session  # and A still serves it
        again = await client.request(b, "tools/list", {})
        assert again.headers.get("mcp-session-id") == client.sid  # B answers under the same sealed id
        relayed = await client.request(b, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        assert relayed.headers.get("mcp-session-id") == client.sid  # the raw relay's answers too
    async with run_gateway(keyed(http_target("web", url))) as c, httpx.AsyncClient(timeout=30) as http:
        headers = {**client.on(), "accept": "text/event-stream"}
        async with http.stream("GET", c.url, headers=headers) as stream:  # the GET stream resumes it too
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["mcp-session-id"] == client.sid


async def test_a_stdio_target_gets_a_process_of_its_own_on_the_replica_that_resumes(upstream: Any) -> None:
    """A process cannot travel in a token: the resumed session starts its own, as a new session would."""
    yaml = keyed(http_target("web", upstream("web", "mcp")) + stdio_target("local"))
    async with replicas(yaml) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        await client.initialize(a)
        on_a = await client.call(a, "local_pid")
        web = await client.call(a, "web_session")
        on_b = await client.call(b, "local_pid")
        assert on_b != on_a and await client.call(b, "local_echo", text="x") == "local: x"
        assert await client.call(b, "web_session") == web
        assert await client.call(a, "local_pid") == on_a  # A's session keeps its own process


async def test_concurrent_first_requests_on_a_replica_resume_the_session_once(upstream: Any) -> None:
    async with (
        replicas(keyed(http_target("web", upstream("web", "mcp")))) as (a, b),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http)
        await client.initialize(a)
        web = await client.call(a, "session")
        seen: list[str] = []

        async def call() -> None:
            seen.append(await client.call(b, "session"))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call)
        assert seen == [web] * 4
        assert b.gateway.endpoints["mcp"].session_count() == 1
        assert (await http.delete(b.url, headers=client.on())).status_code == 200
        assert b.gateway.endpoints["mcp"].session_count() == 0
        assert await client.call(a, "session") == web  # ended on B, not upstream: A goes on


async def test_a_rotated_key_still_resumes_sessions_sealed_with_the_previous_one(upstream: Any) -> None:
    url = upstream("web", "mcp")
    before, after = keyed(http_target("web", url)), keyed(http_target("web", url), OTHER_KEY, previous=KEY)
    async with replicas(before, after) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        await client.initialize(a)
        upstream_session = await client.call(a, "session")
        assert await client.call(b, "session") == upstream_session
        fresh = Client(http)
        await fresh.initialize(b)  # B seals with its new key only: A (old key only) cannot open it
        assert not_found(await fresh.request(a, "tools/list", {}))


async def test_ids_that_do_not_open_or_are_not_the_callers_are_404(upstream: Any) -> None:
    url = upstream("web", "mcp")
    policies = "{apiKey: {keys: [{key: sk-a, metadata: {name: a}}, {key: sk-b, metadata: {name: b}}]}}"
    yaml = keyed(http_target("web", url), policies=policies)
    wrong_key = keyed(http_target("web", url), OTHER_KEY, policies=policies)
    async with replicas(yaml, wrong_key) as (a, b), httpx.AsyncClient(timeout=30) as http:
        alice = Client(http, {**HEADERS, "authorization": "Bearer sk-a"})
        await alice.initialize(a)
        assert not_found(await alice.request(b, "tools/list", {}))  # another key
        tampered = alice.sid[:-2] + ("AA" if alice.sid[-2:] != "AA" else "BB")
        assert not_found(await alice.request(a, "tools/list", {}, sid=tampered))
        assert not_found(await alice.request(a, "tools/list", {}, sid="s1.garbage"))
        bob = Client(http, {**HEADERS, "authorization": "Bearer sk-b"})
        assert not_found(await bob.request(a, "tools/list", {}, sid=alice.sid))  # not bob's
        assert "result" in rpc_result(await alice.request(a, "tools/list", {}))  # still alice's
    async with run_gateway(yaml) as c, httpx.AsyncClient(timeout=30) as http:  # a replica that never saw it
        bob = Client(http, {**HEADERS, "authorization": "Bearer sk-b"})
        assert not_found(await bob.request(c, "tools/list", {}, sid=alice.sid))
        alice.http = http
        assert "result" in rpc_result(await alice.request(c, "tools/list", {}))


async def test_a_session_made_for_other_targets_is_not_resumed(upstream: Any) -> None:
    url, other = upstream("web", "mcp"), upstream("more", "mcp")
    two = keyed(http_target("web", url) + http_target("more", other))
    async with replicas(keyed(http_target("web", url)), two) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        await client.initialize(a)
        assert not_found(await client.request(b, "tools/list", {}))  # the client initializes again


async def test_without_a_key_ids_stay_random_and_live_on_one_replica(upstream: Any) -> None:
    url = upstream("web", "mcp")
    async with replicas(mcp_yaml(http_target("web", url))) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        await client.initialize(a)
        assert len(client.sid) == 32 and not client.sid.startswith("s1.")
        assert not_found(await client.request(b, "tools/list", {}))


async def test_the_environment_key_wins_over_the_config(upstream: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = upstream("web", "mcp")
    async with run_gateway(keyed(http_target("web", url))) as a, httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        await client.initialize(a)
        monkeypatch.setenv("SESSION_KEY", OTHER_KEY)
        async with run_gateway(keyed(http_target("web", url))) as b:  # same config, but SESSION_KEY
            assert not_found(await client.request(b, "tools/list", {}))
        monkeypatch.setenv("SESSION_KEY", KEY)
        async with run_gateway(keyed(http_target("web", url), OTHER_KEY)) as c:
            assert "result" in rpc_result(await client.request(c, "tools/list", {}))


def test_a_bad_key_is_a_config_error_that_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    target = http_target("web", "http://127.0.0.1:9/mcp")
    with pytest.raises(ConfigError, match=r"t\.yaml: config\.session\.key: expected 64 hex characters"):
        parse_config(keyed(target, "abc"), "t.yaml")
    with pytest.raises(ConfigError, match=r"config\.session\.key: .*not hex"):
        parse_config(keyed(target, "zz" * 32), "t.yaml")
    with pytest.raises(ConfigError, match=r"config\.session\.previousKeys\[0\]: expected 64"):
        parse_config(keyed(target, previous="abc"), "t.yaml")
    with pytest.raises(ConfigError, match=r"config\.session\.bogus: unknown key"):
        parse_config(keyed(target).replace("session: {", "session: {bogus: 1, "), "t.yaml")
    assert Gateway(parse_config(keyed(target, '""'), "t.yaml")).seal is None  # empty: no key (`${SESSION_KEY:-}`)
    monkeypatch.setenv("SESSION_KEY", "not-a-key")
    with pytest.raises(ConfigError, match=r"^SESSION_KEY: expected 64 hex characters") as raised:
        Gateway(parse_config(keyed(target), "t.yaml"))
    assert "not-a-key" not in str(raised.value)  # a key is never echoed


def test_the_environment_adds_previous_keys_and_names_a_bad_one() -> None:
    from gateway.config.models import GlobalSettings
    from gateway.session_key import session_seal

    settings = GlobalSettings(adminAddr=None, session={"key": KEY})
    old_id = session_seal(GlobalSettings(adminAddr=None, session={"key": OTHER_KEY}), {}).seal({"n": 1})  # type: ignore[union-attr]
    assert session_seal(settings, {}).open(old_id) is None  # type: ignore[union-attr]
    assert session_seal(settings, {"SESSION_KEY_PREVIOUS": f"{'ef' * 32}, {OTHER_KEY}"}).open(old_id) == {"n": 1}  # type: ignore[union-attr]
    assert session_seal(GlobalSettings(adminAddr=None), {}) is None  # no key: random ids
    with pytest.raises(ConfigError, match=r"SESSION_KEY_PREVIOUS / config\.session\.previousKeys: expected 64"):
        session_seal(settings, {"SESSION_KEY_PREVIOUS": "nope"})
    with pytest.raises(ConfigError, match="without a current key"):
        session_seal(GlobalSettings(adminAddr=None), {"SESSION_KEY_PREVIOUS": OTHER_KEY})


async def test_a_reload_that_rotates_the_key_keeps_live_sessions_and_seals_new_ones_with_the_new_key(
    upstream: Any, tmp_path: Any
) -> None:
    from mcp import Client as SdkClient

    from gateway.config import load_config
    from gateway.runtime import Runtime
    from protocols.mcp.session_seal import SessionSeal, parse_key
    from tests.conftest import started

    url = upstream("web", "mcp")
    path = tmp_path / "gw.yaml"
    path.write_text(keyed(http_target("web", url)))
    runtime = Runtime(load_config(path), lambda: load_config(path), poll=0.1)
    async with started(runtime), httpx.AsyncClient(timeout=30) as http:
        gw_url = f"http://127.0.0.1:{next(iter(runtime.sockets.values())).bind.bound_port}/mcp"
        async with SdkClient(gw_url, mode="legacy", cache=None) as client:  # the SDK's handshake-era client
            web = (await client.call_tool("session", {})).content[0].text  # type: ignore[union-attr]
            path.write_text(keyed(http_target("web", url), OTHER_KEY, previous=KEY))
            with anyio.fail_after(15):
                while runtime.generation < 2:  # bounded by fail_after
                    await anyio.sleep(0.05)
            assert (await client.call_tool("session", {})).content[0].text == web  # type: ignore[union-attr]
        fresh = await http.post(gw_url, json=INIT, headers=HEADERS)
        sid = fresh.headers["mcp-session-id"]
        assert SessionSeal(parse_key(OTHER_KEY)).open(sid) is not None
        assert SessionSeal(parse_key(KEY)).open(sid) is None


async def test_server_to_client_requests_travel_under_sealed_ids_on_either_replica(upstream: Any) -> None:
    from mcp import Client as SdkClient
    from mcp import types

    async def elicitation(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    yaml = keyed(http_target("web", upstream("web", "mcp")))
    async with replicas(yaml) as (a, b):
        async with SdkClient(a.url, mode="legacy", cache=None, elicitation_callback=elicitation) as c:
            assert "forty-two" in (await c.call_tool("ask", {"question": "what?"})).content[0].text  # type: ignore[union-attr]
        async with httpx.AsyncClient(timeout=30) as http:
            client = Client(http)
            init = {**INIT, "params": {**INIT["params"], "capabilities": {"sampling": {}}}}  # type: ignore[dict-item]
            opened = await http.post(a.url, json=init, headers=HEADERS)
            client.sid = opened.headers["mcp-session-id"]
            await http.post(a.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=client.on())
            call = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "sample", "arguments": {"prompt": "p"}},
            }
            answers = []
            with anyio.fail_after(20):
                async with http.stream("POST", b.url, json=call, headers=client.on()) as stream:  # resumed on B
                    async for line in stream.aiter_lines():
                        if not line.startswith("data:") or not line[5:].strip():
                            continue
                        message = json.loads(line[5:])
                        if message.get("method") == "sampling/createMessage":
                            result = {"role": "assistant", "content": {"type": "text", "text": "sampled"}, "model": "t"}
                            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
                            assert (await http.post(b.url, json=reply, headers=client.on())).status_code == 202
                        elif message.get("id") == 7:
                            answers.append(message)
                            break
            assert answers[0]["result"]["content"][0]["text"] == "sampled"


async def test_a_resume_the_replica_would_refuse_as_a_new_session_is_refused_likewise(upstream: Any) -> None:
    from tests.conftest import free_port

    web, dead = http_target("web", upstream("web", "mcp")), http_target("dead", f"http://127.0.0.1:{free_port()}/mcp")
    lenient = keyed(web + dead, failureMode="failOpen")
    strict = keyed(web + dead, failureMode="failClosed")
    async with replicas(lenient, strict) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        await client.initialize(a)
        assert await client.call(a, "web_echo", text="x") == "web: x"
        assert not_found(await client.request(b, "tools/list", {}))  # failClosed: it would not open, so 404
        assert b.gateway.endpoints["mcp"].session_count() == 0  # and no half-open session is left behind
        async with run_gateway(lenient) as c:  # where it would open, it resumes
            assert "result" in rpc_result(await client.request(c, "tools/list", {}))
    one_each = keyed(web, maxSessionsPerCaller="1")
    async with replicas(keyed(web), one_each) as (a, b), httpx.AsyncClient(timeout=30) as http:
        client, other = Client(http), Client(http)
        await client.initialize(a)
        await other.initialize(b)  # the caller's one session on B
        refused = await client.request(b, "tools/list", {})
        assert refused.status_code == 429 and "maxSessionsPerCaller" in refused.json()["error"]["message"]


async def test_2026_07_28_requests_are_served_as_without_a_key(upstream: Any) -> None:
    from mcp import Client as SdkClient

    async with run_gateway(keyed(http_target("web", upstream("web", "mcp")))) as a:
        async with SdkClient(a.url, mode="2026-07-28", cache=None) as client:  # stateless: no session id at all
            assert (await client.call_tool("echo", {"text": "now"})).content[0].text == "web: now"  # type: ignore[union-attr]
        assert a.gateway.endpoints["mcp"].session_count() == 0


def test_two_gateway_processes_with_the_same_session_key_share_sessions(upstream: Any, tmp_path: Any) -> None:
    """Real processes, the key only in their environment (as the manifests give it)."""
    import os
    import subprocess

    from tests.conftest import ROOT, free_port, stop, wait_for_port
    from tests.gateway.test_cli import AGENTPLEX

    path = tmp_path / "gw.yaml"
    path.write_text(
        "config: {adminAddr: null, statsAddr: null}\n" + mcp_yaml(http_target("web", upstream("web", "mcp")))
    )
    ports = [free_port(), free_port()]
    env = {**os.environ, "SESSION_KEY": KEY}
    procs = [
        subprocess.Popen(
            [AGENTPLEX, "run", "-f", str(path), "--port", str(p)], cwd=ROOT, env=env, stderr=subprocess.PIPE
        )
        for p in ports
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_for_port(port, proc)
        a, b = (f"http://127.0.0.1:{p}/mcp" for p in ports)
        with httpx.Client(timeout=30) as http:
            opened = http.post(a, json=INIT, headers=HEADERS)
            session = {**HEADERS, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": VERSION}
            http.post(a, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "session", "arguments": {}}}
            on_a = rpc_result(http.post(a, json=call, headers=session))["result"]["content"][0]["text"]
            on_b = rpc_result(http.post(b, json=call, headers=session))["result"]["content"][0]["text"]
            assert on_a and on_b == on_a
        procs[0].terminate()  # A goes away: B carries on
        assert procs[0].wait(20) == 0
        with httpx.Client(timeout=30) as http:
            assert rpc_result(http.post(b, json=call, headers=session))["result"]["content"][0]["text"] == on_a
    finally:
        for proc in procs:
            stop(proc)
    log = procs[1].stderr.read().decode() if procs[1].stderr else ""
    assert "MCP session ids are sealed" in log


async def test_sessions_that_only_list_list_from_the_shared_connection_as_without_a_key(upstream: Any) -> None:
    url = upstream("web", "mcp", "--page-size", "100")  # counts the tools/list requests it answers
    async with run_gateway(keyed(http_target("web", url))) as a, httpx.AsyncClient(timeout=30) as http:
        first = Client(http)
        await first.initialize(a)
        assert "result" in rpc_result(await first.request(a, "tools/list", {}))
        before = int(await first.call(a, "tools_list_calls"))
        for _ in range(3):
            other = Client(http)
            await other.initialize(a)
            assert "result" in rpc_result(await other.request(a, "tools/list", {}))
        assert int(await first.call(a, "tools_list_calls")) == before  # none of them asked the target again


async def test_what_a_target_sends_outside_any_request_reaches_a_resumed_session(upstream: Any) -> None:
    """The resuming replica opens the taken-up upstream session's GET stream (without a second initialize)."""
    url = upstream("web", "mcp")
    config = keyed(http_target("web", url))
    async with httpx.AsyncClient(timeout=30) as http:
        client = Client(http)
        async with run_gateway(config) as a:
            assert (await client.initialize(a)).status_code == 200
            upstream_session = await client.call(a, "session")
        async with run_gateway(config) as b:
            assert await client.call(b, "session") == upstream_session  # resumed on B, same upstream session
            headers = {**client.on(), "accept": "text/event-stream"}
            async with http.stream("GET", b.url, headers=headers) as stream:
                assert stream.status_code == 200
                assert await client.call(b, "chatty_later", count=2, delay=0.3) == "later"
                logged = []
                with anyio.fail_after(10):
                    async for line in stream.aiter_lines():
                        if line.startswith("data:") and "notifications/message" in line:
                            logged.append(json.loads(line[5:])["params"]["data"])
                            if len(logged) == 2:
                                break
                assert logged == ["later 1", "later 2"]
