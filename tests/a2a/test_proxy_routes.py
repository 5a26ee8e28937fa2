"""Where A2A routes come from: a full-shape route with `policies: {a2a: {}}` and a `host` backend serves
one agent at its prefix; the short `a2a:` block shares the `mcp:` block's port when it names the same."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text
from a2a.types import Message, Part, Role, SendMessageRequest
from mcp import Client

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.a2a.harness import NO_STORE, V1, message, rpc
from tests.conftest import ROOT, mcp_yaml, run_gateway, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve

pytestmark = pytest.mark.anyio


def full_shape(agent: str, *, policies: str = "{a2a: {}}", matches: str = "[{path: {pathPrefix: /team/echo}}]") -> str:
    return textwrap.dedent(
        f"""
        binds:
        - port: 0
          listeners:
          - name: main
            routes:
            - name: team-echo
              matches: {matches}
              policies: {policies}
              backends: [{{host: "{agent}"}}]
        """
    )


async def test_a_full_shape_route_serves_one_agent_at_its_prefix() -> None:
    """The agent at the root of its server, mounted at /team/echo by a urlRewrite (as in the reference:
    without one, the agent would see /team/echo/... itself; tests/a2a/test_card_anchoring.py)."""
    policies = (
        "{a2a: {}, urlRewrite: {path: {prefix: /}},"
        ' mcpAuthorization: {rules: [{deny: \'a2a.agent == "team-echo" && a2a.method == "CancelTask"\'}]}}'
    )
    async with serve(echo_agent) as echo:
        yaml = full_shape(echo.url.removeprefix("http://"), policies=policies)  # host:port is enough
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/team/echo"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/", f"{base}/rest"]
            for binding in ("JSONRPC", "HTTP+JSON"):
                cfg = ClientConfig(supported_protocol_bindings=[binding], streaming=False)
                async with await create_client(base, client_config=cfg) as client:
                    msg = Message(role=Role.ROLE_USER, message_id=f"m-{binding}", parts=[Part(text="team")])
                    (answer,) = [ev async for ev in client.send_message(SendMessageRequest(message=msg))]
                    assert [get_artifact_text(a) for a in answer.task.artifacts] == ["echo: team"]
            denied = await http.post(f"{base}/", json=rpc("CancelTask", {"id": answer.task.id}, 1), headers=V1)
            assert denied.json()["error"]["message"] == "CancelTask on agent 'team-echo' is not allowed"
            assert all(h.get("x-forwarded-host") == f"127.0.0.1:{gw.port}" for m, _, h in echo.seen if m == "POST")
            assert (await http.get(f"http://127.0.0.1:{gw.port}/team/other")).status_code == 404  # not the route's


def test_an_a2a_route_needs_a_prefix() -> None:
    """(Without the `a2a` policy a host backend is a plain HTTP backend: tests/gateway/test_http_backend.py.)"""
    exact = "[{path: {exact: /team/echo}}]"
    with pytest.raises(ConfigError, match=r"routes\[0\]\.matches: an A2A route needs a pathPrefix match"):
        Gateway(parse_config(full_shape("127.0.0.1:9", matches=exact), "x.yaml"))


def test_the_a2a_block_cannot_take_a_port_a_bind_uses() -> None:
    bind = (
        "binds: [{port: 3900, listeners: [{routes: [{backends: [{mcp: {targets: [{name: a, stdio: {cmd: x}}]}}]}]}]}]"
    )
    yaml = f"a2a: {{port: 3900, agents: [], {NO_STORE}}}\n{bind}\n"
    with pytest.raises(ConfigError, match=r"a2a\.port: port 3900 is already used by binds\[0\]\.port"):
        Gateway(parse_config(yaml, "x.yaml"))


async def test_mcp_and_a2a_share_one_port() -> None:
    async with serve(echo_agent) as echo:
        yaml = (
            mcp_yaml(stdio_target("local"))
            + f"a2a:\n  port: 0\n  {NO_STORE}\n  agents: [{{name: echo, url: '{echo.url}'}}]\n"
        )
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            assert len(gw.gateway.binds) == 1
            async with Client(gw.url, mode="legacy", cache=None) as client:
                assert "echo" in {t.name for t in (await client.list_tools()).tools}
            base = f"http://127.0.0.1:{gw.port}/a2a/echo"
            sent = await http.post(f"{base}/", json=rpc("SendMessage", {"message": message("both")}), headers=V1)
            assert sent.json()["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "echo: both"
            lines = list(gw.gateway.summary())
            assert "  A2A route a2a: prefix /a2a" in lines
            assert f"    agent echo [A2A 1.0] {echo.url}: up" in lines


async def test_the_a2a_sample_works_as_its_comments_say(tmp_path: Path) -> None:
    source = ROOT / "samples" / "a2a.yaml"
    async with serve(echo_agent) as echo:
        text = source.read_text().replace("port: 3000", "port: 0").replace("http://127.0.0.1:9100", echo.url)
        async with run_gateway(text, str(tmp_path / "a2a.yaml")) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/a2a/echo"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            assert card["supportedInterfaces"][0]["url"] == f"{base}/"
            hello = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}
            sent = await http.post(f"{base}/", json=rpc("SendMessage", {"message": hello}), headers=V1)
            assert sent.json()["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "echo: hello"
            rest = await http.post(
                f"{base}/rest/message:send", json={"message": {**hello, "messageId": "m2"}}, headers=V1
            )
            assert rest.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
            assert echo.seen[-1][2]["x-api-key"] == "demo"
            shout = {"message": {**hello, "messageId": "m3", "metadata": {"skillId": "shout"}}}
            assert (await http.post(f"{base}/rest/message:send", json=shout, headers=V1)).status_code == 403
