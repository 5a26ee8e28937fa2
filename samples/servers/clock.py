"""Quick-start sample: a tiny stdio MCP server that tells the time (`python -m samples.servers.clock`)."""

import signal
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("clock", instructions="Current time in any IANA timezone, and time arithmetic.", log_level="WARNING")


@mcp.tool()
def now(timezone: str = "UTC") -> str:
    """Return the current time in an IANA timezone (e.g. 'Europe/Paris') as ISO 8601."""
    try:
        tz = UTC if timezone.upper() == "UTC" else ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolError(f"Unknown timezone {timezone!r}: use an IANA name such as 'UTC' or 'America/New_York'") from exc
    return datetime.now(tz).isoformat(timespec="seconds")


@mcp.tool()
def add_minutes(iso: str, minutes: int) -> str:
    """Add minutes (may be negative) to an ISO 8601 timestamp and return the new timestamp."""
    try:
        start = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise ToolError(f"Not an ISO 8601 timestamp: {iso!r}") from exc
    return (start + timedelta(minutes=minutes)).isoformat()


def main() -> None:
    """Serve on stdio until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: die at once (the SDK's stdin reader thread blocks)
    mcp.run("stdio")


if __name__ == "__main__":
    main()
