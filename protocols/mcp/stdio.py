"""stdio front end: one MCP session on this process's stdin/stdout (for clients that spawn their server)."""

from __future__ import annotations

from typing import Any

from mcp.server import Server
from mcp.server.stdio import stdio_server


async def serve_stdio(server: Server[Any]) -> None:
    """Serve until stdin closes. The SDK points fd 1 at stderr meanwhile, so stray prints cannot
    corrupt the protocol stream."""
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
