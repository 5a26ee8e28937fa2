"""The playground's form fields from real tool input schemas (as the mcp SDK's MCPServer writes them)."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from gateway.admin.schema_form import Field, form_fields, takes_more
from tests.fixtures.typed_tools import build_server


def test_a_typed_tools_schema_becomes_native_inputs_and_json_for_the_rest() -> None:
    async def schema() -> dict[str, object]:
        async with Client(build_server()) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            return tools["configure"].input_schema

    fields = {field.name: field for field in form_fields(anyio.run(schema))}
    assert fields["mode"] == Field("mode", "enum", True, "Mode", "", "", ('"fast"', '"safe"'))
    assert (fields["verbose"].kind, fields["verbose"].required) == ("boolean", True)
    assert (fields["tags"].kind, fields["tags"].required) == ("json", True)  # an array: typed as JSON
    assert (fields["ratio"].kind, fields["ratio"].default, fields["ratio"].required) == ("number", "0.5", False)
    # `str | None = None`: a string input, empty (so not sent) rather than the text "null"
    assert (fields["note"].kind, fields["note"].default) == ("string", "")


@pytest.mark.parametrize(
    ("prop", "kind", "default"),
    [
        ({"type": "integer", "default": 3}, "integer", "3"),
        ({"type": ["string", "null"]}, "string", ""),
        ({"type": ["string", "integer"]}, "json", ""),  # a union the form cannot type: JSON
        ({"type": "object", "default": {"a": 1}}, "json", '{"a": 1}'),
        ({"type": "boolean", "default": True}, "enum", "true"),  # optional: not sent / true / false
        ({"anyOf": [{"type": "boolean"}, {"type": "null"}]}, "enum", ""),
        ({"enum": [1, 2], "default": 2}, "enum", "2"),
        ({}, "json", ""),  # no type at all
    ],
)
def test_property_kinds_and_defaults(prop: dict[str, object], kind: str, default: str) -> None:
    (field,) = form_fields({"type": "object", "properties": {"x": prop}})
    assert (field.kind, field.default, field.required) == (kind, default, False)


def test_schemas_without_properties_give_no_fields() -> None:
    assert form_fields({"type": "object"}) == []
    assert form_fields(None) == []
    assert form_fields({"properties": ["not", "a", "dict"]}) == []


def test_a_required_boolean_is_a_checkbox_and_an_optional_one_may_be_left_unsent() -> None:
    schema = {"properties": {"must": {"type": "boolean"}, "may": {"type": "boolean"}}, "required": ["must"]}
    must, may = form_fields(schema)
    assert (must.kind, must.required) == ("boolean", True)
    assert (may.kind, may.options, may.default) == ("enum", ("true", "false"), "")


def test_a_malformed_required_list_is_ignored_not_fatal() -> None:
    for required in ([{"x": 1}, "x"], "x", 5):
        (field,) = form_fields({"properties": {"x": {"type": "string"}}, "required": required})
        assert field.required is (required == [{"x": 1}, "x"])


@pytest.mark.parametrize(
    ("schema", "more"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, False),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}, False),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, True),
        ({"type": "object", "additionalProperties": True}, True),
        ({"type": "object", "$ref": "#/$defs/Args", "$defs": {"Args": {"type": "object"}}}, True),
        ({"oneOf": [{"type": "object"}, {"type": "object"}]}, True),
        ({"type": "object", "patternProperties": {"^x": {}}}, True),
    ],
)
def test_schemas_whose_arguments_the_fields_cannot_all_hold(schema: dict[str, object], more: bool) -> None:
    assert takes_more(schema) is more
