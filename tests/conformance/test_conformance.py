"""The official MCP conformance suite, run against the gateway with the fixture server behind it.

Node 22 and `@modelcontextprotocol/conformance` come from the npm registry into `.cache/` on first
use (the machine's own Node may be older than the suite needs).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.conftest import PY, ROOT, free_port, http_server, mcp_yaml, run_gateway, stop, wait_for_port
from tests.npm_cache import node22, npm_package

pytestmark = pytest.mark.anyio

SUITE_PKG = "@modelcontextprotocol/conformance@0.1.16"
EXPECTED_FAILURES = Path(__file__).with_name("expected-failures.yaml")


@pytest.fixture(scope="session")
def suite() -> list[str]:
    """The command that runs the suite, installing Node 22 and the suite first if needed (tests/npm_cache.py)."""
    entry = npm_package(
        "conformance", SUITE_PKG, "@modelcontextprotocol/conformance/dist/index.js", "the MCP conformance suite"
    )
    return [str(node22()), str(entry)]


def summarize(out: Path) -> tuple[int, int, list[str]]:
    passed = failed = 0
    failures: list[str] = []
    for checks in out.glob("*/checks.json"):
        for check in json.loads(checks.read_text()):
            if check.get("status") == "SUCCESS":
                passed += 1
            elif check.get("status") == "FAILURE":
                failed += 1
                failures.append(f"{checks.parent.name}: {check.get('name')}: {check.get('errorMessage')}")
    return passed, failed, failures


async def run_suite(suite: list[str], url: str, out: Path) -> tuple[int, int, list[str]]:
    command = [*suite, "server", "--url", url, "-o", str(out)]
    if EXPECTED_FAILURES.exists():
        command += ["--expected-failures", str(EXPECTED_FAILURES)]
    with anyio.fail_after(600):
        result = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
    passed, failed, failures = summarize(out)
    print(f"conformance through the gateway ({url}): {passed} passed, {failed} failed")
    assert result.returncode == 0, result.stdout.decode()[-4000:] + "\n".join(failures)
    return passed, failed, failures


def fixture_stdio_target() -> str:
    return f"""
  - name: conformance
    stdio: {{ cmd: "{PY}", args: ["-m", "tests.fixtures.conformance_server", "--transport", "stdio"], cwd: "{ROOT}" }}"""


@pytest.mark.parametrize(("kind", "transport", "path"), [("mcp", "http", "/mcp"), ("sse", "sse", "/sse")])
async def test_conformance_through_gateway_with_http_targets(
    suite: list[str], tmp_path: Path, kind: str, transport: str, path: str
) -> None:
    with http_server("tests.fixtures.conformance_server", "--transport", transport, path=path) as url:
        target = f"""
  - name: conformance
    {kind}: {{ host: "{url}" }}"""
        async with run_gateway(mcp_yaml(target)) as gw:
            passed, failed, _ = await run_suite(suite, f"http://localhost:{gw.port}/mcp", tmp_path)
    assert passed >= 39 and failed == 0


async def test_conformance_through_gateway_with_stdio_target(suite: list[str], tmp_path: Path) -> None:
    async with run_gateway(mcp_yaml(fixture_stdio_target())) as gw:
        passed, failed, _ = await run_suite(suite, f"http://localhost:{gw.port}/mcp", tmp_path)
    assert passed >= 39 and failed == 0


async def test_conformance_through_agentplex_wrap_of_the_stdio_fixture(suite: list[str], tmp_path: Path) -> None:
    fixture = [PY, "-m", "tests.fixtures.conformance_server", "--transport", "stdio"]
    port = free_port()
    agentplex = str(Path(PY).with_name("agentplex"))
    proc = subprocess.Popen([agentplex, "wrap", "--port", str(port), "--", *fixture], cwd=ROOT)
    try:
        wait_for_port(port, proc)
        passed, failed, _ = await run_suite(suite, f"http://localhost:{port}/mcp", tmp_path)
    finally:
        stop(proc)
    assert passed >= 39 and failed == 0
