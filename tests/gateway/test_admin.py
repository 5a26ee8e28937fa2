"""The admin API as an operator uses it: a real Runtime, real upstreams, real sockets."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, ClientSession
from mcp.client.sse import sse_client

from gateway.config import ConfigError, load_config, parse_config
from gateway.config.redact import REDACTED, redacted_config
from gateway.runtime import Runtime
from tests.conftest import HEADERS, INIT, free_port, http_server, started, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve

pytestmark = pytest.mark.anyio

ADMIN = "config: {adminAddr: 127.0.0.1:0}\n"
STATS_ON = "config: {adminAddr: 127.0.0.1:0, statsAddr: 127.0.0.1:0}\n"


@contextlib.contextmanager
def web_upstream() -> Iterator[str]:
    with http_server("tests.fixtures.upstream", "--name", "web", "--transport", "http") as url:
        yield url


def two_targets(url: str, extra: str = "", admin: str = ADMIN) -> str:
    return (
        f"{admin}mcp:\n  port: 0{extra}\n  targets:{stdio_target('one')}\n  - name: web\n    mcp: {{host: '{url}'}}\n"
    )


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with started(Runtime(load_config(path), lambda: load_config(path), poll=60)) as runtime:
        assert runtime.admin_port is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.admin_port}", timeout=30) as admin:
            yield runtime, admin


def gateway_url(runtime: Runtime) -> str:
    return f"http://127.0.0.1:{next(iter(runtime.sockets.values())).bind.bound_port}/mcp"


async def test_every_endpoint_describes_the_running_gateway(tmp_path: Path) -> None:
    with web_upstream() as url:
        path = tmp_path / "gw.yaml"
        path.write_text(two_targets(url))
        async with running(path) as (runtime, admin):
            health = await admin.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "serving", "generation": 1})
            ready = await admin.get("/readyz")
            assert (ready.status_code, ready.json()["ready"], ready.json()["down"]) == (200, True, [])

            config = (await admin.get("/config")).json()
            assert config["source"] == str(path)
            assert [t["name"] for t in config["config"]["mcp"]["targets"]] == ["one", "web"]

            (route,) = (await admin.get("/targets")).json()["routes"]
            assert route["route"] == "mcp" and route["failureMode"] == "failClosed"
            one, web = route["targets"]
            assert one["transport"] == "stdio" and "tests.fixtures.upstream" in one["command"]
            assert web["transport"] == "mcp" and web["url"] == url
            for target in (one, web):
                assert target["health"] == "up" and target["lastError"] is None
                assert target["protocolEra"] == "handshake" and target["protocolVersion"]

            (catalog,) = (await admin.get("/catalog")).json()["routes"]
            tools = {tool["name"]: tool for tool in catalog["tools"]}
            assert tools["one_echo"]["target"] == "one" and tools["one_echo"]["originalName"] == "echo"
            assert tools["web_add"]["target"] == "web" and tools["web_add"]["originalName"] == "add"
            resources = {r["uri"]: r for r in catalog["resources"]}
            assert any(r["target"] == "web" and r["originalUri"].startswith("mem://") for r in resources.values())
            assert catalog["problems"] == [] and catalog["failed"] == {}

            assert (await admin.get("/sessions")).json() == {"routes": [{"route": "mcp", "sessions": []}]}
            async with Client(gateway_url(runtime), mode="legacy", cache=None) as client:
                await client.list_tools()
                (sessions,) = (await admin.get("/sessions")).json()["routes"]
                (session,) = sessions["sessions"]
                assert session["transport"] == "streamable-http" and session["id"]
                assert 0 <= session["ageSeconds"] < 60
                (route,) = (await admin.get("/targets")).json()["routes"]
                assert [t["sessions"] for t in route["targets"]] == [0, 0]  # listing opened none of its own
                await client.call_tool("one_echo", {"text": "hi"})
                (route,) = (await admin.get("/targets")).json()["routes"]
                assert [t["sessions"] for t in route["targets"]] == [1, 0]  # a call opened one
                assert [t["spares"] for t in route["targets"]] == [0, 0]  # only sessionless calls use spares

            assert (await admin.get("/agents")).json() == {"agents": []}
            assert (await admin.get("/nothing")).status_code == 404


async def test_reload_applies_a_good_file_and_reports_a_bad_one(tmp_path: Path) -> None:
    with web_upstream() as url:
        path = tmp_path / "gw.yaml"
        path.write_text(two_targets(url))
        async with running(path) as (runtime, admin):
            path.write_text(two_targets(url, extra="\n  prefixMode: always"))
            good = await admin.post("/reload")
            assert (good.status_code, good.json()["reloaded"], good.json()["generation"]) == (200, True, 2)
            assert (await admin.get("/config")).json()["config"]["mcp"]["prefixMode"] == "always"

            path.write_text(ADMIN + "mcp:\n  port: 0\n  prefixMode: sometimes\n  targets: []\n")
            bad = await admin.post("/reload")
            assert bad.status_code == 422
            body = bad.json()
            assert body["reloaded"] is False and body["generation"] == 2
            assert (
                f"{path}: mcp.prefixMode: invalid value 'sometimes' (expected one of: conditional, always, never)"
                in (body["problems"])
            )
            assert any("mcp.targets" in problem for problem in body["problems"])
            assert runtime.generation == 2
            assert (await admin.get("/healthz")).status_code == 200
            assert (await admin.get("/config")).json()["config"]["mcp"]["prefixMode"] == "always"


async def test_readyz_is_503_while_a_target_is_down_and_names_it(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    with web_upstream() as url:
        path = tmp_path / "gw.yaml"
        path.write_text(two_targets(url))
        async with running(path) as (_, admin):
            assert (await admin.get("/readyz")).status_code == 200
            path.write_text(two_targets(url) + f"  - name: gone\n    mcp: {{host: '{dead}'}}\n")
            assert (await admin.post("/reload")).status_code == 200
            ready = await admin.get("/readyz")
            assert ready.status_code == 503
            (down,) = ready.json()["down"]
            assert (down["route"], down["target"]) == ("mcp", "gone") and down["error"]
            (route,) = (await admin.get("/targets")).json()["routes"]
            gone = route["targets"][2]
            assert gone["health"] == "down" and gone["lastError"]
            (catalog,) = (await admin.get("/catalog")).json()["routes"]
            assert list(catalog["failed"]) == ["gone"] and "gone" in catalog["failed"]["gone"]
            assert {"one_echo", "web_echo"} <= {tool["name"] for tool in catalog["tools"]}  # the others still list

            # failOpen serves the others: ready, with the target listed as degraded.
            path.write_text(
                two_targets(url, extra="\n  failureMode: failOpen") + f"  - name: gone\n    mcp: {{host: '{dead}'}}\n"
            )
            assert (await admin.post("/reload")).status_code == 200
            ready = await admin.get("/readyz")
            assert ready.status_code == 200
            assert [d["target"] for d in ready.json()["degraded"]] == ["gone"]


def test_a_non_loopback_admin_address_needs_a_token() -> None:
    targets = "mcp:\n  targets: [{name: a, stdio: {cmd: x}}]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config("config: {adminAddr: 0.0.0.0:15000}\n" + targets, "gw.yaml")
    assert "gw.yaml: config.adminAddr: the admin API on 0.0.0.0:15000 would be reachable from other machines" in str(
        caught.value
    )
    assert "set adminToken" in str(caught.value)
    config = parse_config("config: {adminAddr: 0.0.0.0:15000, adminToken: t0k}\n" + targets)
    assert config.config.adminAddr == "0.0.0.0:15000"
    assert parse_config("config: {adminAddr: '[::1]:15000'}\n" + targets).config.adminToken is None
    assert parse_config("config: {adminAddr: null}\n" + targets).config.adminAddr is None
    with pytest.raises(ConfigError, match=r"config\.adminAddr: invalid address 'admin'"):
        parse_config("config: {adminAddr: admin}\n" + targets)


async def test_the_token_is_required_when_set_except_for_the_probes(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    admin_block = "config: {adminAddr: 127.0.0.1:0, adminToken: 'opensesame'}\n"
    path.write_text(f"{admin_block}mcp:\n  port: 0\n  targets:{stdio_target('one')}\n")
    async with running(path) as (_, admin):
        for request in (admin.get("/config"), admin.get("/targets"), admin.post("/reload")):
            refused = await request
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = await admin.get("/config", headers={"authorization": "Bearer opensesam"})
        assert wrong.status_code == 401
        ok = await admin.get("/config", headers={"authorization": "Bearer opensesame"})
        assert ok.status_code == 200
        assert ok.json()["config"]["config"]["adminToken"] == REDACTED
        assert "opensesame" not in ok.text
        assert (await admin.get("/healthz")).status_code == 200
        assert (await admin.get("/readyz")).status_code == 200


async def test_browser_pages_and_rebound_host_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(f"{ADMIN}mcp:\n  port: 0\n  targets:{stdio_target('one')}\n")
    async with running(path) as (_, admin):
        other_site = await admin.post("/reload", headers={"origin": "http://evil.example"})
        assert other_site.status_code == 403
        rebound = await admin.get("/config", headers={"host": "evil.example:15000"})
        assert rebound.status_code == 403
        assert (await admin.get("/config", headers={"host": "localhost:15000"})).status_code == 200


async def test_an_admin_address_in_use_is_a_warning_and_null_turns_it_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "gw.yaml"
        path.write_text(f"config: {{adminAddr: 127.0.0.1:{port}}}\nmcp:\n  port: 0\n  targets:{stdio_target('one')}\n")
        runtime = Runtime(load_config(path))
        with caplog.at_level(logging.WARNING, logger="agentplex.admin"):
            async with anyio.create_task_group() as tg:
                await tg.start(runtime.run)
                assert runtime.admin_port is None
                async with Client(gateway_url(runtime), mode="legacy", cache=None) as client:
                    assert any(t.name == "echo" for t in (await client.list_tools()).tools)
                runtime.stop()
        assert f"admin API: cannot listen on 127.0.0.1:{port}" in caplog.text

    path.write_text(f"config: {{adminAddr: null}}\nmcp:\n  port: 0\n  targets:{stdio_target('one')}\n")
    runtime = Runtime(load_config(path))
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.run)
        assert runtime.admin is None and runtime.admin_port is None
        runtime.stop()


SECRETS = {
    "sk-live-apikey": "apiKey key",
    "backend-key-value": "backendAuth key",
    "oauth-client-secret": "oauth2 clientSecret",
    "hmac-jwk-secret": "jwks inline symmetric key",
    "ann:$apr1$hash": "htpasswd inline",
    "Bearer header-token": "target Authorization header",
    "cookie-value": "agent cookie header",
    "env-api-token": "stdio env",
    "arg-token": "stdio --token argument",
    "arg-eq-secret": "stdio --api-key= argument",
    "redis-password": "redis URL password",
    "admin-token-value": "adminToken",
    "set-header-secret": "requestHeaderModifier Authorization",
}

SECRET_CONFIG = """
config: {adminAddr: 127.0.0.1:0, adminToken: admin-token-value}
mcp:
  port: 0
  policies:
    apiKey: {keys: [{key: sk-live-apikey, metadata: {name: ops}}]}
    backendAuth: {key: backend-key-value}
    jwtAuth: {jwks: {inline: '{"keys": [{"kty": "oct", "kid": "one", "k": "hmac-jwk-secret"}]}'}}
    requestHeaderModifier: {set: {Authorization: set-header-secret, X-Team: blue, Cache-Control: no-store}}
    remoteRateLimit:
      redis: {url: "redis://:redis-password@127.0.0.1:6379/0"}
      limits: [{maxTokens: 5, fillInterval: 1s}]
  targets:
  - name: local
    stdio: {cmd: server, args: [--token, arg-token, --api-key=arg-eq-secret, --verbose], env: {API_TOKEN: env-api-token, LOG_LEVEL: debug}}
  - name: remote
    mcp: {host: "https://example.com/mcp", headers: {Authorization: Bearer header-token, Accept-Language: en}}
a2a:
  port: 0
  agents: [{name: helper, url: "http://127.0.0.1:1", headers: {Cookie: cookie-value}}]
binds:
- port: 0
  listeners:
  - routes:
    - name: other
      policies:
        basicAuth: {htpasswd: {inline: "ann:$apr1$hash"}}
        backendAuth: {oauth2: {tokenUrl: "https://idp.example/token", clientId: gw, clientSecret: oauth-client-secret}}
      backends: [{host: 127.0.0.1:9}]
"""


def test_redacted_config_hides_every_secret_and_keeps_the_rest() -> None:
    config = parse_config(SECRET_CONFIG)
    shown = json.dumps(redacted_config(config))
    for secret, what in SECRETS.items():
        assert secret not in shown, f"{what} leaked"
    data = redacted_config(config)
    local, remote = data["mcp"]["targets"]
    assert local["stdio"]["args"] == ["--token", REDACTED, f"--api-key={REDACTED}", "--verbose"]
    assert local["stdio"]["env"] == {"API_TOKEN": REDACTED, "LOG_LEVEL": "debug"}
    assert remote["mcp"]["headers"] == {"Authorization": REDACTED, "Accept-Language": "en"}
    policies = data["mcp"]["policies"]
    assert policies["apiKey"]["keys"] == [{"key": REDACTED, "metadata": {"name": "ops"}}]
    assert policies["requestHeaderModifier"]["set"] == {  # a header is shown only when known to be harmless
        "Authorization": REDACTED,
        "X-Team": REDACTED,
        "Cache-Control": "no-store",
    }
    assert policies["jwtAuth"]["jwks"]["inline"]["keys"] == [{"kty": "oct", "kid": "one", "k": REDACTED}]
    assert policies["remoteRateLimit"]["redis"]["url"] == "redis://127.0.0.1:6379/0"
    assert policies["remoteRateLimit"]["limits"][0]["maxTokens"] == 5  # a limit named "tokens" is no secret
    oauth2 = data["binds"][0]["listeners"][0]["routes"][0]["policies"]["backendAuth"]["oauth2"]
    assert (oauth2["clientId"], oauth2["clientSecret"], oauth2["tokenUrl"]) == (
        "gw",
        REDACTED,
        "https://idp.example/token",
    )


async def test_get_config_over_the_socket_shows_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    target = stdio_target("one").replace(" }", ", env: {API_TOKEN: env-api-token, LOG_LEVEL: debug} }")
    path.write_text(
        "config: {adminAddr: 127.0.0.1:0}\nmcp:\n  port: 0\n  policies: {apiKey: {keys: [{key: sk-live-apikey}]}}\n"
        f"  targets:{target}\n"
    )
    async with running(path) as (_, admin):
        shown = await admin.get("/config")
        assert shown.status_code == 200
        assert "sk-live-apikey" not in shown.text and "env-api-token" not in shown.text
        assert shown.json()["config"]["mcp"]["targets"][0]["stdio"]["env"]["LOG_LEVEL"] == "debug"


async def test_agents_are_listed_with_health_and_managed_through_the_registry(tmp_path: Path) -> None:
    async with serve(lambda base: echo_agent(base, "Echo")) as echo:
        path = tmp_path / "gw.yaml"
        path.write_text(
            f"{ADMIN}a2a:\n  port: 0\n  registry: {{sqlite: null, healthInterval: 0}}\n"
            f"  agents: [{{name: echo, url: '{echo.url}'}}]\n  registration: {{allowNetworks: [127.0.0.0/8]}}\n"
        )
        async with running(path) as (runtime, admin):
            (agent,) = (await admin.get("/agents")).json()["agents"]
            assert (agent["name"], agent["route"], agent["health"], agent["source"]) == ("echo", "a2a", "up", "config")
            assert agent["url"] == echo.url and agent["version"] == "1.0"

            # The registry API itself: the public URL is the gateway's A2A route, not the admin address.
            one = await admin.get("/agents/echo")
            assert one.status_code == 200
            gateway_port = next(iter(runtime.sockets.values())).bind.bound_port
            assert one.json()["url"] == f"http://127.0.0.1:{gateway_port}/a2a/echo"
            assert one.json()["card"]["name"] == "Echo"
            # The operator may register (the gateway's own callers may not: registration.allow is false).
            added = await admin.post("/agents", json={"name": "again", "url": echo.url})
            assert added.status_code == 201, added.text
            assert sorted(a["name"] for a in (await admin.get("/agents")).json()["agents"]) == ["again", "echo"]
            assert (await admin.delete("/agents/again")).status_code == 200
            assert (await admin.delete("/agents/echo")).status_code == 409  # a config agent
            assert (await admin.get("/agents/nobody")).status_code == 404


async def test_sessions_show_who_opened_them_never_their_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"{ADMIN}mcp:\n  port: 0\n  policies: {{apiKey: {{keys: [{{key: sk-ops-key, metadata: {{name: ops}}}}]}}}}\n"
        f"  targets:{stdio_target('one')}\n"
    )
    async with running(path) as (runtime, admin), httpx.AsyncClient(timeout=30) as http:
        headers = {**HEADERS, "authorization": "Bearer sk-ops-key"}
        init = await http.post(gateway_url(runtime), json=INIT, headers=headers)
        assert init.status_code == 200, init.text
        listed = await admin.get("/sessions")
        (route,) = listed.json()["routes"]
        (session,) = route["sessions"]
        assert session["id"] == init.headers["mcp-session-id"]
        assert session["principal"] == "apiKey:ops"
        assert "sk-ops-key" not in listed.text

        # A legacy SSE stream of the same caller: listed with its principal and age too.
        base = gateway_url(runtime).removesuffix("/mcp")
        key = {"authorization": "Bearer sk-ops-key"}
        async with sse_client(f"{base}/sse", headers=key) as (read, write), ClientSession(read, write) as legacy:
            await legacy.initialize()
            (route,) = (await admin.get("/sessions")).json()["routes"]
            (sse,) = [s for s in route["sessions"] if s["transport"] == "sse"]
            assert sse["principal"] == "apiKey:ops" and 0 <= sse["ageSeconds"] < 60
        for _ in range(100):  # the server notices the closed stream shortly after the client left
            (route,) = (await admin.get("/sessions")).json()["routes"]
            if [s["transport"] for s in route["sessions"]] == ["streamable-http"]:
                break
            await anyio.sleep(0.1)
        assert [s["transport"] for s in route["sessions"]] == ["streamable-http"]  # the stream's entry went with it


async def test_call_runs_one_tool_as_the_operator_and_says_clearly_what_went_wrong(tmp_path: Path) -> None:
    with contextlib.ExitStack() as web:
        url = web.enter_context(web_upstream())
        path = tmp_path / "gw.yaml"
        path.write_text(two_targets(url, extra="\n  failureMode: failOpen", admin=STATS_ON))
        async with running(path) as (runtime, admin):
            called = await admin.post("/call", json={"route": "mcp", "tool": "web_add", "arguments": {"a": 2, "b": 3}})
            assert called.status_code == 200, called.text
            body = called.json()
            assert (body["route"], body["tool"]) == ("mcp", "web_add")
            assert body["result"]["content"] == [{"type": "text", "text": "5"}] and body["result"]["isError"] is False

            async def call(payload: object) -> httpx.Response:
                return await admin.post("/call", content=json.dumps(payload))

            for payload, status, error in (
                ({"route": "nope", "tool": "web_add"}, 404, "unknown_route"),
                ({"route": "mcp", "tool": "web_nothing"}, 404, "unknown_tool"),
                ({"route": "mcp"}, 400, "bad_request"),
                ({"route": "mcp", "tool": "web_add", "arguments": [1, 2]}, 400, "bad_request"),
                ([], 400, "bad_request"),
            ):
                answer = await call(payload)
                assert (answer.status_code, answer.json()["error"]) == (status, error), payload
            assert (await admin.post("/call", content=b"{not json")).json()[
                "error_description"
            ] == "the body is not JSON"
            # The tool's own failure is a result; the upstream's refusal of bad arguments an error naming it.
            refused = await call({"route": "mcp", "tool": "web_add", "arguments": {"a": "two"}})
            assert refused.status_code == 200 and refused.json()["result"]["isError"] is True
            assert "valid integer" in refused.json()["result"]["content"][0]["text"]
            foreign = await admin.post(
                "/call", json={"route": "mcp", "tool": "web_add"}, headers={"origin": "http://evil.example"}
            )
            assert foreign.status_code == 403

            stats = (await admin.get("/stats")).json()
            assert stats["now"] == {"targets": 2, "targetsUp": 2, "sessions": 0, "agents": 0}
            (add,) = [tool for tool in stats["totals"]["toolCalls"] if tool["name"] == "web_add"]
            assert (add["route"], add["target"], add["calls"], add["failed"]) == ("mcp", "web", 2, 1)

            # A client lists (so the catalog knows web_add), then web dies: the call names the target.
            async with Client(gateway_url(runtime), mode="legacy", cache=None) as client:
                await client.list_tools()
                web.close()
                dead = await admin.post(
                    "/call", json={"route": "mcp", "tool": "web_add", "arguments": {"a": 1, "b": 1}}
                )
                assert dead.status_code == 502
                assert dead.json()["error"] == "call_failed" and "target 'web'" in dead.json()["error_description"]
                # ...and the gateway goes on serving the other target.
                echoed = await admin.post(
                    "/call", json={"route": "mcp", "tool": "one_echo", "arguments": {"text": "x"}}
                )
                assert echoed.json()["result"]["content"][0]["text"] == "one: x"


async def test_stats_without_metrics_still_show_what_is_up(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"config: {{adminAddr: 127.0.0.1:0, statsAddr: null}}\nmcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    )
    async with running(path) as (_, admin):
        stats = (await admin.get("/stats")).json()
        assert stats == {"now": {"targets": 1, "targetsUp": 1, "sessions": 0, "agents": 0}, "totals": None}


async def test_ui_pages_render_and_a_forged_sign_in_cookie_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"config: {{adminAddr: 127.0.0.1:0, adminToken: opensesame}}\nmcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    )
    async with running(path) as (_, admin):
        assert (await admin.get("/ui/static/ui.js")).status_code == 200  # the sign-in page needs it
        for forged in ("opensesame", "0" * 64):
            refused = await admin.get("/ui/catalog", cookies={"agentplex-admin": forged})
            assert (refused.status_code, refused.headers["location"]) == (303, "/ui/login")
            assert (await admin.get("/stats", cookies={"agentplex-admin": forged})).status_code == 401
        signed = await admin.post("/ui/login", data={"token": "opensesame"})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui"
        cookie = signed.cookies["agentplex-admin"]
        assert (
            "httponly" in signed.headers["set-cookie"].lower()
            and "samesite=strict" in signed.headers["set-cookie"].lower()
        )
        for page, marker in (
            ("/ui", "MCP targets"),
            ("/ui/catalog", "<code>echo</code>"),
            ("/ui/playground?route=mcp&tool=echo", 'id="arg-text"'),
            ("/ui/playground?route=mcp&tool=nothing", "route &#39;mcp&#39; serves no tool named &#39;nothing&#39;"),
            ("/ui/agents", "No A2A agents"),
            ("/ui/config", "&lt;redacted&gt;"),
        ):
            shown = await admin.get(page, cookies={"agentplex-admin": cookie})
            assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html"), page
            assert marker in shown.text, page
            assert "script-src" not in shown.headers["content-security-policy"]  # default-src 'self': no inline script
            assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
            assert shown.headers["x-frame-options"] == "DENY" and shown.headers["cache-control"] == "no-store"
            assert "opensesame" not in shown.text

        # ?q= hides rows on the server by the page's own rule: every word must appear in the row.
        def shown_tools(html: str) -> list[str]:
            rows = re.findall(r'<tr class="item" data-search="[^"]*" *(hidden)?>\s*<td><code>([^<]+)</code>', html)
            return sorted(name for hidden, name in rows if not hidden)

        signed_in = {"agentplex-admin": cookie}
        assert shown_tools((await admin.get("/ui/catalog?q=Echo+TEXT", cookies=signed_in)).text) == ["echo"]
        assert shown_tools((await admin.get("/ui/catalog?q=echo+nowhere", cookies=signed_in)).text) == []
        assert len(shown_tools((await admin.get("/ui/catalog", cookies=signed_in)).text)) > 5
        other_site = await admin.post(
            "/ui/login", data={"token": "opensesame"}, headers={"origin": "http://evil.example"}
        )
        assert other_site.status_code == 403


async def test_call_names_a_target_it_could_not_list_and_a_tool_that_asks_back_gets_a_clear_no(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    path = tmp_path / "gw.yaml"
    path.write_text(two_targets(dead, extra="\n  failureMode: failOpen"))
    async with running(path) as (_, admin):
        # No client has listed yet: the tool might be web's, so the answer names web rather than "unknown tool".
        down = await admin.post("/call", json={"route": "mcp", "tool": "web_add", "arguments": {"a": 1, "b": 2}})
        assert down.status_code == 502 and down.json()["error"] == "call_failed"
        assert down.json()["error_description"].startswith("target 'web' could not list its tools")
        page = await admin.get("/ui/playground")
        assert "Tools missing from this list: route mcp, target web" in page.text
        # A tool that asks its client for a sampling mid-call: the operator's call has no client to ask.
        asked = await admin.post("/call", json={"route": "mcp", "tool": "one_sample_any_era", "arguments": {"prompt": "x"}})
        assert asked.status_code == 502
        assert asked.json()["error_description"].startswith("target 'one' asked for sampling, but this call has no client")


async def test_a_ui_sign_in_ends_when_the_admin_token_changes(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    text = "config: {adminAddr: 127.0.0.1:0, adminToken: TOKEN}\nmcp:\n  port: 0\n  targets:" + stdio_target("one") + "\n"
    path.write_text(text.replace("TOKEN", "first-token"))
    async with running(path) as (_, admin):
        signed = await admin.post("/ui/login", data={"token": "first-token"})
        assert "max-age=43200" in signed.headers["set-cookie"].lower()
        cookie = {"agentplex-admin": signed.cookies["agentplex-admin"]}
        assert (await admin.get("/stats", cookies=cookie)).status_code == 200
        path.write_text(text.replace("TOKEN", "second-token"))
        assert (await admin.post("/reload", headers={"authorization": "Bearer first-token"})).status_code == 200
        assert (await admin.get("/stats", cookies=cookie)).status_code == 401
