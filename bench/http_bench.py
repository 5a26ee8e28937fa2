"""Plain HTTP overhead: GET on a small backend, directly and through a gateway route with two header policies.

Run from the repo root with the project's interpreter: `python bench/http_bench.py [--quick]`.
The route has a requestHeaderModifier and a responseHeaderModifier (what issue 6 asks to measure);
the figures are sequential latency (p50/p99) on one keep-alive connection, requests/s with
concurrent connections, and the gateway's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    HOST,
    REPO,
    agentplex_script,
    closed_loop,
    free_port,
    percentile,
    start,
    stop,
)

BODY = b'{"ok":true,"items":[1,2,3]}'
GATEWAY = """binds:
- port: {port}
  listeners:
  - routes:
    - name: api
      matches: [{{path: {{pathPrefix: /}}}}]
      policies:
        requestHeaderModifier: {{set: {{x-bench: "1"}}, remove: [x-drop]}}
        responseHeaderModifier: {{add: {{x-served-by: agentplex}}}}
      backends: [{{host: "{host}:{upstream}"}}]
"""


async def backend(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The backend: a fixed small JSON answer to every request (raw ASGI: nothing to measure but HTTP)."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": BODY})  # type: ignore[operator]


def serve_backend(port: int) -> None:
    import uvicorn

    uvicorn.run(backend, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


async def latency(url: str, count: int, warmup: int) -> tuple[float, float]:
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(warmup):
            (await client.get(url)).raise_for_status()
        samples = []
        for _ in range(count):
            begin = time.perf_counter()
            answer = await client.get(url)
            samples.append((time.perf_counter() - begin) * 1000)
            if answer.status_code != 200 or answer.content != BODY:
                raise SystemExit(f"unexpected answer from {url}: {answer.status_code} {answer.content[:80]!r}")
    return percentile(samples, 0.5), percentile(samples, 0.99)


async def throughput(url: str, connections: int, seconds: float, pid: int | None) -> tuple[float, float | None]:
    """(requests/s, gateway CPU ms per request)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as client:
        await asyncio.gather(*(client.get(url) for _ in range(connections)))

        async def get() -> None:
            (await client.get(url)).raise_for_status()

        return await closed_loop(get, connections, seconds, pid)


async def measure(quick: bool) -> dict[str, object]:
    count, warmup, seconds, connections = (500, 100, 2.0, 16) if quick else (3000, 300, 5.0, 16)
    with tempfile.TemporaryDirectory(prefix="agentplex-http-bench-") as tmp:
        work = Path(tmp)
        up_port, gw_port = free_port(), free_port()
        up = start([sys.executable, __file__, "--serve-backend", str(up_port)], work / "backend.log")
        config = work / "gateway.yaml"
        config.write_text(GATEWAY.format(port=gw_port, host=HOST, upstream=up_port))
        gw = start([agentplex_script(), "run", "-f", str(config)], work / "gateway.log")
        try:
            direct, through = f"http://{HOST}:{up_port}/api/items", f"http://{HOST}:{gw_port}/api/items"
            await wait_ready(direct)
            await wait_ready(through)
            result: dict[str, object] = {"requests": count, "connections": connections, "seconds": seconds}
            for name, url, pid in (("direct", direct, None), ("gateway", through, gw.pid)):
                p50, p99 = await latency(url, count, warmup)
                rps, cpu = await throughput(url, connections, seconds, pid)
                result[name] = {"p50_ms": p50, "p99_ms": p99, "requests_per_s": rps, "gateway_cpu_ms_per_request": cpu}
            return result
        finally:
            stop(gw)
            stop(up)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter phases")
    parser.add_argument("--serve-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend)
        return
    result = asyncio.run(measure(args.quick))
    d, g = result["direct"], result["gateway"]
    assert isinstance(d, dict) and isinstance(g, dict)
    print(f"{'':24}{'direct':>12}{'gateway':>12}{'added':>12}")
    print(f"{'GET p50 (ms)':24}{d['p50_ms']:12.3f}{g['p50_ms']:12.3f}{g['p50_ms'] - d['p50_ms']:+12.3f}")
    print(f"{'GET p99 (ms)':24}{d['p99_ms']:12.3f}{g['p99_ms']:12.3f}{g['p99_ms'] - d['p99_ms']:+12.3f}")
    conns = result["connections"]
    print(f"{f'requests/s ({conns} conns)':24}{d['requests_per_s']:12.0f}{g['requests_per_s']:12.0f}")
    print(f"{'gateway CPU ms/request':24}{'':12}{g['gateway_cpu_ms_per_request']:12.3f}")
    out = REPO / "bench" / "results" / f"http-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
