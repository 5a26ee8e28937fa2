"""The one door message-layer policy comes through: federation asks, the gateway's policies answer.

Federation knows nothing of JWTs, CEL or rate limits. It describes what a caller wants (`Access`)
and hands over the transport's request (`request`: the ASGI scope of the HTTP request that carried
the message, or None on stdio); a `Guard` decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from federation.catalog import Kind


@dataclass(frozen=True, slots=True)
class Access:
    """One thing a caller wants to see or use: a method, and the catalog item it names, if any.

    For A2A, `kind` is "agent", `method` the A2A method (`SendMessage`, `message/send`, ...), `name`
    the agent and `skill` the skill the message asks for, when that can be told.
    """

    method: str
    kind: Kind | Literal["agent"] | None = None
    name: str = ""  # exposed name (tools, prompts) or exposed URI / URI template (resources); agent name
    target: str = ""
    original: str = ""  # the name or URI at the target
    skill: str = ""


class Guard(Protocol):
    def visible(self, request: Any, access: Access) -> bool:
        """May this caller know the item exists? False hides it from lists and calls to it fail as unknown."""
        ...

    async def admit(self, request: Any, access: Access) -> None:
        """Called before serving a request; raises an MCPError (denied, rate limited) to refuse it."""
        ...


class OpenGuard:
    """No policy: everything visible, everything admitted."""

    def visible(self, request: Any, access: Access) -> bool:
        return True

    async def admit(self, request: Any, access: Access) -> None:
        return None
