"""A headless Chromium from npm's `@sparticuz/chromium`, answering the DevTools protocol on 127.0.0.1.

The package (~75 MB: a brotli-compressed Chromium with the few shared libraries it needs) is npm-installed
into `.cache/` and unpacked there (~210 MB) by its own `executablePath()` under Node 22, once; later runs
start the unpacked binary directly. The tests drive it over CDP (Playwright's `connect_over_cdp`), so no
ChromeDriver and no system package is needed. Every wait is bounded and the browser's whole process
group is killed when the context ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.npm_cache import CACHE, node22, npm_package

PACKAGE = "@sparticuz/chromium@153.0.0"
HOME = CACHE / "chromium-153.0.0"  # the npm prefix; `unpacked/` holds the binary, its libraries and fonts
UNPACKED = HOME / "unpacked"
UNPACK_TIMEOUT = 180  # seconds to inflate ~75 MB of brotli
START_TIMEOUT = 20  # seconds until DevTools answers

# executablePath() inflates into os.tmpdir(), which TMPDIR points at a staging directory in the cache;
# AWS_EXECUTION_ENV makes it add al2023.tar.br (NSS, NSPR, expat), which a fresh machine may lack.
UNPACK_JS = """
import chromium from "@sparticuz/chromium";
const executable = await chromium.executablePath();
console.log(JSON.stringify({executable, args: chromium.args}));
"""
FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>{fonts}</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""

# The package's flags suit AWS Lambda; these three do not suit the tests.
DROPPED = {
    "--single-process",  # Playwright's browser contexts need renderers in processes of their own
    "--disable-web-security",  # the UI is tested under the web's usual same-origin rules
    "--allow-running-insecure-content",
}
EXTRA = (
    "--no-first-run",
    "--disable-background-networking",  # the tests' closed network refuses Chromium's own calls
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
)


def flags(package_args: list[str]) -> list[str]:
    """The package's own flags (its `--headless='shell'` unquoted: no shell is between), then ours."""
    kept = [arg.replace("--headless='shell'", "--headless=shell") for arg in package_args if arg not in DROPPED]
    return [*kept, *EXTRA]


def unpack(staging: Path) -> None:
    """Inflate the npm package into `staging` and record how to start it there (`launch.json`)."""
    npm_package(HOME.name, PACKAGE, "@sparticuz/chromium/package.json", "Chromium for the admin UI tests")
    env = {**os.environ, "TMPDIR": str(staging), "AWS_EXECUTION_ENV": "AWS_Lambda_nodejs22.x"}
    try:
        done = subprocess.run(
            [str(node22()), "--input-type=module", "-e", UNPACK_JS],
            cwd=HOME,
            env=env,
            capture_output=True,
            timeout=UNPACK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"unpacking {PACKAGE} took over {UNPACK_TIMEOUT}s")
    if done.returncode != 0:
        pytest.fail(f"unpacking {PACKAGE} failed, exit {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    executable = Path(answer["executable"])
    if executable.parent != staging or not (staging / "al2023" / "lib").is_dir():
        pytest.fail(f"{PACKAGE} unpacked somewhere unexpected: {answer['executable']} (expected in {staging})")
    # The package's fonts.conf names /tmp/fonts; without fonts the renderer aborts on its first page.
    (staging / "fonts" / "fonts.conf").write_text(
        FONTS_CONF.format(fonts=UNPACKED / "fonts" / "fonts", cache=UNPACKED / "fonts-cache")
    )
    launch = {"executable": executable.name, "args": flags(answer["args"])}
    (staging / "launch.json").write_text(json.dumps(launch, indent=1))


def unpacked() -> Path:
    """`.cache/chromium-*/unpacked`, installed and unpacked first if needed (a half-done unpack never counts)."""
    if (UNPACKED / "launch.json").exists():
        return UNPACKED
    HOME.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="unpacking-", dir=HOME))
    try:
        unpack(staging)
        try:
            staging.rename(UNPACKED)
        except OSError:
            if not (UNPACKED / "launch.json").exists():  # another test run finished unpacking first: use its copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return UNPACKED


def wait_for_devtools(profile: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The DevTools port, once Chromium has written it and `/json/version` answers from it."""
    deadline = time.monotonic() + timeout
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Chromium exited with {proc.returncode} before DevTools answered")
        with contextlib.suppress(OSError, ValueError, IndexError):
            port = int(active.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2) as response:
                if "Chrome" in json.load(response).get("Browser", ""):
                    return port
        time.sleep(0.05)
    raise TimeoutError(f"Chromium's DevTools did not answer within {timeout}s")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop Chromium (on SIGTERM it ends and reaps its children), then kill whatever is left of its process group."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session, so its own group: children that outlived it
    proc.wait(10)


def start(directory: Path, profile: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    launch = json.loads((directory / "launch.json").read_text())
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{directory / 'al2023' / 'lib'}:{directory}",
        "FONTCONFIG_PATH": str(directory / "fonts"),
        "HOME": str(profile),  # Chromium's ~/.pki and caches go to the throwaway profile
    }
    return subprocess.Popen(
        [str(directory / launch["executable"]), *launch["args"], f"--user-data-dir={profile}", "about:blank"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextlib.contextmanager
def chromium() -> Iterator[str]:
    """A started headless Chromium; yields its DevTools endpoint (`http://127.0.0.1:PORT`)."""
    directory = unpacked()
    with (
        tempfile.TemporaryDirectory(prefix="agentplex-chromium-") as profile,
        tempfile.TemporaryFile() as log,
    ):
        proc = start(directory, Path(profile), log)
        try:
            try:
                port = wait_for_devtools(Path(profile), proc, START_TIMEOUT)
            except (RuntimeError, TimeoutError) as exc:
                log.seek(0)
                pytest.fail(
                    f"Chromium did not start: {exc}; its output:\n{log.read()[-2000:].decode(errors='replace')}"
                )
            yield f"http://127.0.0.1:{port}"
        finally:
            kill_group(proc)
