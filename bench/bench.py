"""Per-hop overhead benchmark: one upstream MCP server measured directly and through the agentplex gateway.

Run from the repo root with the project's interpreter: `python bench/bench.py [--quick] [--profile] [--secure] [--no-stdio]`.
`--secure` adds a second gateway with jwtAuth + one mcpAuthorization rule + a per-caller-per-tool
localRateLimit, measured in the same run, so the cost of those policies per call is reported too.
The stdio rows (`--no-stdio` skips them) compare the same server spoken to over stdio directly with a
gateway whose one target runs it over stdio (`sharing: shared`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rawhttp import Connection, HTTPFailure, Reply  # bench/ is the script's directory, so first on sys.path
from session_cost import descendants

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
UPSTREAM_FILE = REPO / "tests" / "fixtures" / "upstream.py"
PROTOCOL = "2025-11-25"
MODERN = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ECHO_BODY = {"name": "echo", "arguments": {"text": "hello"}}
EXPECTED_TEXT = "up: hello"
PHASE_TIME_LIMIT = 60.0  # seconds: hard cap on any sequential phase
MAX_ERRORS = 1000  # a throughput worker stops early once this many errors have been seen in a phase
STDIO_CALLERS = 8  # concurrent callers on the one stdio session (and HTTP sessions on the stdio gateway)
STDIO_LINE_LIMIT = 16 * 1024 * 1024  # bytes of one line from a stdio server


# -- parameters and results -------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """Sizes of the measurement phases."""

    warmup: int
    latency_calls: int
    list_calls: int
    sessions: tuple[int, ...]
    duration: float


FULL = Params(warmup=100, latency_calls=1000, list_calls=300, sessions=(8, 32), duration=5.0)
QUICK = Params(warmup=50, latency_calls=200, list_calls=100, sessions=(8, 32), duration=2.0)


@dataclass
class Side:
    """The figures for one way of reaching the upstream (direct or through the gateway)."""

    url: str
    call_p50_ms: float = math.nan
    call_p99_ms: float = math.nan
    call_mean_ms: float = math.nan
    list_p50_ms: float = math.nan
    throughput: dict[str, float] = field(default_factory=dict)  # sessions -> calls/s
    busy_cpus: dict[str, float] = field(default_factory=dict)  # sessions -> busy CPUs on the machine
    foreign_cpus: dict[str, float] = field(default_factory=dict)  # sessions -> CPUs busy with other work
    throughput_calls: int = 0
    cpu_seconds: Counter[str] = field(default_factory=Counter)  # process -> CPU s over the throughput phases
    errors: Counter[str] = field(default_factory=Counter)
    modern: dict[str, float] = field(default_factory=dict)  # the same figures spoken in 2026-07-28 (no session)


class CallError(Exception):
    """A request that did not produce a successful JSON-RPC result."""


# -- /proc readings -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs, from the first line of /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    values = [int(v) for v in fields[1:9]]  # user .. steal (guest time is already inside user)
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many CPUs were busy on average between two machine_ticks() readings."""
    total = after[1] - before[1]
    return (os.cpu_count() or 1) * (after[0] - before[0]) / total if total else math.nan


def background_load(seconds: float = 1.0) -> float:
    """Busy CPUs on the machine before the benchmark starts anything (other work skews the figures)."""
    before = machine_ticks()
    time.sleep(seconds)
    return busy_cores(before, machine_ticks())


def own_cpu_seconds() -> float:
    """User + system CPU time of this (load generator) process."""
    times = os.times()
    return times.user + times.system


# -- JSON-RPC over streamable HTTP ----------------------------------------------------------


def decode(response: Reply) -> dict[str, Any]:
    """The JSON-RPC response carried by a JSON or SSE response body."""
    if response.status != 200:
        raise CallError(f"http {response.status}")
    body = bytes(response.body)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in body.splitlines():
            if line.startswith(b"data:") and len(line) > 6:
                message = json.loads(line[5:])
                if "result" in message or "error" in message:
                    return message
        raise CallError("no JSON-RPC response in the SSE stream")
    return json.loads(body)


def check(message: dict[str, Any], request_id: int) -> dict[str, Any]:
    """The result of a JSON-RPC response, or CallError if it is an error or a failed tool call."""
    if "error" in message:
        raise CallError(f"rpc error {message['error'].get('code')}")
    if message.get("id") != request_id:
        raise CallError("response id mismatch")
    result = message.get("result")
    if not isinstance(result, dict) or result.get("isError"):
        raise CallError("tool error")
    return result


class Session:
    """One handshake-era MCP session spoken as raw JSON-RPC on a keep-alive connection of its own."""

    def __init__(self, url: str) -> None:
        self.http = Connection(url)
        self.next_id = 0
        self.headers = dict(BASE_HEADERS)

    @classmethod
    def of_era(cls, era: str, url: str) -> Session:
        return ModernCaller(url) if era == MODERN else cls(url)

    async def open(self) -> None:
        """initialize + notifications/initialized; afterwards requests carry the session id."""
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        response = await self.http.request("POST", self.headers, json.dumps(self._message("initialize", params)).encode())
        check(decode(response), self.next_id)
        session_id = response.headers.get("mcp-session-id")
        if not session_id:
            raise CallError("no mcp-session-id header on the initialize response")
        self.headers = {**BASE_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": PROTOCOL}
        notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = await self.http.request("POST", self.headers, json.dumps(notification).encode())
        if response.status not in (200, 202):
            raise CallError(f"http {response.status} on notifications/initialized")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its (checked) result."""
        message = self._message(method, params)
        response = await self.http.request("POST", self.headers, json.dumps(message).encode())
        return check(decode(response), self.next_id)

    async def call_echo(self) -> None:
        """One tools/call of echo, checking the text that comes back."""
        result = await self.request("tools/call", ECHO_BODY)
        content = result.get("content") or [{}]
        if content[0].get("text") != EXPECTED_TEXT:
            raise CallError("unexpected tool result")

    async def close(self) -> None:
        """DELETE the session (best effort) and close the connection."""
        with contextlib.suppress(HTTPFailure):
            await self.http.request("DELETE", self.headers)
        self.http.close()

    def _message(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        return message


class ModernCaller(Session):
    """A 2026-07-28 caller: no handshake and no session; every request says its version, method and name."""

    async def open(self) -> None:
        self.headers = {**BASE_HEADERS, "mcp-protocol-version": MODERN}

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message = self._message(method, {**(params or {}), "_meta": MODERN_META})
        headers = {**self.headers, "mcp-method": method}
        if params and "name" in params:
            headers["mcp-name"] = params["name"]
        response = await self.http.request("POST", headers, json.dumps(message).encode())
        return check(decode(response), self.next_id)

    async def close(self) -> None:
        self.http.close()


class StdioConnection:
    """One handshake-era MCP session with a server subprocess over its stdin/stdout, spoken raw like `Session`
    (one JSON-RPC message per line, no MCP SDK client). Concurrent requests are matched to answers by id."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ended = False  # the server's stdout has ended
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, cmd: list[str], log: Path) -> StdioConnection:
        """Start the server (from the repo root, stderr to a log file) and read its stdout."""
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                cwd=REPO,
                env=child_env(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=STDIO_LINE_LIMIT,
            )
        return cls(proc)

    async def open(self) -> None:
        """initialize + notifications/initialized (once: stdio is one session)."""
        params = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        await self.request("initialize", params)
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def send(self, message: dict[str, Any]) -> None:
        """Write one message as a line."""
        stdin = self.proc.stdin
        if self.ended or stdin is None or stdin.is_closing():
            raise CallError("stdio closed")
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            await stdin.drain()
        except OSError as exc:
            raise CallError(f"stdio write: {exc}") from exc

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its (checked) result."""
        self.next_id += 1
        request_id = self.next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        answer = self.pending[request_id] = asyncio.get_running_loop().create_future()
        try:
            await self.send(message)
            async with asyncio.timeout(10.0):
                return check(await answer, request_id)
        except TimeoutError as exc:
            raise CallError("stdio timeout") from exc
        finally:
            self.pending.pop(request_id, None)

    async def _read(self) -> None:
        """Hand each answer to the request waiting for it; fail every waiting request when stdout ends."""
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                waiting = self.pending.get(message.get("id")) if isinstance(message, dict) else None
                if waiting is not None and not waiting.done() and ("result" in message or "error" in message):
                    waiting.set_result(message)
        finally:
            self.ended = True
            for waiting in self.pending.values():
                if not waiting.done():
                    waiting.set_exception(CallError("stdio closed"))

    async def close(self) -> None:
        """Close stdin (the server exits on EOF); SIGKILL it if it has not exited within 5 s."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class StdioCaller(Session):
    """A caller on the one stdio session: the same checks as `Session`, requests going to a StdioConnection."""

    def __init__(self, connection: StdioConnection) -> None:
        self.connection = connection
        self.next_id = 0
        self.headers = {}

    async def open(self) -> None:
        return None

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.connection.request(method, params)

    async def close(self) -> None:
        return None


# -- measurement phases ---------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of samples (0 < q <= 1)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def timed_sequence(session: Session, call: Callable[[], Any], count: int, errors: Counter[str]) -> list[float]:
    """Latencies (ms) of up to `count` sequential calls, bounded by PHASE_TIME_LIMIT."""
    samples: list[float] = []
    deadline = time.perf_counter() + PHASE_TIME_LIMIT
    for _ in range(count):
        start = time.perf_counter()
        if start > deadline:
            errors["phase time limit"] += 1
            break
        try:
            await call()
        except (CallError, HTTPFailure, ValueError) as exc:
            errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
            continue
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def closed_loop(
    call: Callable[[], Awaitable[Any]], callers: int, seconds: float, pid: int | None
) -> tuple[float, float | None]:
    """`callers` tasks making `call()` back to back for `seconds`: (calls/s, CPU ms per call of process `pid`)."""

    async def caller(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await call()
            done += 1
        return done

    cpu_before = cpu_seconds(pid) if pid else 0.0
    begin = time.perf_counter()
    counts = await asyncio.gather(*(caller(begin + seconds) for _ in range(callers)))
    wall = time.perf_counter() - begin
    cpu = (cpu_seconds(pid) - cpu_before) if pid else None
    total = sum(counts)
    return total / wall, (cpu * 1000 / total if cpu is not None and total else None)


async def measure_latency(
    side: Side,
    params: Params,
    era: str = PROTOCOL,
    new_session: Callable[[], Session] | None = None,
) -> None:
    """Sequential tools/call p50/p99 and tools/list p50 on one session (or one 2026-07-28 caller, or
    `new_session()`'s)."""
    session = new_session() if new_session else Session.of_era(era, side.url)
    await session.open()
    try:
        await timed_sequence(session, session.call_echo, params.warmup, side.errors)
        calls = await timed_sequence(session, session.call_echo, params.latency_calls, side.errors)
        lists = await timed_sequence(session, lambda: session.request("tools/list"), params.list_calls, side.errors)
    finally:
        await session.close()
    p50, p99, list_p50 = percentile(calls, 0.50), percentile(calls, 0.99), percentile(lists, 0.50)
    if era == MODERN:
        side.modern.update(call_p50_ms=p50, call_p99_ms=p99, list_p50_ms=list_p50)
        return
    side.call_p50_ms, side.call_p99_ms, side.list_p50_ms = p50, p99, list_p50
    side.call_mean_ms = sum(calls) / len(calls) if calls else math.nan


async def worker(session: Session, deadline: float, errors: Counter[str]) -> int:
    """Call echo back to back until the deadline; returns the number of successful calls."""
    done = 0
    while time.perf_counter() < deadline and sum(errors.values()) < MAX_ERRORS:
        try:
            await session.call_echo()
            done += 1
        except (CallError, HTTPFailure, ValueError) as exc:
            errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
    return done


async def measure_throughput(
    side: Side,
    n: int,
    duration: float,
    pids: dict[str, int],
    era: str = PROTOCOL,
    new_session: Callable[[], Session] | None = None,
) -> None:
    """calls/s with n concurrent sessions (or `new_session()` callers) for `duration` seconds, plus the CPU
    every process spent meanwhile (2026-07-28 callers: calls/s only, into `side.modern`)."""
    sessions = [new_session() if new_session else Session.of_era(era, side.url) for _ in range(n)]
    await asyncio.gather(*(s.open() for s in sessions))
    try:
        await asyncio.gather(*(s.call_echo() for s in sessions))  # warm every connection
        before = CpuReading.take(pids)
        counts = await asyncio.gather(*(worker(s, before.wall + duration, side.errors) for s in sessions))
        usage = CpuReading.take(pids).since(before)
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    calls = sum(counts)
    if era == MODERN:
        side.modern[f"throughput_{n}"] = calls / usage.wall
        for name, label in (("gateway", "cpu_ms_per_call"), ("upstream", "upstream_cpu_ms_per_call")):
            side.modern[f"{label}_{n}"] = 1000 * usage.seconds.get(name, 0) / calls if calls else math.nan
        return
    side.throughput[str(n)] = calls / usage.wall
    side.busy_cpus[str(n)], side.foreign_cpus[str(n)] = usage.busy_cpus, usage.foreign_cpus
    side.throughput_calls += calls
    side.cpu_seconds.update(usage.seconds)


@dataclass
class CpuUsage:
    """CPU spent between two readings: per process (the load generator included) and machine-wide."""

    wall: float
    seconds: dict[str, float]
    busy_cpus: float
    foreign_cpus: float  # busy CPUs not explained by our processes (other work on the machine)


@dataclass
class CpuReading:
    """CPU counters of our processes and of the machine at one moment."""

    wall: float
    seconds: dict[str, float]
    machine: tuple[int, int]

    @classmethod
    def take(cls, pids: dict[str, int]) -> CpuReading:
        """Read the counters now (`load-gen` is this process)."""
        seconds = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"load-gen": own_cpu_seconds()}
        return cls(time.perf_counter(), seconds, machine_ticks())

    def since(self, before: CpuReading) -> CpuUsage:
        """The usage between an earlier reading and this one."""
        wall = self.wall - before.wall
        seconds = {name: value - before.seconds[name] for name, value in self.seconds.items()}
        busy = busy_cores(before.machine, self.machine)
        return CpuUsage(wall, seconds, busy, max(0.0, busy - sum(seconds.values()) / wall))


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """This environment with the repo root first on PYTHONPATH, so servers run this checkout's code even
    when the venv's editable install (and its `agentplex` script) points at another checkout."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), path] if path else [str(REPO)])}


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server subprocess from the repo root, its output going to a log file."""
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process (by pid), then SIGKILL it if it has not exited within 5 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def log_tail(log: Path, lines: int = 20) -> str:
    """The last lines of a server log, for error messages."""
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until the server's port accepts connections and a tools/list on a fresh session succeeds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}\n{log_tail(log)}")
        session = Session(url)
        try:
            await session.open()
            tools = await session.request("tools/list")
            if any(tool.get("name") == "echo" for tool in tools.get("tools", [])):
                return
            last = CallError(f"no echo tool in {[t.get('name') for t in tools.get('tools', [])]}")
        except (CallError, HTTPFailure, ValueError) as exc:
            last = exc
        finally:
            await session.close()
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {timeout:.0f} s ({last!r})\n{log_tail(log)}")


def agentplex_script() -> str:
    """The `agentplex` console script installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / "agentplex"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("agentplex")
    if found is None:
        raise SystemExit("agentplex is not installed next to this interpreter (pip install -e .)")
    return found


def gateway_config(gateway_port: int, upstream_port: int, policies: str = "", era: str = "") -> str:
    """The gateway config: one streamable-HTTP target, default (conditional) prefixing; `era: modern` makes
    the gateway speak 2026-07-28 to it."""
    return (
        "mcp:\n"
        f"  port: {gateway_port}\n"
        + (f"  policies: {policies}\n" if policies else "")
        + "  targets:\n"
        "  - name: up\n"
        + (f"    era: {era}\n" if era else "")
        + f'    mcp: {{ host: "http://{HOST}:{upstream_port}/mcp" }}\n'
    )


def upstream_cmd(module: str, transport: str, port: int | None = None) -> list[str]:
    """The upstream server's command line (`python -m MODULE --name up --transport T [--port P]`)."""
    cmd = [sys.executable, "-m", module, "--name", "up", "--transport", transport]
    return [*cmd, "--port", str(port)] if port is not None else cmd


def stdio_gateway_config(gateway_port: int, upstream_module: str) -> str:
    """A gateway whose one target runs the upstream over stdio, one process for every client (`shared`)."""
    stdio = {"cmd": sys.executable, "args": upstream_cmd(upstream_module, "stdio")[1:], "cwd": str(REPO)}
    return (
        "mcp:\n"
        f"  port: {gateway_port}\n"
        "  targets:\n"
        "  - name: up\n"
        "    sharing: shared\n"
        f"    stdio: {json.dumps(stdio)}\n"
    )


def secure_policies() -> tuple[str, str]:
    """(policies YAML, bearer token): jwtAuth on an inline RS256 key, one CEL rule, one per-caller-per-tool limit."""
    from joserfc import jwk, jwt

    key = jwk.generate_key("RSA", 2048, parameters={"kid": "bench"})
    now = int(time.time())
    claims = {"iss": "https://idp.bench", "aud": "agentplex-bench", "sub": "bench", "iat": now, "exp": now + 3600}
    token = jwt.encode({"alg": "RS256", "kid": "bench"}, claims, key)
    jwks = json.dumps(json.dumps({"keys": [key.as_dict(private=False)]}))
    rule = json.dumps('jwt.sub == "bench" && mcp.tool.name != "admin"')
    limit = "{maxTokens: 1000000, tokensPerFill: 1000000, fillInterval: 1s, methods: [tools/call], key: 'jwt.sub + \"/\" + mcp.tool.name'}"
    policies = (
        "{jwtAuth: {issuer: 'https://idp.bench', audiences: [agentplex-bench], jwks: {inline: " + jwks + "}}, "
        f"mcpAuthorization: {{rules: [{rule}]}}, localRateLimit: [{limit}]}}"
    )
    return policies, token


@contextlib.contextmanager
def servers(workdir: Path, upstream_module: str, secure: str = "", stdio: bool = False) -> Iterator[dict[str, Any]]:
    """Start the upstream, the gateway in front of it, a second one that speaks 2026-07-28 to it (and the
    secured / stdio gateways); all are stopped on the way out, errors included."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port, gw_port = free_port(), free_port()
        up_log, gw_log = workdir / "upstream.log", workdir / "gateway.log"
        procs.append(upstream := start(upstream_cmd(upstream_module, "http", up_port), up_log))
        config = workdir / "gateway.yaml"
        config.write_text(gateway_config(gw_port, up_port))
        procs.append(gateway := start([agentplex_script(), "run", "-f", str(config)], gw_log))
        modern_port, modern_log = free_port(), workdir / "gateway-modern.log"
        modern_config = workdir / "gateway-modern.yaml"
        modern_config.write_text(gateway_config(modern_port, up_port, era="modern"))
        procs.append(gateway_modern := start([agentplex_script(), "run", "-f", str(modern_config)], modern_log))
        env: dict[str, Any] = {
            "upstream": upstream,
            "gateway": gateway,
            "gateway-modern": gateway_modern,
            "direct_url": f"http://{HOST}:{up_port}/mcp",
            "gateway_url": f"http://{HOST}:{gw_port}/mcp",
            "gateway_modern_url": f"http://{HOST}:{modern_port}/mcp",
            "logs": {"upstream": up_log, "gateway": gw_log, "gateway-modern": modern_log},
        }
        if secure:
            sec_port, sec_log = free_port(), workdir / "secured.log"
            sec_config = workdir / "secured.yaml"
            sec_config.write_text(gateway_config(sec_port, up_port, secure))
            procs.append(secured := start([agentplex_script(), "run", "-f", str(sec_config)], sec_log))
            env |= {"secured": secured, "secured_url": f"http://{HOST}:{sec_port}/mcp"}
            env["logs"]["secured"] = sec_log
        if stdio:
            stdio_port, stdio_log = free_port(), workdir / "gateway-stdio.log"
            stdio_config = workdir / "gateway-stdio.yaml"
            stdio_config.write_text(stdio_gateway_config(stdio_port, upstream_module))
            procs.append(gateway_stdio := start([agentplex_script(), "run", "-f", str(stdio_config)], stdio_log))
            env |= {"gateway-stdio": gateway_stdio, "gateway_stdio_url": f"http://{HOST}:{stdio_port}/mcp"}
            env["logs"]["gateway-stdio"] = stdio_log
        yield env
    finally:
        for proc in reversed(procs):
            stop(proc)


# -- profile ------------------------------------------------------------------------------------


PROJECT_DIRS = ("gateway", "federation", "protocols", "samples")


def summarize_raw_profile(path: Path, top: int = 10) -> dict[str, list[tuple[str, float]]]:
    """Self time per function and per package, inclusive time overall and in project code, from py-spy raw output."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    everything: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";")]
        own[frames[-1][0]] += count
        packages[_package(frames[-1][1])] += count
        for name, where in set(frames):
            everything[name] += count
            if _package(where) == "agentplex" and where != "gateway/cli.py":  # cli frames are always 100 %
                inclusive[name] += count
    share = lambda counter: [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []  # noqa: E731
    below_loop = Counter({name: n for name, n in everything.items() if n < 0.75 * total})  # drop event-loop frames
    return {
        "self": share(own),
        "self_by_package": share(packages),
        "inclusive": share(below_loop),
        "inclusive_project": share(inclusive),
    }


def _frame_name(frame: str) -> tuple[str, str]:
    """`func (path/to/file.py:123)` -> (`func (path/to/file.py)`, `path/to/file.py`)."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0].split("site-packages/")[-1].replace(str(REPO) + "/", "")
    return (f"{name} ({where})" if where else name), where


def _package(where: str) -> str:
    """The top-level package (or stdlib module) a source path belongs to; project code is `agentplex`."""
    head = where.split("/", 1)[0].removesuffix(".py")
    if head in PROJECT_DIRS:
        return "agentplex"
    return head if "/" in where or where.endswith(".py") else "<script>"


async def profile_gateway(url: str, pid: int, duration: float, out: Path, era: str = PROTOCOL) -> dict[str, Any]:
    """Record the gateway with py-spy during an extra 8-session load phase (in `era`); returns the summary."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    py_spy = py_spy if Path(py_spy).exists() else shutil.which("py-spy")
    if py_spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    cmd = [py_spy, "record", "-d", str(int(duration)), "-r", "200", "-p", str(pid), "-o", str(out), "--format", "raw"]
    log = out.with_suffix(".log")
    out.unlink(missing_ok=True)
    with log.open("wb") as err:
        recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        await asyncio.sleep(0.5)  # let py-spy attach
        side = Side(url)
        await measure_throughput(side, 8, duration, {}, era)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(recorder.wait, duration + 15)
    finally:
        stop(recorder)
    if not out.exists():
        return {"error": f"py-spy wrote no profile: {log_tail(log, 5)}"}
    return summarize_raw_profile(out)


# -- run and report -----------------------------------------------------------------------------


async def start_stdio(
    env: dict[str, Any], workdir: Path, upstream_module: str, pids: dict[str, int], stack: contextlib.AsyncExitStack
) -> StdioConnection:
    """Wait for the stdio gateway, find the server process it runs, start and open the direct stdio server."""
    await wait_ready(env["gateway_stdio_url"], env["gateway-stdio"], env["logs"]["gateway-stdio"])
    pids["gateway-stdio"] = env["gateway-stdio"].pid
    children = descendants(env["gateway-stdio"].pid)  # `sharing: shared`: one process, started for the listing
    if len(children) != 1:
        raise RuntimeError(f"the stdio gateway runs {len(children)} processes, expected 1")
    pids["gateway-stdio-child"] = children[0]
    log = workdir / "upstream-stdio.log"
    connection = await StdioConnection.start(upstream_cmd(upstream_module, "stdio"), log)
    stack.push_async_callback(connection.close)
    try:
        await connection.open()
        tools = await connection.request("tools/list")
    except CallError as exc:
        raise RuntimeError(f"stdio upstream: {exc}\n{log_tail(log)}") from exc
    if not any(tool.get("name") == "echo" for tool in tools.get("tools", [])):
        raise RuntimeError("stdio upstream: no echo tool")
    pids["upstream-stdio"] = connection.proc.pid
    return connection


async def run(
    params: Params, upstream_module: str, profile: bool, secure: bool = False, stdio: bool = True
) -> dict[str, Any]:
    """Start the servers, measure every side phase by phase (interleaved), stop the servers."""
    policies = ""
    if secure:
        policies, token = secure_policies()
        BASE_HEADERS["Authorization"] = f"Bearer {token}"  # every side sends it; only the secured one checks it
    stdio_sides: tuple[Side, Side] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="agentplex-bench-") as tmp,
        servers(Path(tmp), upstream_module, policies, stdio) as env,
    ):
        async with contextlib.AsyncExitStack() as stack:
            await wait_ready(env["direct_url"], env["upstream"], env["logs"]["upstream"])
            await wait_ready(env["gateway_url"], env["gateway"], env["logs"]["gateway"])
            await wait_ready(env["gateway_modern_url"], env["gateway-modern"], env["logs"]["gateway-modern"])
            pids = {"upstream": env["upstream"].pid, "gateway": env["gateway"].pid}
            pids["gateway-modern"] = env["gateway-modern"].pid
            direct, gateway = Side(env["direct_url"]), Side(env["gateway_url"])
            sides = [direct, gateway]
            secured: Side | None = None
            if secure:
                await wait_ready(env["secured_url"], env["secured"], env["logs"]["secured"])
                pids["secured"] = env["secured"].pid
                secured = Side(env["secured_url"])
                sides.append(secured)
            connection = await start_stdio(env, Path(tmp), upstream_module, pids, stack) if stdio else None
            start = CpuReading.take(pids)
            for side in sides:
                await measure_latency(side, params)
            for n in params.sessions:
                for side in sides:
                    await measure_throughput(side, n, params.duration, pids)
            modern_target = Side(env["gateway_modern_url"])  # 2026-07-28 on both of the gateway's sides
            for side in [*sides, modern_target]:  # what mcp 2.3.0's Client(url) speaks by default
                await measure_latency(side, params, MODERN)
                swapped = {"gateway": pids["gateway-modern"], "gateway-modern": pids["gateway"]}  # "gateway": the one measured
                ran = pids | swapped if side is modern_target else pids
                await measure_throughput(side, 8, params.duration, ran, MODERN)
            if connection is not None:
                stdio_sides = (Side("stdio"), Side(env["gateway_stdio_url"]))
                await measure_stdio(stdio_sides, connection, params, pids)
            usage = CpuReading.take(pids).since(start)
            memory = {name: rss_mib(pid) for name, pid in pids.items()}
            summary = None
            if profile:
                RESULTS.mkdir(parents=True, exist_ok=True)
                summary = await profile_gateway(env["gateway_url"], pids["gateway"], 5.0, RESULTS / "profile.txt")
                summary["2026-07-28"] = await profile_gateway(
                    env["gateway_url"], pids["gateway"], 5.0, RESULTS / "profile-modern.txt", MODERN
                )
            for name in ("upstream", "gateway", "gateway-modern", "secured", "gateway-stdio"):
                if name in env and env[name].poll() is not None:
                    raise RuntimeError(f"{name} exited during the run\n{log_tail(env['logs'][name])}")
            if connection is not None and connection.proc.returncode is not None:
                raise RuntimeError("the stdio upstream exited during the run")
    doc = report(params, direct, gateway, memory, summary)
    doc["modern_target"] = _side_doc(modern_target)
    doc["overhead"]["modern_target"] = _modern_overhead(direct, modern_target)
    if secured is not None:
        doc["secured"] = _side_doc(secured)
        doc["policy_cost"] = {
            "call_p50_added_ms": secured.call_p50_ms - gateway.call_p50_ms,
            "call_mean_added_ms": secured.call_mean_ms - gateway.call_mean_ms,
            "list_p50_added_ms": secured.list_p50_ms - gateway.list_p50_ms,
            "throughput_ratio": {n: secured.throughput.get(n, 0) / v for n, v in gateway.throughput.items() if v},
        }
    if stdio_sides is not None:
        doc["stdio"] = stdio_doc(*stdio_sides)
    doc["machine"]["foreign_busy_cpus_during_run"] = usage.foreign_cpus
    return _nan_to_none(doc)


async def measure_stdio(
    sides: tuple[Side, Side],
    connection: StdioConnection,
    params: Params,
    pids: dict[str, int],
) -> None:
    """The stdio phases, direct then through the stdio gateway: sequential latencies on one session, then
    STDIO_CALLERS concurrent callers (direct: on the one stdio session; gateway: that many HTTP sessions)."""
    direct, gateway = sides
    caller = lambda: StdioCaller(connection)  # noqa: E731
    await measure_latency(direct, params, new_session=caller)
    await measure_latency(gateway, params)
    await measure_throughput(direct, STDIO_CALLERS, params.duration, pids, new_session=caller)
    await measure_throughput(gateway, STDIO_CALLERS, params.duration, pids)


def stdio_doc(direct: Side, gateway: Side) -> dict[str, Any]:
    """The stdio sides and their overhead; the server process is `upstream-stdio` direct and
    `gateway-stdio-child` behind the gateway."""
    n = str(STDIO_CALLERS)
    rate = direct.throughput.get(n)
    return {
        "target": "stdio, sharing: shared (one server process for every client session)",
        "direct": _side_doc(direct),
        "gateway": _side_doc(gateway),
        "overhead": {
            "call_p50_added_ms": gateway.call_p50_ms - direct.call_p50_ms,
            "call_p99_added_ms": gateway.call_p99_ms - direct.call_p99_ms,
            "list_p50_added_ms": gateway.list_p50_ms - direct.list_p50_ms,
            "throughput_ratio": {n: gateway.throughput.get(n, 0) / rate if rate else math.nan},
        },
    }


def report(
    params: Params, direct: Side, gateway: Side, memory: dict[str, float], profile: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON document written to bench/results/latest.json."""
    overhead = {
        "call_p50_added_ms": gateway.call_p50_ms - direct.call_p50_ms,
        "call_p99_added_ms": gateway.call_p99_ms - direct.call_p99_ms,
        "list_p50_added_ms": gateway.list_p50_ms - direct.list_p50_ms,
        "throughput_ratio": {n: gateway.throughput.get(n, 0) / v for n, v in direct.throughput.items() if v},
    }
    overhead["modern"] = _modern_overhead(direct, gateway)
    doc: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "params": asdict(params),
        "direct": _side_doc(direct),
        "gateway": _side_doc(gateway),
        "overhead": overhead,
        "rss_mib_after_load": memory,
    }
    if profile is not None:
        doc["profile"] = profile
    return doc


def _modern_overhead(direct: Side, gateway: Side) -> dict[str, float]:
    """The 2026-07-28 rows' overheads and ratio."""
    dm, gm = direct.modern, gateway.modern
    return {
        "call_p50_added_ms": gm.get("call_p50_ms", math.nan) - dm.get("call_p50_ms", math.nan),
        "list_p50_added_ms": gm.get("list_p50_ms", math.nan) - dm.get("list_p50_ms", math.nan),
        "throughput_ratio_8": gm.get("throughput_8", 0) / dm["throughput_8"] if dm.get("throughput_8") else math.nan,
    }


def _side_doc(side: Side) -> dict[str, Any]:
    """A Side as a JSON-ready dict, with CPU ms per call over the throughput phases."""
    doc = asdict(side)
    doc["errors"] = dict(side.errors)
    doc["cpu_seconds"] = dict(side.cpu_seconds)
    calls = side.throughput_calls
    doc["cpu_ms_per_call"] = {name: 1000 * sec / calls if calls else math.nan for name, sec in side.cpu_seconds.items()}
    return doc


def _nan_to_none(value: Any) -> Any:
    """Replace NaN floats (missing figures) by None, recursively, so the JSON is strict."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def fmt(value: float | None, digits: int = 2, sign: str = "") -> str:
    """A number for the table, or '-' when missing."""
    return "-" if value is None else f"{value:{sign}.{digits}f}"


def table_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, direct, gateway, overhead) rows of the comparison table."""
    d, g, o, mem = doc["direct"], doc["gateway"], doc["overhead"], doc["rss_mib_after_load"]
    dc, gc = d["cpu_ms_per_call"], g["cpu_ms_per_call"]
    added = lambda key: f"{fmt(o[key], sign='+')} ms"  # noqa: E731
    rows = [
        ("tools/call p50 (ms)", fmt(d["call_p50_ms"]), fmt(g["call_p50_ms"]), added("call_p50_added_ms")),
        ("tools/call p99 (ms)", fmt(d["call_p99_ms"]), fmt(g["call_p99_ms"]), added("call_p99_added_ms")),
    ]
    for n, ratio in o["throughput_ratio"].items():
        direct, gateway = fmt(d["throughput"][n], 0), fmt(g["throughput"][n], 0)
        rows.append((f"calls/s, {n} sessions", direct, gateway, f"{ratio:.0%} of direct"))
    return [
        *rows,
        ("tools/list p50 (ms)", fmt(d["list_p50_ms"]), fmt(g["list_p50_ms"]), added("list_p50_added_ms")),
        ("gateway CPU / call (ms)", "", fmt(gc.get("gateway")), "throughput phases"),
        ("upstream CPU / call (ms)", fmt(dc.get("upstream")), fmt(gc.get("upstream")), "throughput phases"),
        ("load-gen CPU / call (ms)", fmt(dc.get("load-gen")), fmt(gc.get("load-gen")), "throughput phases"),
        ("RSS after load (MiB)", f"up {fmt(mem['upstream'], 1)}", f"gw {fmt(mem['gateway'], 1)}", "VmRSS"),
        *modern_rows(doc),
        ("errors", str(sum(d["errors"].values())), str(sum(g["errors"].values())), ""),
        *stdio_rows(doc),
        *secured_rows(doc),
    ]


def stdio_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows for the same server over stdio: spoken to directly, and as the stdio gateway's (shared) target."""
    if "stdio" not in doc:
        return []
    d, g, o = doc["stdio"]["direct"], doc["stdio"]["gateway"], doc["stdio"]["overhead"]
    mem = doc["rss_mib_after_load"]
    dc, gc, n = d["cpu_ms_per_call"], g["cpu_ms_per_call"], str(STDIO_CALLERS)
    added = lambda key: f"{fmt(o[key], sign='+')} ms"  # noqa: E731
    ratio = o["throughput_ratio"].get(n)
    return [
        ("stdio tools/call p50 (ms)", fmt(d["call_p50_ms"]), fmt(g["call_p50_ms"]), added("call_p50_added_ms")),
        ("stdio tools/call p99 (ms)", fmt(d["call_p99_ms"]), fmt(g["call_p99_ms"]), added("call_p99_added_ms")),
        (f"stdio calls/s, {n} callers", fmt(d["throughput"].get(n), 0), fmt(g["throughput"].get(n), 0),
         "-" if ratio is None else f"{ratio:.0%} of direct"),
        ("stdio tools/list p50 (ms)", fmt(d["list_p50_ms"]), fmt(g["list_p50_ms"]), added("list_p50_added_ms")),
        ("stdio gateway CPU / call (ms)", "", fmt(gc.get("gateway-stdio")), f"{n} callers"),
        ("stdio upstream CPU / call (ms)", fmt(dc.get("upstream-stdio")), fmt(gc.get("gateway-stdio-child")),
         f"{n} callers"),
        ("stdio load-gen CPU / call (ms)", fmt(dc.get("load-gen")), fmt(gc.get("load-gen")), f"{n} callers"),
        ("stdio RSS after load (MiB)", f"up {fmt(mem.get('upstream-stdio'), 1)}",
         f"gw {fmt(mem.get('gateway-stdio'), 1)} + up {fmt(mem.get('gateway-stdio-child'), 1)}", "VmRSS"),
        ("stdio errors", str(sum(d["errors"].values())), str(sum(g["errors"].values())), ""),
    ]


def modern_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows for 2026-07-28 callers (no session; what mcp 2.3.0's Client(url) speaks by default): through the
    gateway to a handshake-era session on the target ("→ hs"), and with 2026-07-28 on both sides ("→ 07-28")."""
    rows = []
    d = doc["direct"]["modern"]
    for key, label in (("gateway", "→ hs"), ("modern_target", "→ 07-28")):
        g, o = doc.get(key, {}).get("modern"), doc["overhead"].get("modern" if key == "gateway" else key)
        if not d or not g or not o:
            continue
        ratio = o.get("throughput_ratio_8")
        rows += [
            (f"2026-07-28 {label} tools/call p50 (ms)", fmt(d.get("call_p50_ms")), fmt(g.get("call_p50_ms")),
             f"{fmt(o.get('call_p50_added_ms'), sign='+')} ms"),
            (f"2026-07-28 {label} calls/s, 8 callers", fmt(d.get("throughput_8"), 0), fmt(g.get("throughput_8"), 0),
             "-" if ratio is None else f"{ratio:.0%} of direct"),
            (f"2026-07-28 {label} tools/list p50 (ms)", fmt(d.get("list_p50_ms")), fmt(g.get("list_p50_ms")),
             f"{fmt(o.get('list_p50_added_ms'), sign='+')} ms"),
            (f"2026-07-28 {label} CPU / call (ms)", fmt(d.get("upstream_cpu_ms_per_call_8")),
             fmt(g.get("cpu_ms_per_call_8")), f"upstream {fmt(g.get('upstream_cpu_ms_per_call_8'))} behind gw"),
        ]
    return rows


def secured_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows comparing the secured gateway (jwtAuth + rule + rate limit) with the plain one."""
    if "secured" not in doc:
        return []
    g, s, c = doc["gateway"], doc["secured"], doc["policy_cost"]
    sc = s["cpu_ms_per_call"]
    rows = [
        ("secured: tools/call p50 (ms)", "", fmt(s["call_p50_ms"]), f"{fmt(c['call_p50_added_ms'], sign='+')} ms vs gateway"),
        ("secured: tools/call mean (ms)", "", fmt(s["call_mean_ms"]), f"{fmt(c['call_mean_added_ms'], sign='+')} ms vs gateway"),
    ]
    for n, ratio in c["throughput_ratio"].items():
        rows.append((f"secured: calls/s, {n} sessions", "", fmt(s["throughput"][n], 0), f"{ratio:.0%} of gateway"))
    rows.append(("secured: gateway CPU / call (ms)", "", fmt(sc.get("secured")), f"plain {fmt(g['cpu_ms_per_call'].get('gateway'))}"))
    rows.append(("secured: errors", "", str(sum(s["errors"].values())), ""))
    return rows


def table(doc: dict[str, Any]) -> str:
    """The human-readable comparison table."""
    rows = [("metric", "direct", "gateway", "overhead / ratio"), *table_rows(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def notes(doc: dict[str, Any]) -> list[str]:
    """Lines about machine load and errors that qualify the table."""
    lines = []
    sides = [("direct", doc["direct"]), ("gateway", doc["gateway"])]
    if "stdio" in doc:
        sides += [("stdio direct", doc["stdio"]["direct"]), ("stdio gateway", doc["stdio"]["gateway"])]
    for name, side in sides:
        phases = ", ".join(
            f"{n} sessions {busy:.2f} busy ({side['foreign_cpus'][n]:.2f} other work)"
            for n, busy in side["busy_cpus"].items()
        )
        lines.append(f"CPUs during {name} load phases (of {doc['machine']['cpus']}): {phases}")
    foreign = doc["machine"].get("foreign_busy_cpus_during_run") or 0.0
    if foreign > 0.15:
        lines.append(f"warning: other work kept {foreign:.2f} CPUs busy during the run; figures are skewed")
    for name, side in sides:
        lines += [f"error ({name}): {kind} x{count}" for kind, count in side["errors"].items()]
    return lines


def print_profile(profile: dict[str, Any], era: str = "handshake-era") -> None:
    """The py-spy summary, if one was recorded (and the 2026-07-28 one after it)."""
    if "error" in profile:
        print(f"\nprofile: {profile['error']}")
        return
    print(f"\ngateway profile under 8 {era} callers (py-spy, % of samples)")
    sections = (
        ("self time", "self"),
        ("self time by package", "self_by_package"),
        ("inclusive (below the event loop)", "inclusive"),
        ("inclusive, project code", "inclusive_project"),
    )
    for title, key in sections:
        print(f"  {title}:")
        for name, share in profile[key]:
            print(f"    {share:5.1f}%  {name}")
    if isinstance(profile.get("2026-07-28"), dict):
        print_profile(profile["2026-07-28"], "2026-07-28")


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller phases (200 sequential calls, 2 s load phases)")
    parser.add_argument("--profile", action="store_true", help="also py-spy the gateway under an extra 8-session load")
    parser.add_argument("--secure", action="store_true", help="also measure a gateway with jwtAuth + a rule + a rate limit")
    parser.add_argument("--no-stdio", action="store_true", help="skip the stdio rows (direct stdio vs a stdio target)")
    parser.add_argument("--upstream-module", default="tests.fixtures.upstream", help="python -m module to serve")
    return parser.parse_args()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (the gateway's dependency on Linux): the cheaper client."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> int:
    """Parse flags, run the benchmark, print the table and write bench/results/latest.json."""
    args = parse_args()
    idle_load = background_load()
    if idle_load > 0.25:
        print(f"warning: {idle_load:.2f} CPUs were already busy before the benchmark started; figures will be skewed")
    params = QUICK if args.quick else FULL
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:  # the load generator on uvloop, like the gateway
        doc = runner.run(run(params, args.upstream_module, args.profile, args.secure, not args.no_stdio))
    doc["params"]["quick"] = args.quick
    doc["machine"]["busy_cpus_before_start"] = idle_load
    print(table(doc))
    print("\n".join(notes(doc)))
    if doc.get("profile"):
        print_profile(doc["profile"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {(RESULTS / 'latest.json').relative_to(REPO)}")
    stdio = doc.get("stdio", {})
    sides = [doc["direct"], doc["gateway"], doc.get("secured", {}), stdio.get("direct", {}), stdio.get("gateway", {})]
    return 1 if any(side.get("errors") for side in sides) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers were already stopped on the way out
        sys.exit(130)
