"""The reversible catalog: exposed names, collisions, length limits, resource URIs."""

from __future__ import annotations

import mcp_types as types

from federation.catalog import Naming, build_catalog, match_template


def tool(name: str) -> types.Tool:
    return types.Tool(name=name, input_schema={"type": "object"})


def test_prefixed_names_map_back_to_target_and_original() -> None:
    naming = Naming(("a_b", "a"), "conditional", "_")
    catalog = build_catalog("tool", naming, {"a_b": [tool("c")], "a": [tool("b_c")]})
    # both expose as "a_b_c": a string split could not tell them apart; the catalog keeps the first
    assert catalog.get("a_b_c").target == "a_b"
    assert catalog.get("a_b_c").original == "c"
    assert len(catalog.problems) == 1 and "collides" in catalog.problems[0]


def test_conditional_prefix_only_with_several_targets() -> None:
    assert not Naming(("one",), "conditional").prefixed
    assert Naming(("one", "two"), "conditional").prefixed
    assert Naming(("one",), "always").prefixed
    assert not Naming(("one", "two"), "never").prefixed


def test_names_over_the_limit_are_reported_and_left_out() -> None:
    long_target = "t" * 120
    naming = Naming((long_target, "x"), "always", "_")
    catalog = build_catalog("tool", naming, {long_target: [tool("short"), tool("much_too_long")], "x": [tool("ok")]})
    assert f"{long_target}_short" in catalog.entries
    assert f"{long_target}_much_too_long" not in catalog.entries
    assert "x_ok" in catalog.entries
    assert any("longer than 128" in p for p in catalog.problems)


def test_resource_uris_get_target_plus_prefix_and_split_back() -> None:
    naming = Naming(("web", "files"), "conditional")
    res = types.Resource(uri="file:///etc/motd", name="motd")
    catalog = build_catalog("resource", naming, {"files": [res]})
    entry = catalog.get("files+file:///etc/motd")
    assert entry.original == "file:///etc/motd" and entry.item.uri == "files+file:///etc/motd"
    assert naming.split_uri("web+mem://x") == ("web", "mem://x")
    assert naming.split_uri("nobody+mem://x") is None


def test_templates_match_expanded_uris() -> None:
    naming = Naming(("web", "files"), "conditional")
    template = types.ResourceTemplate(uri_template="mem://item/{id}", name="item")
    catalog = build_catalog("template", naming, {"web": [template]})
    assert match_template(catalog, "web+mem://item/7").target == "web"
    assert match_template(catalog, "files+mem://item/7") is None
