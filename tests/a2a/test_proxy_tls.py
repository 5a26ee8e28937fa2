"""backendTLS on an A2A route: agents behind HTTPS with a private CA, for cards and calls alike."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
import uvicorn

from tests.a2a.harness import V1, a2a_yaml, message, rpc
from tests.conftest import free_port, run_gateway
from tests.fixtures.a2a_agent import echo_agent

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def https_agent(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An echo agent served over HTTPS by a certificate of a fresh private CA; (its URL, the CA file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "agent.pem"))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    config = uvicorn.Config(
        echo_agent(url, "Secure"),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(tmp_path / "agent.pem"),
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield url, tmp_path / "ca.pem"
        finally:
            server.should_exit = True


async def test_agents_behind_a_private_ca(tmp_path: Path) -> None:
    async with https_agent(tmp_path) as (url, ca):
        trusted = f"  policies: {{backendTLS: {{root: '{ca}'}}}}\n"
        async with run_gateway(a2a_yaml({"secure": url}, policies=trusted)) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/a2a/secure"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            assert card["name"] == "Secure" and card["supportedInterfaces"][0]["url"].startswith(base)
            answer = await http.post(f"{base}/", json=rpc("SendMessage", {"message": message("hi")}), headers=V1)
            assert answer.json()["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "echo: hi"
        # Without the CA the agent's certificate is not trusted: its card cannot be fetched (502 naming it).
        async with run_gateway(a2a_yaml({"secure": url})) as gw, httpx.AsyncClient(timeout=20) as http:
            refused = await http.get(f"http://127.0.0.1:{gw.port}/a2a/secure/.well-known/agent-card.json")
            assert refused.status_code == 502 and "'secure'" in refused.text
            assert "CERTIFICATE_VERIFY_FAILED" in refused.text or "certificate" in refused.text.lower()
