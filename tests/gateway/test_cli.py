"""The `agentplex` command as a user runs it: a real process, real signals, real children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

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
