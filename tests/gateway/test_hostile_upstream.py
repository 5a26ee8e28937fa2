"""Upstreams that misbehave within the rules: the gateway process keeps serving everyone and stops on SIGTERM.

The gateway runs as a real `agentplex run` process, so a frozen event loop shows as unanswered probes and an
ignored SIGTERM rather than as a hung test.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from tests.conftest import PY, ROOT, free_port, stop, wait_for_port

AGENTPLEX = str(Path(sys.executable).with_name("agentplex"))


def closing_upstream(port: int, framing: str = "length") -> subprocess.Popen[bytes]:
    command = [PY, "-m", "tests.fixtures.misbehaving_upstream", "--port", str(port), "--close", "--framing", framing]
    return subprocess.Popen(command, cwd=ROOT)


def gateway(
    tmp_path: Path, target_port: int, mode: str, procs: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`agentplex run` with one HTTP target; returns the process, its MCP port and its admin port."""
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"config: {{adminAddr: 127.0.0.1:{admin}, statsAddr: null}}\n"
        f"mcp:\n  port: {port}\n  failureMode: {mode}\n  targets:\n"
        f"  - name: shut\n    mcp: {{ host: http://127.0.0.1:{target_port}/mcp }}\n"
    )
    proc = subprocess.Popen([AGENTPLEX, "run", "-f", str(config)], cwd=ROOT)
    procs.append(proc)
    wait_for_port(port, proc)
    wait_for_port(admin, proc)
    return proc, port, admin


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()  # a frozen gateway ignores SIGTERM
        proc.wait(10)


def serves(port: int, admin: int) -> str:
    """A tools/call through the gateway and its /healthz, each bounded: a frozen gateway fails here."""

    async def use() -> str:
        with anyio.fail_after(15):
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy", cache=None) as client:
                result = await client.call_tool("whoami", {})
                await client.call_tool("whoami", {})  # again: the connection that closed is not reused
            async with httpx.AsyncClient(timeout=5) as http:
                assert (await http.get(f"http://127.0.0.1:{admin}/healthz")).status_code == 200
            return result.content[0].text

    return anyio.run(use)


def stops_on_sigterm(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


@pytest.mark.parametrize("framing", ["length", "close"])
def test_an_upstream_that_closes_after_each_response_at_start_up(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], framing: str
) -> None:
    target = free_port()
    procs.append(upstream := closing_upstream(target, framing))
    wait_for_port(target, upstream)
    proc, port, admin = gateway(tmp_path, target, "failClosed", procs)
    assert serves(port, admin) == "odd"
    stops_on_sigterm(proc)


def test_a_fail_open_target_that_comes_back_closing_after_each_response(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    target = free_port()
    proc, port, admin = gateway(tmp_path, target, "failOpen", procs)  # the target is down at start-up
    procs.append(upstream := closing_upstream(target))
    wait_for_port(target, upstream)
    anyio.run(anyio.sleep, 1.1)  # past the first reconnection back-off
    assert serves(port, admin) == "odd"
    stops_on_sigterm(proc)
    stop(upstream)


def test_sigterm_as_the_uvicorn_upstream_dies_stops_the_gateway(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    target = free_port()
    command = [PY, "-m", "tests.fixtures.upstream", "--name", "shut", "--transport", "http", "--port", str(target)]
    procs.append(upstream := subprocess.Popen(command, cwd=ROOT))
    wait_for_port(target, upstream)
    proc, port, _ = gateway(tmp_path, target, "failClosed", procs)

    async def use_then_stop() -> None:
        with anyio.fail_after(15):
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy", cache=None) as client:
                assert (await client.call_tool("whoami", {})).content[0].text == "shut"
                upstream.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)

    anyio.run(use_then_stop)
    assert proc.wait(15) == 0


def test_a_restarted_target_is_reported_down_until_used_then_serves(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The restarted server no longer knows the gateway's session: that is a dead connection, not 'up'."""
    target = free_port()
    command = [PY, "-m", "tests.fixtures.upstream", "--name", "shut", "--transport", "http", "--port", str(target)]
    procs.append(upstream := subprocess.Popen(command, cwd=ROOT))
    wait_for_port(target, upstream)
    proc, port, admin = gateway(tmp_path, target, "failClosed", procs)

    def health() -> str:
        (route,) = httpx.get(f"http://127.0.0.1:{admin}/targets", timeout=5).json()["routes"]
        return route["targets"][0]["health"]

    assert health() == "up"
    stop(upstream)
    procs.append(upstream := subprocess.Popen(command, cwd=ROOT))
    wait_for_port(target, upstream)
    for _ in range(30):  # the gateway's event stream to the target reconnects within a second or two
        if health() == "down":
            break
        anyio.run(anyio.sleep, 0.5)
    assert health() == "down"
    assert serves(port, admin) == "shut"
    assert httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=10).status_code == 200  # its probe reconnects
    assert health() == "up"
    stops_on_sigterm(proc)
