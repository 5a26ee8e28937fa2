"""What handshake-era client sessions cost the gateway: RSS, open fds and child processes, before and after
N raw `initialize` requests (no DELETE, like clients that just leave) on a route of 2 stdio + 1 HTTP targets.

Run from a checkout's root with the project's interpreter: `python bench/session_cost.py [--sessions 500]
[--tree PATH] [--option key=value ...]`. `--tree` measures another checkout (its code runs the gateway),
`--option` adds keys to the `mcp:` block (e.g. `maxSessionsPerCaller=1000`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "cost", "version": "0"}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {port}")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(gateway: int, upstream: int) -> dict[str, float]:
    kids = descendants(gateway)
    return {
        "gateway RSS MB": round(rss_mb(gateway), 1),
        "gateway fds": fds(gateway),
        "child processes": len(kids),
        "children RSS MB": round(sum(rss_mb(k) for k in kids if os.path.exists(f"/proc/{k}")), 1),
        "HTTP upstream RSS MB": round(rss_mb(upstream), 1),
        "HTTP upstream fds": fds(upstream),
    }


async def initialize_many(url: str, count: int, concurrency: int) -> tuple[int, dict[int, int], list[float]]:
    """`count` initializes (bounded), `concurrency` at a time: (sessions opened, statuses seen, each one's seconds)."""
    statuses: dict[int, int] = {}
    seconds: list[float] = []
    opened = 0
    queue = iter(range(count))

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal opened
        for _ in queue:
            start = time.perf_counter()
            try:
                response = await http.post(url, json=INIT, headers=HEADERS)
                seconds.append(time.perf_counter() - start)
            except httpx.HTTPError:
                statuses[-1] = statuses.get(-1, 0) + 1
                continue
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.headers.get("mcp-session-id"):
                opened += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return opened, statuses, sorted(seconds)


def config(tree: Path, upstream_url: str, port: int, options: list[str]) -> str:
    stdio = [
        f"""
  - name: {name}
    stdio: {{ cmd: "{sys.executable}", args: ["-m", "tests.fixtures.upstream", "--name", "{name}", "--transport", "stdio"], cwd: "{tree}" }}"""
        for name in ("one", "two")
    ]
    opts = "".join(f"\n  {key}: {value}" for key, value in (o.split("=", 1) for o in options))
    return f"""config: {{ adminAddr: null, statsAddr: null }}
mcp:
  port: {port}{opts}
  targets:{"".join(stdio)}
  - name: web
    mcp: {{ host: "{upstream_url}" }}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose code runs the gateway")
    parser.add_argument("--option", action="append", default=[], help="key=value added to the mcp: block")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait before the last snapshot")
    args = parser.parse_args()
    tree = args.tree.resolve()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.upstream", "--name", "web", "--transport", "http", "--port", str(up_port)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = None
    config_file = None
    try:
        wait_for_port(up_port)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
            file.write(config(tree, f"http://127.0.0.1:{up_port}/mcp", gw_port, args.option))
        config_file = Path(file.name)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-f", file.name, "--log-level", "warning"],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(gw_port)
        time.sleep(2)  # the shared upstreams connect
        before = snapshot(gateway.pid, upstream.pid)
        start = time.perf_counter()
        opened, statuses, seconds = asyncio.run(
            initialize_many(f"http://127.0.0.1:{gw_port}/mcp", args.sessions, args.concurrency)
        )
        elapsed = time.perf_counter() - start
        time.sleep(args.settle)
        after = snapshot(gateway.pid, upstream.pid)
        print(f"tree: {tree}  options: {args.option or 'none'}")
        print(f"{args.sessions} initialize in {elapsed:.1f}s: {opened} sessions opened, HTTP statuses {statuses}")
        if seconds:
            median, p90 = seconds[len(seconds) // 2], seconds[int(len(seconds) * 0.9)]
            print(f"  initialize latency     p50 {median * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms")
        for key in before:
            print(f"  {key:22} {before[key]:>8} -> {after[key]:>8}")
    finally:
        for proc in (gateway, upstream):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if config_file is not None:
            config_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
