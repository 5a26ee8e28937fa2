"""Secrets in a target's config (URL userinfo and query, command-line arguments, headers, environment)
reach no client, no probe, no admin view and no log line; the config view shows only what is clearly
not secret."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from gateway.app import Gateway
from gateway.cli import _print_catalog
from gateway.config import load_config, parse_config
from gateway.config.redact import REDACTED, redacted_config
from gateway.runtime import Runtime
from protocols import redaction
from tests.conftest import HEADERS, INIT, free_port, http_route_yaml, mcp_yaml, run_gateway, started
from tests.gateway.test_backend_auth import oauth2, refusal, target, upstream_server

pytestmark = pytest.mark.anyio

PASSWORD, QUERY_KEY, TOKEN, API_KEY = "url-pass-9f2c", "query-key-51ab", "arg-token-77de", "arg-apikey-03e1"
HEADER_SECRET, ENV_SECRET = "hdr-secret-6a0b", "env-secret-c4d8"
# Item 4's cases: names no list of secret-sounding words foresaw.
URL_API_KEY, URL_TOKEN, PW_HEADER, SIG_HEADER = "q-apikey-e91f", "q-token-2b7c", "upstream-pw-44d0", "api-sig-8c1e"
ARG_BEARER, ARG_X_API_KEY, ARG_DOCKER_ENV = "arg-bearer-5d3a", "arg-xapikey-a7f2", "ghp_dockerenv1234"
GITHUB_PAT, SLACK_XOXB = "github-pat-0e6b", "xoxb-slack-93c5"
SECRETS = (
    PASSWORD, QUERY_KEY, TOKEN, API_KEY, HEADER_SECRET, ENV_SECRET, URL_API_KEY, URL_TOKEN, PW_HEADER, SIG_HEADER,
    ARG_BEARER, ARG_X_API_KEY, ARG_DOCKER_ENV, GITHUB_PAT, SLACK_XOXB,
)  # fmt: skip
STDIO_ARGS = [
    "--token", TOKEN, f"--api-key={API_KEY}", "--header", f"Authorization: Bearer {ARG_BEARER}",
    "-H", f"X-Api-Key: {ARG_X_API_KEY}", "-e", f"GITHUB_PERSONAL_ACCESS_TOKEN={ARG_DOCKER_ENV}", "--verbose",
]  # fmt: skip
STDIO_ENV = {"GITHUB_PAT": GITHUB_PAT, "SLACK_XOXB": SLACK_XOXB, "LOG_LEVEL": "debug"}
HTTP_URL = f"http://svc:{PASSWORD}@127.0.0.1:{{port}}/mcp?key={QUERY_KEY}&api_key={URL_API_KEY}&token={URL_TOKEN}"
HTTP_HEADERS = {
    "x-upstream-pw": PW_HEADER,
    "x-api-sig": SIG_HEADER,
    "Authorization": HEADER_SECRET,
    "Accept-Language": "en",
}

DISCOVER = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
MODERN = {**HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"}


def http_down() -> str:
    """A streamable-HTTP target that refuses connections, with credentials in its URL and headers."""
    url = HTTP_URL.format(port=free_port())
    return f"""
  - name: remote
    mcp: {{host: "{url}", headers: {json.dumps(HTTP_HEADERS)}}}"""


def stdio_exits() -> str:
    """A stdio target that exits at once, with credentials in its arguments and environment."""
    args = ["-c", "import sys; sys.exit(3)", *STDIO_ARGS]
    return f"""
  - name: local
    stdio: {{cmd: "{sys.executable}", args: {json.dumps(args)}, env: {json.dumps(STDIO_ENV)}}}"""


def stdio_missing() -> str:
    """A stdio target whose command does not exist."""
    return f"""
  - name: missing
    stdio: {{cmd: no-such-command-h3, args: {json.dumps(STDIO_ARGS)}, env: {json.dumps(STDIO_ENV)}}}"""


def rpc(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a plain JSON or a one-event SSE answer."""
    if response.headers["content-type"].startswith("text/event-stream"):
        return json.loads(next(line[5:] for line in response.text.splitlines() if line.startswith("data:")))
    return response.json()


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows {secret!r}: {text[:2000]}"


@pytest.mark.parametrize("target", [http_down, stdio_exits, stdio_missing])
async def test_a_target_that_is_down_leaks_none_of_its_secrets(
    target: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentplex")
    path = tmp_path / "gw.yaml"
    path.write_text(f"config: {{adminAddr: 127.0.0.1:0, statsAddr: null}}\nmcp:\n  port: 0\n  targets:{target()}\n")  # type: ignore[operator]
    config = load_config(path)
    async with started(Runtime(config, lambda: load_config(path), poll=60)) as runtime:
        port = next(iter(runtime.sockets.values())).bind.bound_port
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.admin_port}", timeout=30) as admin,
        ):
            # An unauthenticated client of a failClosed route: refused, with the target's name and a reason.
            for body, headers in ((INIT, HEADERS), (DISCOVER, MODERN)):
                answer = await client.post("/mcp", json=body, headers=headers)
                assert_clean(answer.text, f"{body['method']} answer")
                error = rpc(answer)["error"]
                assert "failClosed" in error["message"] and error["data"] == {"target": error["data"]["target"]}
            ready = await admin.get("/readyz")
            assert ready.status_code == 503
            assert_clean(ready.text, "/readyz")
            for view in ("/targets", "/catalog", "/config", "/ui", "/ui/config"):  # the UI: its dashboard, config
                shown = await admin.get(view)
                assert shown.status_code == 200
                assert_clean(shown.text, view)
            assert_clean("\n".join([*runtime.gateway.summary(), *runtime.gateway.failed_targets()]), "start-up log")
    assert_clean("\n".join(r.getMessage() for r in caplog.records), "the log")


async def test_validate_catalog_names_a_failing_target_without_its_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = parse_config(f"mcp:\n  port: 0\n  targets:{http_down()}{stdio_missing()}\n")
    assert await _print_catalog(Gateway(config), timeout=20) == 2
    printed = capsys.readouterr().out
    assert_clean(printed, "validate --catalog")
    assert "target remote [mcp] http://127.0.0.1:" in printed
    assert f"/mcp?key={REDACTED}&api_key={REDACTED}&token={REDACTED}: FAILED" in printed
    assert f"target missing [stdio] no-such-command-h3 --token {REDACTED} --api-key={REDACTED} --header" in printed


def test_an_error_text_keeps_its_reason_and_loses_the_secrets() -> None:
    secrets = redaction.hidden(
        f"http://svc:{PASSWORD}@h/mcp?key={QUERY_KEY}", ["--token", TOKEN], {"GITHUB_PAT": ENV_SECRET}, {}
    )
    quoted = f"HTTPStatusError: 401 for url 'http://svc:{PASSWORD}@h/mcp?key={QUERY_KEY}' (sent {TOKEN}, {ENV_SECRET})"
    assert redaction.text(quoted, secrets) == (
        f"HTTPStatusError: 401 for url 'http://h/mcp?key={REDACTED}' (sent {REDACTED}, {REDACTED})"
    )


def test_the_config_view_shows_structure_and_hides_every_value_it_cannot_vouch_for() -> None:
    config = parse_config(f"mcp:\n  port: 0\n  targets:{http_down()}{stdio_missing()}\n")
    shown = redacted_config(config)
    assert_clean(json.dumps(shown), "/config")
    remote, missing = (target.get("mcp") or target.get("stdio") for target in shown["mcp"]["targets"])
    assert remote["host"].startswith("http://127.0.0.1:")  # no userinfo
    assert remote["host"].endswith(f"/mcp?key={REDACTED}&api_key={REDACTED}&token={REDACTED}")
    assert remote["headers"] == {
        "x-upstream-pw": REDACTED,
        "x-api-sig": REDACTED,
        "Authorization": REDACTED,
        "Accept-Language": "en",
    }
    assert missing["cmd"] == "no-such-command-h3"
    assert missing["args"] == [
        "--token", REDACTED, f"--api-key={REDACTED}", "--header", f"Authorization: {REDACTED}",
        "-H", f"X-Api-Key: {REDACTED}", "-e", f"GITHUB_PERSONAL_ACCESS_TOKEN={REDACTED}", "--verbose",
    ]  # fmt: skip
    assert missing["env"] == {"GITHUB_PAT": REDACTED, "SLACK_XOXB": REDACTED, "LOG_LEVEL": "debug"}


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["-y", "@modelcontextprotocol/server-github"], ["-y", "@modelcontextprotocol/server-github"]),
        (
            ["-m", "pkg.server", "--port", "8080", "--name", "alpha"],
            ["-m", "pkg.server", "--port", "8080", "--name", "alpha"],
        ),
        (
            ["run", "-i", "--rm", "-e", "GITHUB_TOKEN", "ghcr.io/github/github-mcp-server"],
            ["run", "-i", "--rm", "-e", "GITHUB_TOKEN", "ghcr.io/github/github-mcp-server"],
        ),
        (["--upstream-pw", "hunter2"], ["--upstream-pw", REDACTED]),
        (["--x-api-sig=abc"], [f"--x-api-sig={REDACTED}"]),
        (["--header=Authorization: Bearer abc"], [f"--header=Authorization: {REDACTED}"]),
        (["-H", "Accept: text/plain"], ["-H", "Accept: text/plain"]),
        (["SLACK_XOXB=xoxb-1", "LOG_LEVEL=info"], [f"SLACK_XOXB={REDACTED}", "LOG_LEVEL=info"]),
        (["ghp_0123456789abcdefghijklmnopqrstuvwxyz"], [REDACTED]),  # a bare key, after no flag at all
        (["postgres://app:pw@db:5432/app?sslkey=x"], [f"postgres://db:5432/app?sslkey={REDACTED}"]),
        (["-c", "server --token abc --verbose"], ["-c", f"server --token {REDACTED} --verbose"]),
    ],
)
def test_arguments_are_shown_only_where_they_are_clearly_not_secret(args: list[str], shown: list[str]) -> None:
    assert redaction.args(args) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.com:8443/mcp", "https://example.com:8443/mcp"),
        ("http://user:pw@host/mcp?api_key=k&token=t", f"http://host/mcp?api_key={REDACTED}&token={REDACTED}"),
        ("https://mcp.example.com/s/9f2c51ab77de03e16a0bc4d8/mcp", f"https://mcp.example.com/s/{REDACTED}/mcp"),
        ("http://host/mcp#access_token=t", "http://host/mcp"),
    ],
)
def test_urls_show_where_they_go_and_no_credential(url: str, shown: str) -> None:
    assert redaction.url(url) == shown


async def test_an_agent_that_is_down_leaks_none_of_its_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentplex")
    url = HTTP_URL.format(port=free_port())
    path = tmp_path / "gw.yaml"
    path.write_text(
        "config: {adminAddr: 127.0.0.1:0, statsAddr: null}\n"
        f"a2a:\n  port: 0\n  agents: [{{name: helper, url: '{url}', headers: {json.dumps(HTTP_HEADERS)}}}]\n"
    )
    async with started(Runtime(load_config(path), lambda: load_config(path), poll=60)) as runtime:
        port = next(iter(runtime.sockets.values())).bind.bound_port
        async with httpx.AsyncClient(timeout=30) as http:
            listed = await http.get(f"http://127.0.0.1:{port}/a2a/agents")
            assert listed.status_code == 200
            (agent,) = listed.json()["agents"]
            assert agent["healthy"] is False and "cannot fetch" in agent["lastError"], agent
            assert_clean(listed.text, "/a2a/agents")
            shown = await http.get(f"http://127.0.0.1:{runtime.admin_port}/agents")
            assert shown.status_code == 200 and "cannot fetch" in shown.text
            assert_clean(shown.text, "admin /agents")
            assert_clean("\n".join(runtime.gateway.summary()), "start-up log")
    assert_clean("\n".join(r.getMessage() for r in caplog.records), "the log")


async def test_a_token_endpoint_problem_shows_its_url_redacted() -> None:
    """Both ways a backendAuth problem reaches a client: an MCP target's refusal, a plain HTTP route's 502."""
    port = free_port()
    token_url = f"http://idp:{PASSWORD}@127.0.0.1:{port}/token?tenant_key={QUERY_KEY}"
    shown = f"cannot reach the token endpoint http://127.0.0.1:{port}/token?tenant_key={REDACTED}: ConnectError"
    async with upstream_server("api") as (url, _), httpx.AsyncClient(timeout=30) as http:
        async with run_gateway(mcp_yaml(target("api", url), policies=oauth2(token_url))) as gw:
            message = refusal(await http.post(gw.url, json=INIT, headers=HEADERS))
        assert_clean(message, "the MCP refusal")
        assert "target 'api' cannot connect: backendAuth failed: " in message and shown in message, message
        async with run_gateway(http_route_yaml(url.removeprefix("http://"), oauth2(token_url))) as gw:
            answer = await http.get(f"http://127.0.0.1:{gw.port}/api/x")
        assert answer.status_code == 502
        assert_clean(answer.text, "the HTTP route's 502")
        assert shown in answer.json()["error"], answer.text


def test_redacting_twice_changes_nothing() -> None:
    once = redaction.text(f"see http://u:p@h/s/9f2c51ab77de03e16a0bc4d8?a=1&b=&c#f: {TOKEN} (http://h/x?k=v).", [TOKEN])
    assert once == f"see http://h/s/{REDACTED}?a={REDACTED}&b=&{REDACTED}: {REDACTED} (http://h/x?k={REDACTED})."
    assert redaction.text(once, [TOKEN]) == once


async def test_a_url_the_reason_quotes_reaches_the_client_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """An SSE target that answers 401: httpx's error quotes the URL it asked, credentials and all."""
    caplog.set_level(logging.WARNING)  # what the CLI lets through from the SDK and httpx
    caplog.set_level(logging.DEBUG, logger="agentplex")
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def refuse(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(10):
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    head += await stream.receive()
                await stream.send(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    url = f"http://svc:{PASSWORD}@127.0.0.1:{port}/sse?key={QUERY_KEY}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, refuse)
        yaml = mcp_yaml(f"\n  - name: odd\n    sse: {{host: '{url}'}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            message = rpc(await http.post(gw.url, json=INIT, headers=HEADERS))["error"]["message"]
        tg.cancel_scope.cancel()
    assert_clean(message, "the refusal")
    assert f"401 Unauthorized' for url 'http://127.0.0.1:{port}/sse?key={REDACTED}'" in message, message
    assert_clean("\n".join(r.getMessage() for r in caplog.records), "the log")
