"""AI route overhead: a streamed chat completion from a fake OpenAI provider, directly and through the gateway.

Run from the repo root with the project's interpreter: `python bench/llm_bench.py [--quick]`.
The gateway serves an `llm:` block with one OpenAI model (passthrough: the stream is relayed as it comes,
its usage counted on the way). The provider answers every request at once with 12 SSE chunks
(role, 10 content pieces, finish) and `data: [DONE]`. Figures: time to first token (the first content
chunk) and to the end of the stream, p50/p99, sequentially on one keep-alive connection; streamed
completions per second with 8 concurrent callers; the gateway's CPU per completion.
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
from bench import HOST, REPO, agentplex_script, closed_loop, free_port, percentile, start, stop

REQUEST = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}
GATEWAY = """llm:
  port: {port}
  models:
  - name: bench
    provider: openAI
    params: {{model: bench-upstream, apiKey: sk-bench, baseUrl: "http://{host}:{upstream}/v1"}}
"""


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": "bench-upstream",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


STREAM = [_chunk({"role": "assistant", "content": ""})]
STREAM += [_chunk({"content": f"word{i} "}) for i in range(10)]
STREAM += [_chunk({}, "stop"), b"data: [DONE]\n\n"]


async def provider(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The fake provider: raw ASGI, the same stream to every request (its body is read and ignored)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()  # type: ignore[operator]
        more = message.get("more_body", False)
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    for piece in STREAM:
        await send({"type": "http.response.body", "body": piece, "more_body": True})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]


def serve_provider(port: int) -> None:
    import uvicorn

    uvicorn.run(provider, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")


async def completion(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """(ms to the first content chunk, ms to the end of the stream)."""
    begin = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=REQUEST) as answer:
        answer.raise_for_status()
        async for line in answer.aiter_lines():
            if first is None and '"content":"word' in line:
                first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise SystemExit(f"no content from {url}")
    return (first - begin) * 1000, (end - begin) * 1000


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                await completion(client, url)
                return
            except (httpx.HTTPError, SystemExit):
                await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


async def latency(url: str, count: int, warmup: int) -> dict[str, float]:
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(warmup):
            await completion(client, url)
        firsts, totals = [], []
        for _ in range(count):
            first, total = await completion(client, url)
            firsts.append(first)
            totals.append(total)
    return {"ttft_p50_ms": percentile(firsts, 0.5), "ttft_p99_ms": percentile(firsts, 0.99),
            "total_p50_ms": percentile(totals, 0.5), "total_p99_ms": percentile(totals, 0.99)}


async def throughput(url: str, callers: int, seconds: float, pid: int | None) -> tuple[float, float | None]:
    """(completions/s, gateway CPU ms per completion)."""
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as client:
        await asyncio.gather(*(completion(client, url) for _ in range(callers)))

        return await closed_loop(lambda: completion(client, url), callers, seconds, pid)


async def measure(quick: bool) -> dict[str, object]:
    count, warmup, seconds, callers = (300, 50, 2.0, 8) if quick else (2000, 200, 5.0, 8)
    with tempfile.TemporaryDirectory(prefix="agentplex-llm-bench-") as tmp:
        work = Path(tmp)
        up_port, gw_port = free_port(), free_port()
        up = start([sys.executable, __file__, "--serve-provider", str(up_port)], work / "provider.log")
        config = work / "gateway.yaml"
        config.write_text(GATEWAY.format(port=gw_port, host=HOST, upstream=up_port))
        gw = start([agentplex_script(), "run", "-f", str(config)], work / "gateway.log")
        try:
            direct = f"http://{HOST}:{up_port}/v1/chat/completions"
            through = f"http://{HOST}:{gw_port}/v1/chat/completions"
            await wait_ready(direct)
            await wait_ready(through)
            result: dict[str, object] = {"completions": count, "callers": callers, "seconds": seconds}
            for name, url, pid in (("direct", direct, None), ("gateway", through, gw.pid)):
                figures = await latency(url, count, warmup)
                rps, cpu = await throughput(url, callers, seconds, pid)
                result[name] = {**figures, "completions_per_s": rps, "gateway_cpu_ms_per_completion": cpu}
            return result
        finally:
            stop(gw)
            stop(up)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer completions, shorter phases")
    parser.add_argument("--serve-provider", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_provider:
        serve_provider(args.serve_provider)
        return
    result = asyncio.run(measure(args.quick))
    d, g = result["direct"], result["gateway"]
    assert isinstance(d, dict) and isinstance(g, dict)
    print(f"{'':28}{'direct':>12}{'gateway':>12}{'added':>12}")
    for key, label in (("ttft_p50_ms", "first token p50 (ms)"), ("ttft_p99_ms", "first token p99 (ms)"),
                       ("total_p50_ms", "whole stream p50 (ms)"), ("total_p99_ms", "whole stream p99 (ms)")):
        print(f"{label:28}{d[key]:12.3f}{g[key]:12.3f}{g[key] - d[key]:+12.3f}")
    callers = result["callers"]
    ratio = g["completions_per_s"] / d["completions_per_s"]
    print(f"{f'completions/s ({callers} callers)':28}{d['completions_per_s']:12.0f}{g['completions_per_s']:12.0f}"
          f"{ratio:11.2f}x")
    print(f"{'gateway CPU ms/completion':28}{'':12}{g['gateway_cpu_ms_per_completion']:12.3f}")
    out = REPO / "bench" / "results" / f"llm-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
