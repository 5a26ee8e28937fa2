"""URLs as they may be shown: without the credentials a connection URL can carry."""

from __future__ import annotations

from urllib.parse import urlsplit


def redacted(url: str) -> str:
    """`redis://user:secret@host:6379/0` -> `redis://host:6379/0`, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}" if host else f"{parts.scheme}://{parts.path}"
    except ValueError:
        return "<url>"
