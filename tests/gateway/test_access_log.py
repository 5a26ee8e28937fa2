"""Access logs: one line per HTTP request on `agentplex.access`, JSON or text, with no secrets in it."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from tests.conftest import HEADERS, run_gateway, stdio_target
from tests.gateway.test_auth import SIGNER, call, jwt_policy, rpc, session

pytestmark = pytest.mark.anyio

KEY = "sk-very-secret-key-123"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agentplex.access"]


def config(log_format: str, policies: str) -> str:
    return (
        f"config: {{logging: {{format: {log_format}}}}}\n"
        f"mcp:\n  port: 0\n  policies: {policies}\n  targets:{stdio_target('local')}\n"
    )


async def test_json_lines_carry_the_mcp_call_and_the_caller_but_no_token_or_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api_key = (
        f"apiKey: {{keys: [{{key: {KEY}, metadata: {{name: ops}}}}], location: {{header: x-api-key, prefix: ''}}}}"
    )
    rules = "mcpAuthorization: {rules: ['mcp.tool.name != \"add\"']}"
    policies = jwt_policy(extra="")[:-1] + f", {api_key}, {rules}}}"
    token = SIGNER.token("alice")
    caplog.set_level(logging.INFO, logger="agentplex.access")
    async with run_gateway(config("json", policies)) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, {**HEADERS, "authorization": f"Bearer {token}", "x-api-key": KEY})
        assert "result" in rpc(await http.post(gw.url, json=call("echo", text="hi"), headers=headers))
        assert "error" in rpc(await http.post(gw.url, json=call("add", a=1, b=2), headers=headers))
        refused = await http.post(gw.url, json=call("echo", text="hi"), headers={**HEADERS, "x-api-key": KEY})
        assert refused.status_code == 401
    lines = access_lines(caplog)
    assert lines and all(token not in line and KEY not in line for line in lines)
    entries = [json.loads(line) for line in lines]
    session_id = headers["mcp-session-id"]
    init, initialized, echo, add, anonymous = entries
    assert (init["mcp.method"], init["mcp.session"], init["status"]) == ("initialize", session_id, 200)
    assert initialized["status"] == 202 and "mcp.method" not in initialized  # a notification
    assert echo["route"] == "mcp" and echo["method"] == "POST" and echo["path"] == "/mcp"
    assert echo["caller"] == "jwt:alice" and echo["status"] == 200 and echo["duration_ms"] > 0
    assert (echo["mcp.method"], echo["mcp.target"], echo["mcp.name"], echo["mcp.outcome"]) == (
        "tools/call",
        "local",
        "echo",
        "ok",
    )
    assert echo["mcp.session"] == session_id and "mcp.error_code" not in echo
    assert (add["mcp.name"], add["mcp.outcome"], add["mcp.error_code"]) == ("add", "denied", -32602)
    assert anonymous["status"] == 401 and anonymous["caller"] == "" and "mcp.method" not in anonymous


async def test_text_lines_name_the_api_key_and_never_its_value(caplog: pytest.LogCaptureFixture) -> None:
    policies = f"{{apiKey: {{keys: [{{key: {KEY}, metadata: {{name: ops}}}}]}}}}"
    caplog.set_level(logging.INFO, logger="agentplex.access")
    async with run_gateway(config("text", policies)) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, {**HEADERS, "authorization": f"Bearer {KEY}"})
        assert "result" in rpc(await http.post(gw.url, json=call("whoami"), headers=headers))
        await http.get(f"http://127.0.0.1:{gw.port}/nowhere?token={KEY}")
    lines = access_lines(caplog)
    assert all(KEY not in line for line in lines)
    whoami = next(line for line in lines if "mcp.name=whoami" in line)
    assert whoami.startswith("route=mcp method=POST path=/mcp status=200 duration_ms=")
    assert "caller=apiKey:ops" in whoami and "mcp.method=tools/call" in whoami and "mcp.target=local" in whoami
    assert any(line.startswith("method=GET path=/nowhere status=404") for line in lines)  # no route, no query


async def test_nothing_is_formatted_when_the_access_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agentplex.access")
    async with run_gateway(config("json", "{}")) as gw, httpx.AsyncClient(timeout=30) as http:
        await session(http, gw.url, HEADERS)
    assert access_lines(caplog) == []


async def test_frontend_access_log_rules_filter_add_and_remove(caplog: pytest.LogCaptureFixture) -> None:
    """frontendPolicies.accessLog, as in the reference: CEL over the request, its answer and the MCP call."""
    yaml = (
        "frontendPolicies:\n  accessLog:\n"
        "    filter: 'response.code >= 400 || (has(mcp.tool) && mcp.tool.name == \"echo\")'\n"
        "    add:\n"
        "      user: 'request.headers[\"x-user\"]'\n"
        "      tool: 'mcp.tool.target + \"/\" + mcp.tool.name'\n"
        "      answer_type: 'response.headers[\"content-type\"]'\n"
        "      missing: 'request.headers[\"x-nothing\"]'\n"
        "    remove: [caller, duration_ms]\n" + config("json", "{}")
    )
    caplog.set_level(logging.INFO, logger="agentplex.access")
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, {**HEADERS, "x-user": "ann"})
        assert "result" in rpc(await http.post(gw.url, json=call("echo", text="hi"), headers=headers))
        assert "result" in rpc(await http.post(gw.url, json=call("add", a=1, b=2), headers=headers))
        assert (await http.post(gw.url, content=b"{", headers=headers)).status_code == 400
    entries = [json.loads(line) for line in access_lines(caplog)]
    echo, bad = entries  # initialize, initialized and the add call are left out by the filter
    assert echo["mcp.name"] == "echo" and echo["user"] == "ann" and echo["tool"] == "local/echo"
    assert echo["answer_type"].startswith(("text/event-stream", "application/json"))
    assert bad["status"] == 400 and bad["user"] == "ann" and "tool" not in bad
    for entry in entries:
        assert "caller" not in entry and "duration_ms" not in entry and "missing" not in entry
