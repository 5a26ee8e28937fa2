"""What federation tells whoever watches it: one `Message` per downstream MCP request it served, and
each upstream call it makes for one (`upstream`: the gateway wraps it in a trace span).

Like the guard, the interface is federation's and the gateway implements it (metrics, access logs);
federation knows nothing of Prometheus or log formats. `request` is the transport's request, as
the guard gets it: the ASGI scope of the HTTP request that carried the message, or None on stdio.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

NOTHING: AbstractContextManager[None] = contextlib.nullcontext()  # reusable: what `upstream` returns when off
Outcome = Literal["ok", "error", "denied", "rate_limited"]


@dataclass(slots=True)
class Message:
    """One request served. `target` and `name` come from the catalog only (a name the catalog does not
    hold is left ""), so what a client writes never becomes a label or a log field by itself."""

    method: str
    target: str = ""
    name: str = ""
    outcome: Outcome = "ok"
    code: int | None = None  # the JSON-RPC error code, when the request failed
    seconds: float = 0.0

    def failed(self, code: int) -> None:
        """An error answer; a refusal already noted (denied, rate limited) keeps its outcome."""
        self.code = code
        if self.outcome == "ok":
            self.outcome = "error"

    def tool_failed(self) -> None:
        """A tools/call answered with `isError: true`: the tool failed, though the protocol did not (no code)."""
        if self.outcome == "ok":
            self.outcome = "error"


class Observer(Protocol):
    def message(self, request: Any, message: Message) -> None:
        """Called once a request has been answered; must be cheap and must not raise."""
        ...

    def upstream(self, request: Any, method: str, target: str, name: str) -> AbstractContextManager[None]:
        """Entered around one upstream call made for `request` (`name` from the catalog, or ""): the
        call's request is sent inside it. `NOTHING` when nobody watches; must not raise."""
        ...


class NoObserver:
    def message(self, request: Any, message: Message) -> None:
        return None

    def upstream(self, request: Any, method: str, target: str, name: str) -> AbstractContextManager[None]:
        return NOTHING
