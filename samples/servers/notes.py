"""Quick-start sample: in-memory notes over streamable HTTP at /mcp.

Run: python -m samples.servers.notes [--port 9001] [--host 127.0.0.1]
"""

import argparse
import contextlib
import signal
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError

mcp = MCPServer("notes", instructions="A scratchpad of titled text notes (kept in memory).", log_level="WARNING")
NOTES: dict[str, str] = {}


@mcp.tool()
def add_note(title: str, text: str) -> str:
    """Save a note under a title (replaces any note with the same title)."""
    NOTES[title] = text
    return f"Saved note {title!r} ({len(NOTES)} notes in total)"


@mcp.tool()
def list_notes() -> str:
    """List the titles of all notes, one per line."""
    return "\n".join(sorted(NOTES)) or "No notes yet."


@mcp.tool()
def read_note(title: str) -> str:
    """Return the text of the note with this title."""
    if title not in NOTES:
        raise ToolError(f"No note titled {title!r}; call list_notes to see the titles")
    return NOTES[title]


@mcp.resource("notes://{title}", name="note", description="A note, by title", mime_type="text/plain")
def note(title: str) -> str:
    """Return a note's text."""
    if title not in NOTES:
        raise ResourceNotFoundError(f"No note titled {title!r}")
    return NOTES[title]


@mcp.prompt()
def summarize_notes() -> str:
    """Ask the model to summarize every note."""
    body = "\n\n".join(f"## {title}\n{text}" for title, text in sorted(NOTES.items())) or "(there are no notes yet)"
    return f"Summarize these notes in a few bullet points:\n\n{body}"


def main() -> None:
    """Parse arguments and serve until SIGINT/SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM -> same clean shutdown as Ctrl-C
    parser = argparse.ArgumentParser(description="In-memory notes MCP server (streamable HTTP at /mcp)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    print(f"notes: serving http://{args.host}:{args.port}/mcp", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        mcp.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
