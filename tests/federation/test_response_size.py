"""maxResponseBodySize: an upstream answer past the limit is refused while it is read, never held whole.

The target is named in the error, the session it came on goes on working, and so does everyone else's.
Upstreams: the test upstream (SSE or JSON answers, legacy SSE, stdio) and a small server that streams
a JSON body without a Content-Length, so its size shows only while reading.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio

LIMIT = "1MiB"
BIG = 3 * 1024 * 1024
MODES = ["legacy", "2026-07-28"]  # legacy: tools/call takes the raw relay to streamable-HTTP targets


@contextlib.asynccontextmanager
async def chunked_json_upstream() -> AsyncIterator[str]:
    """A handshake-era MCP server whose `blob` answers are chunked JSON bodies (no Content-Length)."""

    async def mcp(request: Request) -> Response:
        message = json.loads(await request.body())
        headers = {"mcp-session-id": "s1"}
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            return Response(status_code=202)
        if method == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "raw", "version": "0"}}
        elif method == "tools/list":
            result = {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in ("blob", "bomb")]}
        elif method == "tools/call" and message["params"]["name"] == "bomb":  # gzip, though never offered
            text = "x" * message["params"]["arguments"]["size"]
            answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}]}}
            body = gzip.compress(json.dumps(answer).encode())
            return Response(body, media_type="application/json", headers={**headers, "content-encoding": "gzip"})
        elif method == "tools/call":
            size = message["params"]["arguments"]["size"]

            async def body() -> AsyncIterator[bytes]:
                yield b'{"jsonrpc": "2.0", "id": ' + json.dumps(request_id).encode() + b', "result": {"content": [{"type": "text", "text": "'
                for _ in range(size // 65536):
                    yield b"x" * 65536
                yield b"x" * (size % 65536) + b'"}]}}'

            return StreamingResponse(body(), media_type="application/json", headers=headers)
        else:
            result = {}
        return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result}, headers=headers)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/mcp", mcp, methods=["POST"])]), port=port, log_level="warning")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True


@contextlib.asynccontextmanager
async def target_url(upstream: Any, kind: str) -> AsyncIterator[str]:
    if kind == "stdio":
        yield ""
        return
    if kind == "chunked json":
        async with chunked_json_upstream() as url:
            yield url
        return
    yield {
        "sse answers": lambda: upstream("big", "mcp"),
        "json answers": lambda: upstream("big", "mcp", "--json-response"),
        "legacy sse": lambda: upstream("big", "sse"),
    }[kind]()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["sse answers", "json answers", "legacy sse", "chunked json", "stdio"])
async def test_an_answer_past_max_response_body_size_is_refused_naming_the_target(
    upstream: Any, kind: str, mode: str
) -> None:
    async with target_url(upstream, kind) as url:
        target = stdio_target("big") if kind == "stdio" else http_target("big", url, "sse" if kind == "legacy sse" else "mcp")
        async with (
            run_gateway(mcp_yaml(target, maxResponseBodySize=LIMIT)) as gw,
            Client(gw.url, mode=mode, cache=None) as client,
            Client(gw.url, mode=mode, cache=None) as bystander,
        ):
            await client.list_tools()
            with pytest.raises(MCPError) as refused:
                await client.session.call_tool("blob", {"size": BIG})
            assert "target 'big'" in refused.value.message and "maxResponseBodySize" in refused.value.message
            assert "1 MiB" in refused.value.message
            # The same session, and another one, are served as before.
            assert len((await client.call_tool("blob", {"size": 1000})).content[0].text) == 1000
            assert len((await bystander.call_tool("blob", {"size": 2000})).content[0].text) == 2000


@pytest.mark.parametrize("mode", MODES)
async def test_a_compressed_answer_is_not_inflated_past_the_limit(mode: str) -> None:
    async with (
        chunked_json_upstream() as url,
        run_gateway(mcp_yaml(http_target("big", url), maxResponseBodySize=LIMIT)) as gw,
        Client(gw.url, mode=mode, cache=None) as client,
    ):
        await client.list_tools()
        with pytest.raises(MCPError) as refused:  # 3 MiB of JSON in 3 KiB of gzip: left compressed, it does not parse
            await client.session.call_tool("bomb", {"size": BIG})
        assert "big" in refused.value.message
        assert len((await client.call_tool("blob", {"size": 1000})).content[0].text) == 1000
