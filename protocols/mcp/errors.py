"""The few errors the MCP layer raises, each mapping to one JSON-RPC error."""

from __future__ import annotations

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

# Implementation-defined JSON-RPC server error range (-32000..-32099).
UPSTREAM_UNAVAILABLE = -32003


class UpstreamError(MCPError):
    """A target could not answer: down, crashed, timed out. The message always names it."""

    def __init__(self, target: str, problem: str, code: int = UPSTREAM_UNAVAILABLE) -> None:
        super().__init__(code, f"target '{target}' {problem}", {"target": target})
        self.target = target


def unknown_name(kind: str, name: str) -> MCPError:
    """The error for a name that is not in the catalog (also what policy denials look like)."""
    return MCPError(INVALID_PARAMS, f"Unknown {kind}: {name}")
