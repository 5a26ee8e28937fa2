"""The `agentplex` command as a user runs it: a real process, real signals, real children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.conftest import ROOT, free_port, stdio_target, stop, wait_for_port

AGENTPLEX = str(Path(sys.executable).with_name("agentplex"))


def write_config(tmp_path: Path, port: int = 0) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(f"mcp:\n  port: {port}\n  targets:{stdio_target('one')}{stdio_target('two')}\n")
    return path


def children(pid: int) -> set[int]:
    """Direct children of a process, from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_validate_accepts_a_good_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENTPLEX, "validate", "-f", str(write_config(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ok (1 bind(s), 1 MCP route(s), 2 target(s))" in result.stdout


def test_validate_rejects_a_bad_file_with_key_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcp:\n  port: 3000\n  prefixMode: sometimes\n  targets:\n  - name: x\n    stdioo: {cmd: y}\n")
    result = subprocess.run([AGENTPLEX, "validate", "-f", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{bad}: mcp.prefixMode: invalid value 'sometimes'" in result.stderr
    assert f"{bad}: mcp.targets[0].stdioo: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_a_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENTPLEX, "validate", "-f", str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "cannot read config" in result.stderr


def test_validate_catalog_lists_what_each_route_would_serve_and_names_a_failing_target(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"mcp:\n  port: 0\n  targets:{stdio_target('one')}\n  - name: broken\n    stdio: {{cmd: /nonexistent/server}}\n"
    )
    result = subprocess.run(
        [AGENTPLEX, "validate", "-f", str(path), "--catalog"], capture_output=True, text=True, timeout=120
    )
    out = result.stdout
    assert result.returncode == 1, result.stderr
    assert "ok (1 bind(s), 1 MCP route(s), 2 target(s))" in out
    assert "route mcp:" in out
    assert "    tool one_echo (from echo): Echo text back, prefixed with the server name" in out
    assert "    prompt one_greet (from greet)" in out
    assert "    resource one+mem://static (from mem://static)" in out
    assert "    resource template one+mem://item/{id} (from mem://item/{id})" in out
    assert "  target broken [stdio] /nonexistent/server: FAILED: " in out and "No such file" in out
    assert "Traceback" not in result.stderr


def test_validate_catalog_succeeds_when_every_target_lists(tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENTPLEX, "validate", "-f", str(write_config(tmp_path)), "--catalog"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tool one_whoami (from whoami)" in result.stdout and "tool two_whoami (from whoami)" in result.stdout
    assert "FAILED" not in result.stdout


def test_run_logs_a_startup_summary_and_a_clear_line_per_target_that_fails(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"config: {{adminAddr: 127.0.0.1:0}}\nmcp:\n  port: {port}\n  targets:{stdio_target('one')}\n"
        "  - name: broken\n    stdio: {cmd: /nonexistent/server}\n"
    )
    log_path = tmp_path / "log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([AGENTPLEX, "run", "-f", str(path)], cwd=ROOT, stderr=log_file)
        try:
            wait_for_port(port, proc)
            deadline = time.monotonic() + 20
            while "failed to start" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop(proc)
    log = log_path.read_text()
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "  route mcp: path /mcp" in log
    assert "    target one [stdio]" in log and "--name one --transport stdio: up" in log
    assert "    target broken [stdio] /nonexistent/server: DOWN (" in log
    assert "WARNING agentplex: target broken of route mcp failed to start: " in log
    assert "failClosed: the route refuses new sessions until it is up" in log
    assert "admin API on http://127.0.0.1:" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("form", [["run", "-f"], ["-f"]])
def test_run_serves_and_shuts_down_leaving_no_child(tmp_path: Path, sig: signal.Signals, form: list[str]) -> None:
    port = free_port()
    config = write_config(tmp_path)
    proc = subprocess.Popen([AGENTPLEX, *form, str(config), "--port", str(port)], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)

        async def use() -> list[str]:
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy", cache=None) as client:
                return sorted(t.name for t in (await client.list_tools()).tools)

        tools = anyio.run(use)
        assert "one_whoami" in tools and "two_whoami" in tools
        kids = children(proc.pid)
        assert len(kids) >= 2  # one process per stdio target
        proc.send_signal(sig)
        assert proc.wait(20) == 0
        deadline = time.monotonic() + 10
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(k) for k in kids)
        log = proc.stderr.read().decode() if proc.stderr else ""
        assert "target one [stdio]" in log and "shutting down" in log
    finally:
        stop(proc)


def test_port_flag_needs_a_single_bind(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(
        f"mcp:\n  port: 0\n  targets:{stdio_target('a')}\n"
        "binds:\n- port: 0\n  listeners:\n  - routes:\n    - backends:\n      - mcp:\n          targets:"
        + stdio_target("b").replace("\n  ", "\n          ")
        + "\n"
    )
    result = subprocess.run([AGENTPLEX, "run", "-f", str(config), "--port", "1234"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "--port/--address need a config with exactly one bind, not 2" in result.stderr


async def stdio_session(*command: str) -> tuple[list[str], str]:
    params = StdioServerParameters(command=command[0], args=list(command[1:]), cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        whoami = next(t for t in tools if t.endswith("whoami"))
        return tools, (await session.call_tool(whoami, {})).content[0].text


def upstream_pids(marker: str) -> set[int]:
    """This test's stdio upstreams: they carry `--port <marker>` (ignored by the stdio transport), so
    upstreams of other suites running on the machine at the same time are not counted."""
    pattern = f"tests.fixtures.upstream --name .* --transport stdio --port {marker}$"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_stdio_front_end_serves_the_federation_and_leaves_no_child(tmp_path: Path) -> None:
    marker = str(20000 + os.getpid() % 40000)
    config = tmp_path / "gw.yaml"
    config.write_text(f"mcp:\n  port: 0\n  targets:{stdio_target('one', '--port', marker)}{stdio_target('two', '--port', marker)}\n")
    seen: set[int] = set()

    async def session() -> tuple[list[str], str]:
        params = StdioServerParameters(command=AGENTPLEX, args=["stdio", "-f", str(config)], cwd=str(ROOT))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            seen.update(upstream_pids(marker))  # the upstreams run now
            return tools, (await client.call_tool("one_whoami", {})).content[0].text  # type: ignore[union-attr]

    tools, answer = anyio.run(session)
    assert {"one_whoami", "two_whoami"} <= set(tools)
    assert answer == "one"
    assert len(seen) >= 2  # each target: its catalog connection and this session's own
    deadline = time.monotonic() + 10
    while upstream_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not upstream_pids(marker)


def test_stdio_needs_a_route_when_there_are_several(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(
        "binds:\n- port: 0\n  listeners:\n  - routes:\n"
        + "".join(
            f"    - name: r{i}\n      matches: [{{ path: {{ exact: /r{i} }} }}]\n      backends:\n      - mcp:\n"
            f"          targets:{stdio_target(f't{i}').replace(chr(10) + '  ', chr(10) + '          ')}\n"
            for i in (1, 2)
        )
    )
    result = subprocess.run([AGENTPLEX, "stdio", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "choose a route with --route (one of: r1, r2)" in result.stderr
    _, answer = anyio.run(stdio_session, AGENTPLEX, "stdio", "-f", str(config), "--route", "r2")
    assert answer == "t2"


def test_wrap_serves_a_stdio_server_over_http_and_sse_and_connect_reaches_it() -> None:
    port = free_port()
    server = [sys.executable, "-m", "tests.fixtures.upstream", "--name", "wrapped", "--transport", "stdio"]
    proc = subprocess.Popen([AGENTPLEX, "wrap", "--port", str(port), "--", *server], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        for url in (f"http://127.0.0.1:{port}/mcp", f"http://127.0.0.1:{port}/sse"):
            tools, answer = anyio.run(stdio_session, AGENTPLEX, "connect", url, "--header", "X-Demo: 1")
            assert "echo" in tools and answer == "wrapped"  # one target: names are not prefixed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        stop(proc)


@pytest.mark.parametrize("shared", [False, True])
def test_wrap_runs_a_process_per_session_unless_shared(shared: bool) -> None:
    port = free_port()
    server = [sys.executable, "-m", "tests.fixtures.upstream", "--name", "w", "--transport", "stdio"]
    flags = ["--shared"] if shared else []
    proc = subprocess.Popen([AGENTPLEX, "wrap", "--port", str(port), *flags, "--", *server], cwd=ROOT)

    async def two_sessions() -> tuple[int, int]:
        url = f"http://127.0.0.1:{port}/mcp"
        async with Client(url, mode="legacy", cache=None) as a, Client(url, mode="legacy", cache=None) as b:
            pa = (await a.call_tool("pid", {})).structured_content["result"]
            pb = (await b.call_tool("pid", {})).structured_content["result"]
            return pa, pb

    try:
        wait_for_port(port, proc)
        first, second = anyio.run(two_sessions)
        assert (first == second) is shared
    finally:
        stop(proc)


def test_wrap_without_a_command_is_a_clear_error() -> None:
    result = subprocess.run([AGENTPLEX, "wrap", "--port", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "give the server's command after --" in result.stderr


def test_port_override_moves_mcp_and_a2a_blocks_that_share_a_bind() -> None:
    import argparse

    from gateway.cli import _override
    from gateway.config import ConfigError, parse_config

    shared = "mcp: {port: 3000, targets: [{name: a, stdio: {cmd: x}}]}\na2a: {port: 3000, agents: []}\n"
    config = _override(parse_config(shared, "x.yaml"), argparse.Namespace(port=4555, address="127.0.0.2"))
    assert config.mcp is not None and config.a2a is not None
    assert (config.mcp.port, config.a2a.port, config.a2a.address) == (4555, 4555, "127.0.0.2")
    apart = shared.replace("a2a: {port: 3000", "a2a: {port: 3001")
    with pytest.raises(ConfigError, match="exactly one bind, not 2"):
        _override(parse_config(apart, "x.yaml"), argparse.Namespace(port=4555, address=None))


def listening_ports(pid: int) -> set[int]:
    """The TCP ports this process (not others on the machine) listens on: its socket inodes in /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def start_wrap(tmp_path: Path, port: int, *flags: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`wrap` with our test upstream; returns once its start-up summary is logged (every socket open)."""
    server = [sys.executable, "-m", "tests.fixtures.upstream", "--name", "w", "--transport", "stdio"]
    log = tmp_path / f"wrap-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "wrap", "--port", str(port), *flags, "--", *server],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=out,
        )
    deadline = time.monotonic() + 30
    while "listening on" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "listening on" in log.read_text(), log.read_text()
    return proc, log


def test_wrap_serves_only_its_port_unless_asked_for_the_admin_api_and_metrics(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    plain, plain_log = start_wrap(tmp_path, port)
    second, _ = start_wrap(tmp_path, other)  # a second wrap on the machine does not collide with the first
    try:
        assert listening_ports(plain.pid) == {port}
        assert listening_ports(second.pid) == {other}
        assert "admin API" not in plain_log.read_text()
    finally:
        stop(plain)
        stop(second)
    asked, log = start_wrap(tmp_path, port, "--admin-addr", "127.0.0.1:0", "--stats-addr", "127.0.0.1:0")
    try:
        extra = listening_ports(asked.pid) - {port}
        assert len(extra) == 2  # the admin API and /metrics, on the ports the system chose
        admin = int(log.read_text().split("admin API on http://127.0.0.1:")[1].split()[0])
        assert admin in extra
        metrics = (extra - {admin}).pop()
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{admin}/healthz").status_code == 200
            assert "agentplex_" in client.get(f"http://127.0.0.1:{metrics}/metrics").text
    finally:
        stop(asked)


def test_wrap_refuses_an_admin_address_off_loopback_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "wrap", "--admin-addr", "0.0.0.0:0", "--", "true"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "wrap: --admin-addr: the admin API on 0.0.0.0:0 would be reachable from other machines" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["run", "stdio", "wrap"])
def test_sigterm_during_start_up_stops_at_once_leaving_no_child(tmp_path: Path, command: str) -> None:
    """A target that never answers its handshake holds start-up for the target timeout (30 s);
    SIGTERM must not wait for it, whether the gateway serves HTTP (run, wrap) or stdio (stdio, connect)."""
    marker = f"hang-{os.getpid()}-{time.monotonic_ns()}"
    hang = "import time; time.sleep(600)"
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"config: {{adminAddr: null, statsAddr: null}}\nmcp:\n  port: 0\n  targets:\n"
        f'  - name: mute\n    stdio: {{ cmd: "{sys.executable}", args: ["-c", "{hang}", "{marker}"] }}\n'
    )
    argv = {
        "run": ["run", "-f", str(config)],
        "stdio": ["stdio", "-f", str(config)],
        "wrap": ["wrap", "--port", "0", "--", "sh", str(tmp_path / "hang.sh")],  # the marker not in wrap's argv
    }[command]
    (tmp_path / "hang.sh").write_text(f'exec "{sys.executable}" -c "{hang}" "{marker}"\n')

    def hung() -> set[int]:
        out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
        return {int(p) for p in out.split()}

    log = tmp_path / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,  # held open: stdio serves until it closes
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 20
        while not hung() and time.monotonic() < deadline:  # start-up is under way: the target runs
            time.sleep(0.05)
        assert hung(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(8) == 0, log.read_text()  # not the 30 s the target's handshake may take
        deadline = time.monotonic() + 5
        while hung() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not hung()
    finally:
        stop(proc)
        for pid in hung():  # this test's own, by its marker: never left running when the test fails
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text, text
    if command != "stdio":
        assert "shutting down" in text and "agentplex stopped" in text
