"""What the gateway's HTTP servers (uvicorn's httptools protocol under `ReadDeadlines`) hand an application
and answer on the wire, where llhttp on its own would differ from h11, which the servers ran before."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import uvicorn

from gateway.http_limits import ReadDeadlines, server_config

pytestmark = pytest.mark.anyio

HOST = b"host: 127.0.0.1\r\n"


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what it was given: method, path, headers (read after the body) and body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen = {
        "path": scope["path"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    out = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(echo, concurrency=16))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.01)
        yield sock.getsockname()[1]
        server.should_exit = True


async def exchange(port: int, *pieces: bytes, pause: float = 0.0) -> list[tuple[int, Any]]:
    """Send `pieces` (`pause` s apart) on one connection; the answers (status, JSON body or text) until
    the server closes it or goes quiet for a second more than the sending takes."""
    out = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:

        async def read() -> None:
            nonlocal out
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError, TimeoutError):
                while True:
                    with anyio.fail_after(1 + pause * len(pieces)):
                        out += await stream.receive()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with contextlib.suppress(anyio.BrokenResourceError, OSError):  # the server may close before the last
                for piece in pieces:
                    await stream.send(piece)
                    await anyio.sleep(pause)
    answers = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        body, out = rest[:length], rest[length:]
        try:
            answers.append((int(head.split()[1]), json.loads(body)))
        except ValueError:
            answers.append((int(head.split()[1]), body.decode()))
    return answers


async def test_trailer_fields_do_not_join_the_request_headers_and_values_lose_trailing_whitespace() -> None:
    async with serving() as port:
        chunked = b"POST / HTTP/1.1\r\n" + HOST + b"x-a: v \t\r\ntransfer-encoding: chunked\r\n\r\n"
        ((status, seen),) = await exchange(port, chunked + b"3\r\nabc\r\n0\r\nauthorization: Bearer x\r\n\r\n")
        assert status == 200 and seen["body"] == "abc"
        assert seen["headers"] == [["host", "127.0.0.1"], ["x-a", "v"], ["transfer-encoding", "chunked"]]


async def test_an_absolute_form_target_is_the_path_whole() -> None:
    async with serving() as port:
        ((status, seen),) = await exchange(port, b"GET http://evil.example/mcp?x HTTP/1.1\r\n" + HOST + b"\r\n")
        assert (status, seen["path"]) == (200, "http://evil.example/mcp")


async def test_an_upgrade_request_other_than_websocket_is_served_once_and_refused_with_a_body() -> None:
    upgrade = b"connection: upgrade\r\nupgrade: h2c\r\n"
    async with serving() as port:
        first = b"GET /1 HTTP/1.1\r\n" + HOST + upgrade + b"\r\n"
        answers = await exchange(port, first + b"GET /2 HTTP/1.1\r\n" + HOST + b"\r\n")
        assert [(status, seen["path"]) for status, seen in answers] == [(200, "/1")]  # then closed, not left hanging
        posted = b"POST / HTTP/1.1\r\n" + HOST + upgrade + b"content-length: 3\r\n\r\nabc"
        ((status, text),) = await exchange(port, posted)
        assert status == 400 and "cannot carry a body" in text


async def test_deadlines_and_the_head_size_limit_apply_to_every_request_on_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReadDeadlines, "head_timeout", 0.5)
    async with serving() as port:
        first = b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\n"
        answers = await exchange(port, first, b"GET /2 HTTP/1.1\r\n", HOST, HOST, HOST, pause=0.3)
        assert [status for status, _ in answers] == [200, 408]
        big = b"x-big: " + b"x" * 10_000
        answers = await exchange(port, first + b"GET /2 HTTP/1.1\r\n" + big, b"x" * 10_000, pause=0.1)
        assert [status for status, _ in answers] == [200, 400]
        assert "request head larger than 16384 bytes" in answers[1][1]
        # Pipelined whole: a head larger than the limit is parsed when it arrives complete (as in h11).
        whole = b"GET /3 HTTP/1.1\r\n" + HOST + big + b"x" * 10_000 + b"\r\n\r\n"
        answers = await exchange(port, first + whole)
        assert [(status, seen["path"]) for status, seen in answers] == [(200, "/1"), (200, "/3")]


async def test_a_body_sent_at_a_sane_rate_outlives_the_body_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReadDeadlines, "body_timeout", 0.5)
    monkeypatch.setattr(ReadDeadlines, "body_min_rate", 1000)  # 0.5 s, + 1 s per 1000 bytes
    async with serving() as port:
        head = b"POST / HTTP/1.1\r\n" + HOST + b"content-length: 4000\r\n\r\n"
        ((status, seen),) = await exchange(port, head, *[b"x" * 1000] * 4, pause=0.4)
        assert status == 200 and len(seen["body"]) == 4000
        answers = await exchange(port, head, *[b"x" * 10] * 4, pause=0.4)  # 10 bytes every 0.4 s: too slow
        assert answers == []
