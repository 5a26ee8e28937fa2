"""URLs as they may be shown: without the credentials a connection URL can carry."""

from __future__ import annotations

from protocols.redaction import url as redacted

__all__ = ["redacted"]
