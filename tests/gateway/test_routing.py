"""The full config shape: binds -> listeners -> routes -> MCP backends, matched by path and method."""

from __future__ import annotations

import textwrap
from typing import Any

import httpx
import pytest
from mcp import Client

from tests.conftest import PY, ROOT, run_gateway

pytestmark = pytest.mark.anyio


def target(name: str) -> str:
    return (
        f'{{ name: {name}, stdio: {{ cmd: "${{TEST_PY}}", '
        f'args: ["-m", "tests.fixtures.upstream", "--name", "{name}", "--transport", "stdio"], cwd: "{ROOT}" }} }}'
    )


CONFIG = textwrap.dedent(
    f"""
    binds:
    - port: 0
      listeners:
      - name: main
        routes:
        - name: team-a
          matches: [{{ path: {{ pathPrefix: /a }} }}]
          backends: [{{ mcp: {{ targets: [{target("alpha")}] }} }}]
        - name: team-b
          matches: [{{ path: {{ exact: /b/mcp }} }}]
          backends: [{{ mcp: {{ targets: [{target("beta")}, {target("gamma")}] }} }}]
        - name: by-regex
          matches: [{{ path: {{ regex: "/v[0-9]+/mcp" }}, method: POST }}, {{ path: {{ regex: "/v[0-9]+/mcp" }}, method: GET }}]
          backends: [{{ mcp: {{ prefixMode: always, targets: [{target("delta")}] }} }}]
    """
)


async def tools(url: str) -> set[str]:
    async with Client(url, mode="legacy", cache=None) as client:
        return {t.name for t in (await client.list_tools()).tools}


async def test_each_route_serves_its_own_federation(monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_PY", PY)
    async with run_gateway(CONFIG) as gw:
        base = f"http://127.0.0.1:{gw.port}"
        assert "echo" in await tools(f"{base}/a")
        assert "echo" in await tools(f"{base}/a/mcp")  # under the prefix
        assert {"beta_echo", "gamma_echo"} <= await tools(f"{base}/b/mcp")
        assert "delta_echo" in await tools(f"{base}/v2/mcp")
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(f"{base}/b/mcp/extra")).status_code == 404  # exact means exact
            assert (await http.get(f"{base}/ab")).status_code == 404  # a prefix matches whole segments
            assert (await http.delete(f"{base}/v2/mcp")).status_code == 404  # DELETE is not in the matches
