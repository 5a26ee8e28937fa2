"""requestHeaderModifier, responseHeaderModifier and directResponse, over real sockets."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import run_gateway
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio


def config(host: str) -> str:
    return f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: api
      matches: [{{path: {{pathPrefix: /api}}}}]
      policies:
        requestHeaderModifier:
          add: {{x-added: one}}
          set: [{{name: x-set, value: fixed}}]
          remove: [x-secret]
        responseHeaderModifier:
          set: {{x-backend: rewritten}}
          add: {{x-served-by: agentplex}}
          remove: [x-drop]
      backends: [{{host: "{host}"}}]
    - name: health
      matches: [{{path: {{exact: /healthz}}}}]
      policies:
        directResponse: {{status: 200, body: '{{"ok": true}}'}}
        responseHeaderModifier: {{add: {{cache-control: no-store}}}}
    - name: gone
      matches: [{{path: {{pathPrefix: /old}}}}]
      policies: {{directResponse: {{status: 410, body: moved away}}}}
"""


async def test_header_modifiers_and_direct_responses() -> None:
    async with backend() as (url, _), run_gateway(config(url)) as gw, httpx.AsyncClient(timeout=20) as http:
        base = f"http://127.0.0.1:{gw.port}"
        answer = await http.get(f"{base}/api/x", headers={"x-set": "from-client", "x-secret": "s", "x-keep": "k"})
        seen = answer.json()["headers"]
        assert (seen["x-added"], seen["x-set"], seen["x-keep"]) == ("one", "fixed", "k")
        assert "x-secret" not in seen
        assert answer.headers["x-backend"] == "rewritten" and answer.headers["x-served-by"] == "agentplex"
        health = await http.get(f"{base}/healthz")
        assert (health.status_code, health.json()) == (200, {"ok": True})
        assert health.headers["content-type"] == "application/json" and health.headers["cache-control"] == "no-store"
        gone = await http.post(f"{base}/old/thing", content=b"x")
        assert (gone.status_code, gone.text) == (410, "moved away")


def test_a_route_needs_a_backend_or_a_direct_response() -> None:
    text = "binds: [{port: 0, listeners: [{routes: [{name: r, policies: {}}]}]}]"
    with pytest.raises(ConfigError, match=r"x\.yaml: binds\[0\]\.listeners\[0\]\.routes\[0\]\.backends: expected at least one"):
        Gateway(parse_config(text, "x.yaml"))
