"""samples/secure.yaml works as its comments say: JWT, per-tool authorization and rate limits together."""

from __future__ import annotations

import httpx
import pytest

from samples.mint_token import mint
from tests.conftest import ROOT, http_server, run_gateway
from tests.gateway.test_auth import bearer, call, rpc, session

pytestmark = pytest.mark.anyio


async def test_secure_sample() -> None:
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
