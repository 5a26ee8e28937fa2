"""Hot reload and graceful shutdown: the config file is rewritten under live sessions and streams."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, types
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.config import ConfigError, load_config
from gateway.runtime import Runtime
from tests.conftest import ROOT, free_port, started, stdio_target, stop, wait_for_port
from tests.fixtures.a2a_agent import Recorder, echo_agent, serve
from tests.gateway.test_cli import AGENTPLEX, alive, children

pytestmark = pytest.mark.anyio


def backend_app(release: anyio.Event) -> Recorder:
    """`/api/events`: one SSE event, then the second after `release`; `/api/slow`: answers after 1.5 s."""

    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await release.wait()
            yield b"data: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def slow(request: Request) -> JSONResponse:
        await anyio.sleep(1.5)
        return JSONResponse({"slow": "done"})

    async def other(request: Request) -> JSONResponse:
        return JSONResponse({"path": request.url.path})

    return Recorder(
        Starlette(routes=[Route("/api/events", events), Route("/api/slow", slow), Route("/{p:path}", other)])
    )


def config_text(backend: str, *, mcp_policies: str = "{}", http_policies: str = "{}", extra_target: str = "") -> str:
    return f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: tools
      matches: [{{path: {{pathPrefix: /mcp}}}}]
      policies: {mcp_policies}
      backends:
      - mcp:
          targets:{stdio_target("alpha").replace(chr(10) + "  ", chr(10) + "          ")}{extra_target}
    - name: api
      matches: [{{path: {{pathPrefix: /api}}}}]
      policies: {http_policies}
      backends: [{{host: "{backend}"}}]
"""


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Runtime]:
    async with started(Runtime(load_config(path), lambda: load_config(path), poll=0.1)) as runtime:
        yield runtime


async def until(condition: object, seconds: float = 15) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.05)


def port_of(runtime: Runtime) -> int:
    return next(iter(runtime.sockets.values())).bind.bound_port


async def test_reload_keeps_sessions_and_streams_and_applies_the_new_policies(tmp_path: Path) -> None:
    release = anyio.Event()
    async with serve(lambda base: backend_app(release)) as backend:
        host = backend.url.removeprefix("http://")
        path = tmp_path / "gw.yaml"
        path.write_text(config_text(host))
        async with running(path) as runtime, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{port_of(runtime)}"
            changed = anyio.Event()

            async def on_message(message: object) -> None:
                if isinstance(message, types.ToolListChangedNotification):
                    changed.set()

            async with Client(f"{base}/mcp", mode="legacy", cache=None, message_handler=on_message) as client:
                pid = (await client.call_tool("pid", {})).structured_content
                assert "add" in {t.name for t in (await client.list_tools()).tools}
                async with http.stream("GET", f"{base}/api/events") as stream:
                    lines = stream.aiter_lines()
                    assert await anext(lines) == "data: first"

                    path.write_text(
                        config_text(
                            host,
                            mcp_policies="{mcpAuthorization: {rules: ['mcp.tool.name != \"add\"']}}",
                            http_policies="{responseHeaderModifier: {set: {x-generation: two}}}",
                        )
                    )
                    await until(lambda: runtime.generation == 2)
                    with anyio.fail_after(10):  # its tools may have changed: the client is told so
                        await changed.wait()

                    # The live session: same upstream process, the new rule already applies to it.
                    assert (await client.call_tool("pid", {})).structured_content == pid
                    assert "add" not in {t.name for t in (await client.list_tools()).tools}
                    # The stream opened before the reload goes on.
                    release.set()
                    assert [line async for line in lines if line] == ["data: second"]
            answer = await http.get(f"{base}/api/x")
            assert answer.status_code == 200 and answer.headers["x-generation"] == "two"
            assert port_of(runtime) == int(base.rsplit(":", 1)[1])  # the same socket


async def test_an_invalid_file_is_rejected_and_the_running_config_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentplex")
    async with serve(lambda base: backend_app(anyio.Event())) as backend:
        host = backend.url.removeprefix("http://")
        path = tmp_path / "gw.yaml"
        path.write_text(config_text(host))
        async with running(path) as runtime, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{port_of(runtime)}"
            async with Client(f"{base}/mcp", mode="legacy", cache=None) as client:
                path.write_text(config_text(host).replace("pathPrefix: /api", "pathPrefx: /api"))
                with pytest.raises(ConfigError) as invalid:
                    load_config(path)
                await until(lambda: "still serving the previous config" in caplog.text)
                for problem in invalid.value.problems:  # the same words as `agentplex validate`
                    assert f"reload rejected: {problem}" in caplog.text
                assert runtime.generation == 1
                assert (await client.call_tool("echo", {"text": "hi"})).content[0].text == "alpha: hi"  # type: ignore[union-attr]
                assert (await http.get(f"{base}/api/x")).status_code == 200

                path.write_text(config_text(host, http_policies="{directResponse: {status: 203, body: fixed}}"))
                await until(lambda: runtime.generation == 2)
                answer = await http.get(f"{base}/api/x")
                assert (answer.status_code, answer.text) == (203, "fixed")
                assert (await client.call_tool("echo", {"text": "hi"})).content[0].text == "alpha: hi"  # type: ignore[union-attr]


async def test_a_changed_backend_serves_new_sessions_and_keeps_the_old_ones(tmp_path: Path) -> None:
    """Adding a target builds the route anew; sessions opened before go on where they live (with the
    new rules) until they end, then their upstream processes end too."""
    async with serve(lambda base: backend_app(anyio.Event())) as backend:
        host = backend.url.removeprefix("http://")
        path = tmp_path / "gw.yaml"
        path.write_text(config_text(host))
        async with running(path) as runtime:
            url = f"http://127.0.0.1:{port_of(runtime)}/mcp"
            async with Client(url, mode="legacy", cache=None) as old:
                pid = (await old.call_tool("pid", {})).structured_content["result"]  # type: ignore[index]
                beta = stdio_target("beta").replace("\n  ", "\n          ")
                rule = "{mcpAuthorization: {rules: ['mcp.tool.name != \"add\" && mcp.tool.name != \"alpha_add\"']}}"
                path.write_text(config_text(host, extra_target=beta, mcp_policies=rule))
                await until(lambda: runtime.generation == 2)
                async with Client(url, mode="legacy", cache=None) as new:
                    names = {t.name for t in (await new.list_tools()).tools}
                    assert {"alpha_echo", "beta_echo"} <= names and "alpha_add" not in names
                # The old session still works, on its own upstream process, under the new rules.
                assert (await old.call_tool("pid", {})).structured_content["result"] == pid  # type: ignore[index]
                assert (await old.call_tool("echo", {"text": "hi"})).content[0].text == "alpha: hi"  # type: ignore[union-attr]
                assert "add" not in {t.name for t in (await old.list_tools()).tools}
                assert len(runtime.gateway.draining) == 1  # the old route's endpoint, kept for this session
            with anyio.fail_after(15):  # the session ended: its endpoint and process are let go
                while alive(pid) or runtime.gateway.draining:
                    await anyio.sleep(0.1)


async def test_sigterm_drains_requests_in_flight_then_exits(tmp_path: Path) -> None:
    """A request in flight when SIGTERM comes still gets its answer; new connections are refused;
    an MCP client holding its event stream open does not hold up the exit; stdio children end."""
    if True:
        async with serve(lambda base: backend_app(anyio.Event())) as backend:
            path = tmp_path / "gw.yaml"
            port = free_port()
            path.write_text(
                config_text(backend.url.removeprefix("http://")).replace("port: 0", f"port: {port}")
                + "config: {connectionTerminationDeadline: 20s}\n"
            )
            proc = subprocess.Popen([AGENTPLEX, "run", "-f", str(path)], cwd=ROOT, stderr=subprocess.PIPE)
            try:
                await anyio.to_thread.run_sync(wait_for_port, port, proc)
                base = f"http://127.0.0.1:{port}"
                async with Client(f"{base}/mcp", mode="legacy", cache=None) as client, httpx.AsyncClient(
                    timeout=20
                ) as http:
                    await client.list_tools()  # the session's GET stream is open now
                    kids = children(proc.pid)
                    assert kids
                    async with anyio.create_task_group() as tg:
                        answers: list[httpx.Response] = []

                        async def slow() -> None:
                            answers.append(await http.get(f"{base}/api/slow"))

                        tg.start_soon(slow)
                        await anyio.sleep(0.5)
                        sent = time.monotonic()
                        proc.send_signal(signal.SIGTERM)
                        await anyio.sleep(0.5)
                        with pytest.raises(httpx.ConnectError):
                            async with httpx.AsyncClient() as fresh:
                                await fresh.get(f"{base}/api/x")
                    assert answers[0].status_code == 200 and answers[0].json() == {"slow": "done"}
                    code = await anyio.to_thread.run_sync(proc.wait, 15)
                    assert code == 0
                    assert time.monotonic() - sent < 10  # not the 20 s deadline: the stream did not hold it
                    with anyio.fail_after(10):
                        while any(alive(k) for k in kids):
                            await anyio.sleep(0.1)
            finally:
                stop(proc)
            log = proc.stderr.read().decode() if proc.stderr else ""
            assert "shutting down" in log and "Traceback" not in log


async def test_registered_agents_survive_a_reload(tmp_path: Path) -> None:
    """The `a2a:` block's registry is kept across a reload, even with an in-memory store."""
    text = """a2a:
  port: 0
  registry: {sqlite: null, healthInterval: 0}
  registration: {allow: "true", allowNetworks: [127.0.0.0/8]}
  agents: []
  policies: POLICIES
"""
    async with serve(lambda base: echo_agent(base, "Echo")) as echo:
        path = tmp_path / "gw.yaml"
        path.write_text(text.replace("POLICIES", "{}"))
        async with running(path) as runtime, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{port_of(runtime)}/a2a"
            assert (await http.post(f"{base}/agents", json={"name": "echo", "url": echo.url})).status_code == 201
            path.write_text(text.replace("POLICIES", "{responseHeaderModifier: {set: {x-generation: two}}}"))
            await until(lambda: runtime.generation == 2)
            listed = await http.get(f"{base}/agents")
            assert listed.headers["x-generation"] == "two"
            assert [agent["name"] for agent in listed.json()["agents"]] == ["echo"]
            card = await http.get(f"{base}/echo/.well-known/agent-card.json")
            assert card.status_code == 200 and card.json()["name"] == "Echo"


async def test_a_reload_opens_and_closes_binds(tmp_path: Path) -> None:
    extra_port = free_port()
    base_text = """binds:
- port: 0
  listeners:
  - routes:
    - {policies: {directResponse: {body: first}}}
"""
    extra = f"""- port: {extra_port}
  listeners:
  - routes:
    - {{policies: {{directResponse: {{body: second}}}}}}
"""
    path = tmp_path / "gw.yaml"
    path.write_text(base_text)
    async with running(path) as runtime, httpx.AsyncClient(timeout=20) as http:
        first = f"http://127.0.0.1:{port_of(runtime)}/"
        second = f"http://127.0.0.1:{extra_port}/"
        path.write_text(base_text + extra)
        await until(lambda: runtime.generation == 2)
        assert (await http.get(first)).text == "first" and (await http.get(second)).text == "second"
        path.write_text(base_text)
        await until(lambda: runtime.generation == 3)
        assert (await http.get(first)).text == "first"
        with anyio.fail_after(10):  # the dropped bind drains, then stops listening
            while True:
                try:
                    async with httpx.AsyncClient() as fresh:
                        await fresh.get(second)
                except httpx.ConnectError:
                    break
                await anyio.sleep(0.1)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "gw.yaml"
        path.write_text(f"binds:\n- port: {port}\n  listeners:\n  - routes:\n    - {{policies: {{directResponse: {{}}}}}}\n")
        result = subprocess.run([AGENTPLEX, "run", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{path}: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


async def test_accepted_connections_do_not_wait_for_nagle(tmp_path: Path) -> None:
    """The gateway binds its own sockets; asyncio sets TCP_NODELAY on accepted connections only for
    IPPROTO_TCP sockets, and without it every keep-alive answer waited ~40 ms for a delayed ACK."""
    import socket

    path = tmp_path / "gw.yaml"
    path.write_text(
        "config: {adminAddr: 127.0.0.1:0, statsAddr: 127.0.0.1:0}\n"
        "binds:\n- port: 0\n  listeners:\n  - routes:\n    - {policies: {directResponse: {body: x}}}\n"
    )
    async with running(path) as runtime, httpx.AsyncClient(timeout=20) as http:
        answer = await http.get(f"http://127.0.0.1:{port_of(runtime)}/")
        assert answer.text == "x"
        assert (await http.get(f"http://127.0.0.1:{runtime.admin_port}/healthz")).status_code == 200
        assert (await http.get(f"http://127.0.0.1:{runtime.stats_port}/metrics")).status_code == 200
        assert runtime.admin is not None and runtime.stats is not None
        # the gateway's bind, the admin API and the stats address alike
        for server in (next(iter(runtime.sockets.values())).server, runtime.admin.server, runtime.stats._server):
            connections = list(server.server_state.connections)
            assert connections
            for connection in connections:
                sock = connection.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
