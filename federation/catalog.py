"""The federated catalog: exposed names <-> (target, original name), built from every target's lists.

A reversible map, never a string split: a target or tool whose name contains the separator still
routes, because lookups go through the dictionaries built here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

Kind = Literal["tool", "prompt", "resource", "template"]
PrefixMode = Literal["conditional", "always", "never"]

NAME_LIMIT = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
UI_SCHEME = "ui://"  # MCP Apps (io.modelcontextprotocol/ui): a tool's UI is a resource at a ui:// URI
UI_META = "ui"  # a tool's `_meta.ui.resourceUri` names its UI
UI_FLAT_META = "ui/resourceUri"  # the deprecated flat form, which SDKs still send alongside


@dataclass(frozen=True, slots=True)
class Entry:
    """One exposed item: where it lives and what the upstream calls it."""

    target: str
    original: str
    item: Any  # the upstream's Tool / Prompt / Resource / ResourceTemplate, renamed for exposure


@dataclass(frozen=True)
class Naming:
    """How exposed names are formed for one federation."""

    targets: tuple[str, ...]
    prefix_mode: PrefixMode = "conditional"
    separator: str = "_"

    @property
    def prefixed(self) -> bool:
        return self.prefix_mode == "always" or (self.prefix_mode == "conditional" and len(self.targets) > 1)

    def name(self, target: str, original: str) -> str:
        return f"{target}{self.separator}{original}" if self.prefixed else original

    def uri(self, target: str, original: str) -> str:
        """Resource URIs with a scheme get `<target>+`; others are left as they are. An MCP Apps `ui://`
        URI carries the target in its authority (`ui://<target>+<rest>`), so hosts still see a `ui://` URI
        (as the reference writes it)."""
        if not self.prefixed:
            return original
        if original[: len(UI_SCHEME)].lower() == UI_SCHEME:
            return f"{UI_SCHEME}{target}+{original[len(UI_SCHEME) :]}"
        if _SCHEME_RE.match(original):
            return f"{target}+{original}"
        return original

    def split_uri(self, uri: str) -> tuple[str, str] | None:
        """(target, original uri) for a prefixed URI; None when it carries no known target."""
        if not self.prefixed:
            return None
        if uri[: len(UI_SCHEME)].lower() == UI_SCHEME:
            rest = uri[len(UI_SCHEME) :]
            authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
            target, plus, _ = authority.partition("+")
            if plus and target in self.targets:
                return target, UI_SCHEME + rest[len(target) + 1 :]
            return None
        target, plus, rest = uri.partition("+")
        if plus and target in self.targets and rest:
            return target, rest
        return None


@dataclass
class Catalog:
    """The exposed items of one kind, in target order, plus the problems found building them."""

    kind: Kind
    entries: dict[str, Entry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unavailable: set[str] = field(default_factory=set)  # targets that failed the last listing (failOpen)

    def get(self, exposed: str) -> Entry | None:
        return self.entries.get(exposed)

    def items(self) -> list[Any]:
        """What a client is shown: every entry of the targets that answered the last listing."""
        return [entry.item for entry in self.entries.values() if entry.target not in self.unavailable]


def build_catalog(kind: Kind, naming: Naming, per_target: Mapping[str, Iterable[Any]]) -> Catalog:
    """Merge each target's items under exposed names, reporting collisions and over-long names.

    The first target (in configuration order) keeps a colliding name; the other is left out
    and reported, so a call never reaches a server the caller did not mean.
    """
    catalog = Catalog(kind)
    owners: dict[str, str] = {}
    for target in naming.targets:
        for item in per_target.get(target, ()):
            original = _key(kind, item)
            exposed = (
                naming.uri(target, original) if kind in ("resource", "template") else naming.name(target, original)
            )
            if kind in ("tool", "prompt") and not _NAME_RE.match(exposed):
                catalog.problems.append(
                    f"{kind} '{original}' of target '{target}' is exposed as '{exposed}', which is "
                    f"{'longer than 128 characters' if len(exposed) > NAME_LIMIT else 'not a valid name'}; left out"
                )
                continue
            if exposed in catalog.entries:
                catalog.problems.append(
                    f"{kind} '{exposed}' of target '{target}' collides with the one of target "
                    f"'{owners[exposed]}'; the latter is kept"
                )
                continue
            owners[exposed] = target
            renamed = _rename(kind, item, exposed)
            catalog.entries[exposed] = Entry(target, original, _app_uris(renamed, naming, target) if kind == "tool" else renamed)
    return catalog


def match_template(catalog: Catalog, uri: str) -> Entry | None:
    """The template entry whose exposed URI template matches `uri`, if any."""
    for exposed, entry in catalog.entries.items():
        try:
            if UriTemplate.parse(exposed).match(uri) is not None:
                return entry
        except InvalidUriTemplate:
            continue
    return None


def ui_uris(tool: Any) -> list[str]:
    """The `ui://` URIs a tool's `_meta` names as its UI (MCP Apps), in either form."""
    meta = tool.meta or {}
    ui = meta.get(UI_META)
    found = [ui.get("resourceUri")] if isinstance(ui, dict) else []
    found.append(meta.get(UI_FLAT_META))
    return [uri for uri in found if isinstance(uri, str)]


def _app_uris(tool: Any, naming: Naming, target: str) -> Any:
    """A tool whose `_meta` names its UI names it as exposed (`ui://<target>+...`), so a host can read it."""
    if not naming.prefixed or not ui_uris(tool):
        return tool
    meta = dict(tool.meta)
    ui = meta.get(UI_META)
    if isinstance(ui, dict) and isinstance(ui.get("resourceUri"), str):
        meta[UI_META] = {**ui, "resourceUri": naming.uri(target, ui["resourceUri"])}
    if isinstance(meta.get(UI_FLAT_META), str):
        meta[UI_FLAT_META] = naming.uri(target, meta[UI_FLAT_META])
    return tool.model_copy(update={"meta": meta})


def without_ui(tool: Any, denied: set[str]) -> Any:
    """The tool without the `_meta` entries that name a UI the caller may not read (the reference strips
    them too: a host would show a UI whose resources/read then fails)."""
    meta = dict(tool.meta or {})
    ui = meta.get(UI_META)
    if isinstance(ui, dict) and ui.get("resourceUri") in denied:
        del meta[UI_META]
    if meta.get(UI_FLAT_META) in denied:
        del meta[UI_FLAT_META]
    return tool.model_copy(update={"meta": meta or None})


def _key(kind: Kind, item: Any) -> str:
    if kind == "resource":
        return str(item.uri)
    if kind == "template":
        return str(item.uri_template)
    return str(item.name)


def _rename(kind: Kind, item: Any, exposed: str) -> Any:
    if kind == "resource":
        return item if str(item.uri) == exposed else item.model_copy(update={"uri": exposed})
    if kind == "template":
        return item if item.uri_template == exposed else item.model_copy(update={"uri_template": exposed})
    return item if item.name == exposed else item.model_copy(update={"name": exposed})
