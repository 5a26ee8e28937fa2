"""An OpenAPI target: a REST API's operations served as an in-process MCP server (a `memory` target), so
its tools get federation's naming, policies, limits and observation like any other target's.

A call is the operation's HTTP request (protocols/openapi.py) with the route's backendTLS, backendAuth
and timeout. A 2xx JSON answer is the result: its JSON as text and as structured content (the
reference sends both). Any other status is a tool error naming the status and quoting the body, so
the model sees what the API said (the reference answers a JSON-RPC error with the same words).
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from protocols import redaction
from protocols.mcp.upstream import RELAY_CALLER, UpstreamAuth
from protocols.openapi import Operation, http_call, structured

logger = logging.getLogger("agentplex.openapi")

MAX_ANSWER = 16 * 1024 * 1024  # bytes of one API answer read into a result
ERROR_BODY = 2048  # characters of an error answer quoted in the tool error


class OpenApiServer:
    """The MCP server for one OpenAPI target."""

    def __init__(
        self,
        name: str,
        base_url: str,
        prefix: str,
        ops: list[Operation],
        *,
        tls: ssl.SSLContext | None = None,
        auth: UpstreamAuth | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix
        self.ops = {op.name: op for op in ops}
        self.tools = [types.Tool.model_validate(op.tool) for op in ops]
        self.tls = tls
        self.auth = auth
        self.timeout = timeout
        self.client: httpx.AsyncClient | None = None
        self.server: Server[Any] = Server(
            f"openapi-{name}",
            version="0.1.0",
            lifespan=self._lifespan,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout or 10.0, 10.0))
        verify: ssl.SSLContext | bool = self.tls if self.tls is not None else True
        async with httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False, follow_redirects=False) as client:
            self.client = client
            try:
                yield {}
            finally:
                self.client = None

    async def _list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return types.ListToolsResult(tools=self.tools)

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        op = self.ops.get(params.name)
        if op is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        assert self.client is not None
        call = http_call(op, self.prefix, params.arguments or {})
        headers = dict(call.headers)
        caller = RELAY_CALLER.get()
        try:
            if self.auth is not None:
                headers.update(await self.auth.headers(caller))
            request = self.client.build_request(call.method, self.base_url + call.path, headers=headers, content=call.body)
            apply = getattr(self.auth, "apply", None)
            if apply is not None:
                await apply(caller, request)
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            return _error(f"the API did not answer {op.name} within {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return _error(f"the API could not be reached for {op.name}: {redaction.text(str(exc)) or type(exc).__name__}")
        except Exception as exc:  # backendAuth could not produce credentials
            return _error(f"backendAuth failed for {op.name}: {redaction.text(str(exc)) or type(exc).__name__}")
        try:
            body = await _read(response)
        finally:
            await response.aclose()
        if body is None:
            return _error(f"the API's answer to {op.name} is larger than {MAX_ANSWER} bytes")
        status = f"{response.status_code} {response.reason_phrase}".strip()
        if not response.is_success:
            text = body.decode("utf-8", "replace")[:ERROR_BODY]
            return _error(f"Upstream API call for tool '{op.name}' failed with status {status}: {text}")
        if not body.strip():
            return types.CallToolResult(content=[], structured_content=structured(None))
        try:
            answer = json.loads(body)
        except ValueError:  # not JSON: its text, as it came
            return types.CallToolResult(content=[types.TextContent(type="text", text=body.decode("utf-8", "replace"))])
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(answer))], structured_content=structured(answer)
        )


async def _read(response: httpx.Response) -> bytes | None:
    chunks = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
