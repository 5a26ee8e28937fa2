"""The merged lists: each kind's catalog, built from every target's list (each target keeps its own
lists cached, protocols/mcp/list_cache.py), and the paging of the merged result."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError

from federation.catalog import Catalog, Kind, Naming, build_catalog
from protocols.mcp.errors import UpstreamError
from protocols.mcp.upstream import Upstream

logger = logging.getLogger("agentplex.federation")

LIST_METHODS: dict[Kind, str] = {
    "tool": "tools/list",
    "prompt": "prompts/list",
    "resource": "resources/list",
    "template": "resources/templates/list",
}
CAPABILITY: dict[Kind, str] = {"tool": "tools", "prompt": "prompts", "resource": "resources", "template": "resources"}


class Catalogs:
    """Each kind's catalog, rebuilt from the targets' lists; while every target's list is the same
    (cached) list, so is the catalog."""

    def __init__(self, naming: Naming, failure_mode: str) -> None:
        self.naming = naming
        self.failure_mode = failure_mode
        self.current: dict[Kind, Catalog] = {kind: Catalog(kind) for kind in LIST_METHODS}
        # Last good list of each target: a target that is down keeps routing (to a clear "unavailable"
        # error) instead of its tools turning into "unknown tool" while it restarts.
        self._known: dict[Kind, dict[str, list[Any]]] = {kind: {} for kind in LIST_METHODS}
        self._built: dict[Kind, tuple[Any, Catalog, Any]] = {}  # the last catalog built, and from which lists
        self._reported: set[str] = set()

    def forget(self, kind: Kind, target: str) -> None:
        """A target said its list of `kind` changed: its last good list no longer stands in for it."""
        self._known[kind].pop(target, None)

    async def refresh(self, kind: Kind, upstreams: Iterable[Upstream]) -> Catalog:
        """Ask every target (on the given connections) for its list of `kind`, and build that kind's catalog."""
        method = LIST_METHODS[kind]
        results: dict[str, list[Any]] = {}
        failures: dict[str, str] = {}

        async def fetch(up: Upstream) -> None:
            try:
                session = await up.session()
                if getattr(session.server_capabilities, CAPABILITY[kind], None) is None:
                    results[up.spec.name] = []
                    return
                results[up.spec.name] = await up.list_all(method)
            except MCPError as exc:
                failures[up.spec.name] = exc.message

        async with anyio.create_task_group() as tg:
            for upstream in upstreams:
                tg.start_soon(fetch, upstream)
        if failures and (self.failure_mode == "failClosed" or not results):
            name = sorted(failures)[0]
            raise UpstreamError(name, f"could not list {kind}s: {failures[name]}")
        for name, problem in failures.items():
            logger.warning("listing %ss without target %s (failOpen): %s", kind, name, problem)
        known = self._known[kind]
        known.update(results)
        # Lists come from the targets' caches: while every one is the same list, so is the catalog.
        snapshot = (tuple((name, id(items)) for name, items in sorted(known.items())), frozenset(failures))
        built = self._built.get(kind)
        if built is not None and built[0] == snapshot:
            self.current[kind] = built[1]
            return built[1]
        catalog = build_catalog(kind, self.naming, known)
        catalog.unavailable = set(failures)
        for problem in catalog.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                logger.warning("catalog: %s", problem)
        self.current[kind] = catalog
        self._built[kind] = (snapshot, catalog, known.copy())  # the copy keeps each list (and its id) alive
        return catalog


async def survey(
    upstreams: Iterable[Upstream], naming: Naming, timeout: float, kinds: Sequence[Kind]
) -> tuple[dict[Kind, Catalog], dict[str, str]]:
    """Every kind (of `kinds`), listed now from every (shared) target, for operators: the catalogs as
    they would be built, and the targets that could not be listed with why. Changes nothing the clients see."""
    listed: dict[Kind, dict[str, list[Any]]] = {kind: {} for kind in kinds}
    failures: dict[str, str] = {}

    async def survey_one(up: Upstream) -> None:
        try:
            with anyio.fail_after(timeout):
                session = await up.session()
                for kind in kinds:
                    if getattr(session.server_capabilities, CAPABILITY[kind], None) is not None:
                        listed[kind][up.spec.name] = await up.list_all(LIST_METHODS[kind])
        except MCPError as exc:
            failures[up.spec.name] = exc.message
        except TimeoutError:
            failures[up.spec.name] = f"target '{up.spec.name}' gave no list within {timeout:g}s"

    async with anyio.create_task_group() as tg:
        for upstream in upstreams:
            tg.start_soon(survey_one, upstream)
    catalogs = {kind: build_catalog(kind, naming, listed[kind]) for kind in kinds}
    return catalogs, failures


def fingerprint(catalog: Catalog) -> list[Any]:
    return [item.model_dump(mode="json", exclude_none=True) for item in catalog.items()]


PAGE_SIZE = 200


def page(items: list[Any], cursor: str | None, method: str) -> tuple[list[Any], str | None]:
    """One page of a merged list. The cursor carries the offset and a digest of the names, so a list
    that changed between pages is refused (the client lists again) rather than skipping items."""
    found = try_page(items, cursor)
    if found is None:
        raise MCPError(types.INVALID_PARAMS, f"Invalid cursor for {method}: the list changed; list again")
    return found


def try_page(items: list[Any], cursor: str | None) -> tuple[list[Any], str | None] | None:
    """`page`, or None when the cursor is not one of this list's."""
    digest = hashlib.sha256("\n".join(_exposed(item) for item in items).encode()).hexdigest()[:12]
    start = 0
    if cursor:
        offset, _, seen = cursor.partition(".")
        if not offset.isdigit() or seen != digest:
            return None
        start = int(offset)
    end = start + PAGE_SIZE
    return items[start:end], (f"{end}.{digest}" if end < len(items) else None)


def _exposed(item: Any) -> str:
    return str(getattr(item, "name", None) or getattr(item, "uri", None) or getattr(item, "uri_template", ""))
