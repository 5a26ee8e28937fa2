"""Shared harness: real upstream servers as subprocesses, and the real gateway in-process on port 0."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# Raw streamable-HTTP requests, for tests that look at the wire rather than through a client.
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """uvicorn servers a test starts install SIGINT/SIGTERM handlers and restore, on exit, whatever they
    found, which may be another (by then stopped) server's when several stop out of order. sse-starlette
    finds "the" uvicorn server through the SIGTERM handler and ends every SSE stream once it sees that
    server's should_exit, so a leaked handler would break later tests' SSE responses."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def http_server(module: str, *args: str, path: str = "/mcp") -> Iterator[str]:
    """Run `python -m module --port P ...` and yield its URL; always stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen([PY, "-m", module, *args, "--port", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        stop(proc)


@pytest.fixture
def upstream() -> Iterator[Callable[..., str]]:
    """Start test upstreams: upstream("alpha", "mcp"|"sse") -> URL. Stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(name: str, transport: str = "mcp", *extra: str) -> str:
            kind = "http" if transport == "mcp" else transport
            path = "/mcp" if transport == "mcp" else "/sse"
            return stack.enter_context(
                http_server("tests.fixtures.upstream", "--name", name, "--transport", kind, *extra, path=path)
            )

        yield start


def stdio_target(name: str, *extra: str) -> str:
    """YAML for a stdio test upstream target."""
    args = ", ".join(
        f'"{a}"' for a in ["-m", "tests.fixtures.upstream", "--name", name, "--transport", "stdio", *extra]
    )
    return f"""
  - name: {name}
    stdio: {{ cmd: "{PY}", args: [{args}], cwd: "{ROOT}" }}"""


class RunningGateway:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def port(self) -> int:
        return self.gateway.binds[0].bound_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@contextlib.asynccontextmanager
async def run_gateway(yaml_text: str, source: str = "<test>") -> AsyncIterator[RunningGateway]:
    """The real gateway in this event loop, from a YAML string, on port 0 unless the YAML says otherwise.

    `source` is the file the YAML pretends to come from (it names the config in errors; relative paths in
    it open from the working directory, as in the reference)."""
    gateway = Gateway(parse_config(yaml_text, source))
    async with gateway.running(), anyio.create_task_group() as tg:
        await tg.start(gateway.serve)
        try:
            yield RunningGateway(gateway)
        finally:
            gateway.shutdown()


@contextlib.asynccontextmanager
async def started(runtime: Runtime) -> AsyncIterator[Runtime]:
    """Run a whole Runtime (binds, admin API, stats address, reloads) in this event loop for the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.run)
        try:
            yield runtime
        finally:
            runtime.stop()


def http_route_yaml(host: str, policies: str = "{}") -> str:
    """A full-shape config on port 0: one route `api` at /api proxying to the plain HTTP backend `host`."""
    return f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: api
      matches: [{{path: {{pathPrefix: /api}}}}]
      policies: {policies}
      backends: [{{host: "{host}"}}]
"""


def mcp_yaml(targets: str, **options: str) -> str:
    """A short-shape config on port 0 with the given target YAML."""
    opts = "".join(f"\n  {k}: {v}" for k, v in options.items())
    return f"mcp:\n  port: 0{opts}\n  targets:{targets}\n"


@contextlib.asynccontextmanager
async def sdk_session(url: str, **options: Any) -> AsyncIterator[Any]:
    """The mcp SDK's handshake-era client over streamable HTTP, initialized (`options` go to ClientSession)."""
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, **options) as session,
    ):
        await session.initialize()
        yield session


def http_target(name: str, url: str, kind: str = "mcp") -> str:
    return f"""
  - name: {name}
    {kind}: {{ host: "{url}" }}"""


os.environ.setdefault("AGENTPLEX_PYTHON", PY)
