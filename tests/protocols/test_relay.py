"""The 2026-07-28 relay's downstream half watches the client only once a call has lasted a while: a quick
call costs no watcher, a slow one still hears the client go away and still pings while silent."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from protocols.mcp.relay import ModernDownstream

pytestmark = pytest.mark.anyio

REQUEST = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t"}}
RESPONSE = {"jsonrpc": "2.0", "id": 1, "result": {"content": []}}


class Client:
    """The ASGI side of one POST: what was sent down, and a `receive` that says when the client left."""

    def __init__(self, leaves_after: float | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received = 0
        self.leaves_after = leaves_after

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def receive(self) -> dict[str, Any]:
        self.received += 1
        if self.leaves_after is None:
            await anyio.sleep_forever()
        await anyio.sleep(self.leaves_after)
        return {"type": "http.disconnect"}


async def relayed(client: Client, seconds: float) -> ModernDownstream:
    """A call taking `seconds`, served as `_try_relay_modern` serves it."""
    downstream = ModernDownstream(client.send, client.receive, {}, REQUEST, frozenset())
    async with anyio.create_task_group() as tg:
        downstream.start_watching(tg)
        try:
            with downstream.call:
                await anyio.sleep(seconds)
                await downstream.finish(RESPONSE)
        finally:
            downstream.stop_watching()
    return downstream


async def test_a_quick_call_is_answered_as_json_without_watching_the_client() -> None:
    client = Client()
    await relayed(client, 0)
    assert client.received == 0
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert (b"content-type", b"application/json") in client.sent[0]["headers"]


async def test_a_slow_call_is_cancelled_when_the_client_goes_away() -> None:
    client = Client(leaves_after=0.05)
    with anyio.fail_after(5):
        downstream = await relayed(client, 30)
    assert downstream.call.cancelled_caught
    assert client.sent == []


async def test_a_slow_call_pings_while_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModernDownstream, "PING", 0.2)
    client = Client()
    await relayed(client, 0.5)
    assert client.sent[0]["status"] == 200 and (b"content-type", b"text/event-stream") in client.sent[0]["headers"]
    bodies = [m["body"] for m in client.sent[1:]]
    assert bodies[0] == b": ping\r\n\r\n"
    assert bodies[-1].startswith(b"event: message\r\ndata: ") and not client.sent[-1]["more_body"]
