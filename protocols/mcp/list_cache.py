"""The lists an upstream session answered, kept until they may have changed.

A list is kept until the target says it changed (`notifications/*/list_changed`, or a 2026-07-28
`subscriptions/listen` event), until the session is replaced (a restart may bring other tools), or
until its time is up: the target's own `ttlMs` when it gives one (2026-07-28 cache hints; `0` keeps
nothing), else `LISTED_TTL` when the target promises to tell of changes and `UNLISTED_TTL` when it
does not. Lists are kept per credential set sent to the target (a `private` list is never shown to
another authorization context; none is, since a passthrough target may list differently per caller).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

LISTED_TTL = 300.0  # seconds: a safety net for targets that announce list changes
UNLISTED_TTL = 5.0  # seconds: targets that never announce changes are asked again this often
MAX_KEYS = 256  # credential sets kept per method (passthrough targets: one per caller)

CHANGED: dict[str, tuple[str, ...]] = {
    "notifications/tools/list_changed": ("tools/list",),
    "notifications/prompts/list_changed": ("prompts/list",),
    "notifications/resources/list_changed": ("resources/list", "resources/templates/list"),
}
CAPABILITY = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources"}
CAPABILITY["resources/templates/list"] = "resources"


class SharedLists(Protocol):
    """Where a target's lists are kept for other gateway replicas too (gateway/cluster.py), so one of them
    asks the target and the others reuse the answer. Only for the connection whose lists every client
    sees (a route's shared connection, without credentials). Failures are the store's to log: lists
    then come from the target, as without it."""

    async def get(self, method: str, key: str | None) -> tuple[list[Any], float] | None:
        """The items and the seconds they may still be kept, or None."""
        ...

    async def put(self, method: str, key: str | None, items: list[Any], ttl: float) -> None: ...

    async def changed(self, notification: str) -> None:
        """The target sent `notification` (a `*/list_changed`): drop those lists everywhere, tell the other replicas."""
        ...


class ListCache:
    def __init__(self) -> None:
        self._lists: OrderedDict[tuple[str, str | None], tuple[float, list[Any]]] = OrderedDict()

    def get(self, method: str, key: str | None) -> list[Any] | None:
        found = self._lists.get((method, key))
        if found is None:
            return None
        expires, items = found
        if time.monotonic() >= expires:
            del self._lists[(method, key)]
            return None
        self._lists.move_to_end((method, key))
        return items

    def put(self, method: str, key: str | None, items: list[Any], ttl: float) -> None:
        if ttl <= 0:
            return
        self._lists[(method, key)] = (time.monotonic() + ttl, items)
        self._lists.move_to_end((method, key))
        if len(self._lists) > MAX_KEYS * len(CAPABILITY):
            self._lists.popitem(last=False)

    def forget(self, methods: tuple[str, ...] | None = None) -> None:
        """Drop the lists of `methods` (all when None) for every credential set."""
        for cached in [k for k in self._lists if methods is None or k[0] in methods]:
            del self._lists[cached]


def ttl_of(first_page: Any, capabilities: Any, method: str) -> float:
    """How long a list may be kept: the target's `ttlMs` if it set one, else by whether it announces changes."""
    if "ttl_ms" in getattr(first_page, "model_fields_set", ()):
        return first_page.ttl_ms / 1000
    capability = getattr(capabilities, CAPABILITY[method], None)
    announces = bool(getattr(capability, "list_changed", False))
    return LISTED_TTL if announces else UNLISTED_TTL
