"""Clients that send slowly or guess: read deadlines on every server the gateway runs, and the admin
sign-in's throttle. Raw sockets, so the test controls every byte and when it is sent."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from gateway.http_limits import ReadDeadlines
from tests.conftest import stdio_target
from tests.gateway.test_admin import gateway_url, running

pytestmark = pytest.mark.anyio

HEAD = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n"


@pytest.fixture
def quick_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReadDeadlines, "head_timeout", 1.0)
    monkeypatch.setattr(ReadDeadlines, "body_timeout", 1.0)


def gateway_yaml(tmp_path: Path, admin: str = "") -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"config: {{adminAddr: 127.0.0.1:0, statsAddr: 127.0.0.1:0{admin}}}\n"
        f"mcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    )
    return path


async def dribble(port: int, sent_at_once: bytes, then: bytes) -> tuple[float, bytes]:
    """Send `sent_at_once`, then `then` a byte every 0.1 s; how long until the server answered or
    closed, and what it said. Gives up after 6 s (a server without deadlines never answers)."""
    start = time.monotonic()
    answer = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if sent_at_once:
            await stream.send(sent_at_once)
        for i in range(60):
            try:
                if then:
                    await stream.send(then[i % len(then) : i % len(then) + 1])
                with anyio.move_on_after(0.1):
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                break
            if answer:
                with anyio.move_on_after(1), contextlib.suppress(anyio.EndOfStream, OSError):
                    while True:  # the rest of the answer, then the close
                        answer += await stream.receive()
                break
    return time.monotonic() - start, answer


@pytest.mark.parametrize("server", ["bind", "admin", "stats"])
@pytest.mark.parametrize("client", ["dribbles headers", "sends nothing"])
async def test_a_request_head_that_does_not_arrive_in_time_is_cut_off(
    tmp_path: Path, quick_deadlines: None, server: str, client: str
) -> None:
    async with running(gateway_yaml(tmp_path)) as (runtime, _):
        port = {
            "bind": next(iter(runtime.sockets.values())).bind.bound_port,
            "admin": runtime.admin_port,
            "stats": runtime.stats_port,
        }[server]
        assert port is not None
        dribbling = client == "dribbles headers"  # (llhttp refuses "x-slow" as a request line at its first byte)
        took, answer = await dribble(port, HEAD if dribbling else b"", b"x-slow: 1\r\n" * 10 if dribbling else b"")
        assert answer.startswith(b"HTTP/1.1 408 ") and b"request head not received within 1 s" in answer
        assert took < 4  # the deadline is 1 s; without one the client holds on for all of its 6 s
        async with httpx.AsyncClient(timeout=10) as http:  # everyone else is served as before
            assert (await http.get(f"http://127.0.0.1:{port}/")).status_code < 500


async def test_an_unfinished_request_head_past_its_size_limit_is_refused(tmp_path: Path) -> None:
    async with running(gateway_yaml(tmp_path)) as (runtime, _):
        port = next(iter(runtime.sockets.values())).bind.bound_port
        took, answer = await dribble(port, HEAD + b"x-big: " + b"x" * 20_000, b"")
        assert answer.startswith(b"HTTP/1.1 400 ") and took < 4


async def test_a_request_body_that_trickles_in_is_cut_off_and_others_are_served(
    tmp_path: Path, quick_deadlines: None
) -> None:
    async with running(gateway_yaml(tmp_path)) as (runtime, _):
        port = next(iter(runtime.sockets.values())).bind.bound_port
        head = (
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\ncontent-length: 100000\r\n\r\n"
        )
        took, _ = await dribble(port, head, b'{"jsonrpc": "2.0", ')
        assert took < 4
        async with Client(gateway_url(runtime), mode="legacy") as mcp:
            assert "echo" in {tool.name for tool in (await mcp.list_tools()).tools}


async def test_wrong_admin_tokens_from_one_address_are_throttled(tmp_path: Path) -> None:
    async with running(gateway_yaml(tmp_path, ", adminToken: s3cret-admin")) as (runtime, admin):
        for _ in range(5):
            refused = await admin.post("/ui/login", data={"token": "guess"})
            assert refused.status_code == 200 and 'id="login-failed"' in refused.text
        throttled = await admin.post("/ui/login", data={"token": "s3cret-admin"})  # right, but too late
        assert throttled.status_code == 429 and 0 < int(throttled.headers["retry-after"]) <= 60
        assert "Too many wrong tokens" in throttled.text
        api = await admin.get("/stats", headers={"authorization": "Bearer s3cret-admin"})
        assert api.status_code == 429 and api.json()["error"] == "too_many_requests"

        # Another address is not held up by this one's guesses; its own wrong Bearer tokens count too.
        elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        base = f"http://127.0.0.1:{runtime.admin_port}"
        async with httpx.AsyncClient(transport=elsewhere, base_url=base, timeout=30) as other:
            assert (await other.post("/ui/login", data={"token": "s3cret-admin"})).status_code == 303
            other.cookies.clear()
            statuses = [(await other.get("/stats", headers=bearer("guess"))).status_code for _ in range(6)]
            assert statuses == [401] * 5 + [429]


def bearer(token: str) -> dict[str, Any]:
    return {"authorization": f"Bearer {token}"}
