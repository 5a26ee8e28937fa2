"""The samples work as their comments say: secure.yaml (JWT, per-tool authorization and rate limits) and
traffic.yaml (matching, header policies, rewrites, redirects, CORS, retries, mirroring)."""

from __future__ import annotations

import anyio
import httpx
import pytest
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from samples.mint_token import mint
from tests.conftest import ROOT, http_server, run_gateway
from tests.fixtures.a2a_agent import Recorder, serve
from tests.gateway.test_auth import bearer, call, rpc, session

pytestmark = pytest.mark.anyio


async def test_secure_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # its comments run it from the repo root, where its JWKS path starts
    source = ROOT / "samples" / "secure.yaml"
    with http_server("samples.servers.notes") as notes_url:
        text = source.read_text().replace("port: 3000", "port: 0").replace("http://127.0.0.1:9001/mcp", notes_url)
        async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
            url = gw.url
            assert (await http.post(url, json={}, headers={"accept": "application/json"})).status_code == 401
            alice = await session(http, url, bearer(mint("alice")))
            bob = await session(http, url, bearer(mint("bob")))
            intern = await session(http, url, bearer(mint("intern", role="admin")))

            async def tools(headers: dict[str, str]) -> set[str]:
                listed = rpc(await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers))
                return {t["name"] for t in listed["result"]["tools"]}

            assert {"clock_now", "notes_add_note", "notes_list_notes"} <= await tools(alice)
            assert {t.split("_")[0] for t in await tools(bob)} == {"clock"}
            assert "notes_add_note" not in await tools(intern) and "notes_list_notes" in await tools(intern)
            for i in range(5):
                added = rpc(await http.post(url, json=call("notes_add_note", i, title=f"t{i}", text="x"), headers=alice))
                assert "result" in added, added
            limited = rpc(await http.post(url, json=call("notes_add_note", 9, title="t9", text="x"), headers=alice))
            assert limited["error"]["code"] == -32029 and "retryAfter" in limited["error"]["data"]


def _echo(name: str) -> Recorder:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {"backend": name, "path": request.url.path, "query": request.url.query, "headers": dict(request.headers)}
        )

    return Recorder(Starlette(routes=[Route("/{path:path}", echo)]))


async def test_traffic_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """samples/traffic.yaml as shipped (ports and backends substituted): each route does what its comment says."""
    source = ROOT / "samples" / "traffic.yaml"
    async with (
        serve(lambda base: _echo("primary")) as primary,
        serve(lambda base: _echo("canary")) as canary,
        serve(lambda base: _echo("shadow")) as shadow,
    ):
        for var, backend in (("API_BACKEND", primary), ("CANARY_BACKEND", canary), ("SHADOW_BACKEND", shadow)):
            monkeypatch.setenv(var, backend.url.removeprefix("http://"))
        with http_server("samples.servers.notes") as notes_url:
            text = source.read_text().replace("port: 3000", "port: 0").replace("http://127.0.0.1:9001/mcp", notes_url)
            async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
                base = f"http://127.0.0.1:{gw.port}"
                answer = await http.get(f"{base}/api/items?x=1", headers={"x-debug": "1"})
                got = answer.json()
                assert (got["backend"], got["path"], got["query"]) == ("primary", "/items", "x=1")
                assert got["headers"]["x-gateway"] == "agentplex" and "x-debug" not in got["headers"]
                assert answer.headers["x-served-by"] == "primary"

                answer = await http.get(f"{base}/api/items", headers={"x-canary": "1"})
                assert answer.json()["backend"] == "canary" and answer.headers["x-served-by"] == "canary"

                moved = await http.get(f"{base}/v1/items?x=1")
                assert moved.status_code == 301 and moved.headers["location"].endswith("/api/items?x=1")
                health = await http.get(f"{base}/healthz")
                assert (health.status_code, health.text) == (200, "ok")

                origin = "http://localhost:5173"
                preflight = await http.options(
                    f"{base}/mcp",
                    headers={"origin": origin, "access-control-request-method": "POST",
                             "access-control-request-headers": "content-type, mcp-session-id"},
                )
                assert preflight.status_code == 204
                assert preflight.headers["access-control-allow-origin"] == origin
                async with Client(f"{base}/mcp", mode="legacy", cache=None) as client:
                    names = {t.name for t in (await client.list_tools()).tools}
                    assert {"clock_now", "notes_add_note"} <= names

                for _ in range(100):  # a tenth is copied to the shadow backend
                    assert (await http.get(f"{base}/api/mirrored")).status_code == 200
                with anyio.fail_after(10):
                    while not [s for s in shadow.seen if s[1] == "/mirrored"]:
                        await anyio.sleep(0.05)
                await anyio.sleep(0.5)
                copies = len([s for s in shadow.seen if s[1] == "/mirrored"])
                assert 1 <= copies <= 40
