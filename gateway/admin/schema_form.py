"""A tool's input schema as form fields for the playground: one field per top-level property.

Scalars get native inputs (text, number, checkbox, a select for an enum or an optional boolean);
anything else (objects, arrays, unions of several types) is a JSON text area. A schema whose arguments
are not all named properties ($ref, allOf/anyOf/oneOf, additionalProperties, patternProperties) also
gets one JSON text area for the arguments as a whole, so every schema can still be called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SCALARS = {"string", "integer", "number", "boolean"}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # string, integer, number, boolean, enum or json: how the page reads the value back
    required: bool
    title: str
    description: str
    default: str  # the field's initial text ("" when the schema gives none)
    options: tuple[str, ...] = ()  # enum values, JSON-encoded


def form_fields(schema: Any) -> list[Field]:
    if not isinstance(schema, dict):
        return []
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    listed = schema.get("required")
    required = {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()
    return [_field(name, prop if isinstance(prop, dict) else {}, name in required) for name, prop in properties.items()]


def takes_more(schema: Any) -> bool:
    """Whether the arguments may hold more than the named properties the fields cover."""
    if not isinstance(schema, dict):
        return False
    if any(key in schema for key in ("$ref", "allOf", "anyOf", "oneOf", "patternProperties")):
        return True
    extra = schema.get("additionalProperties")
    return extra is True or (isinstance(extra, dict) and extra != {"not": {}})


def _field(name: str, prop: dict[str, Any], required: bool) -> Field:
    kind = _kind(prop)
    options: tuple[str, ...] = ()
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        kind, options = "enum", tuple(json.dumps(value) for value in enum)
    elif kind == "boolean" and not required:  # unchecked must be able to mean "not sent", not false
        kind, options = "enum", ("true", "false")
    default = ""
    value = prop.get("default")
    if value is not None:  # a null default: left empty, so not sent
        if kind == "boolean":
            default = "true" if value is True else ""
        elif kind in ("enum", "json") or not isinstance(value, str | int | float):
            default = json.dumps(value)
        else:
            default = str(value)
    return Field(
        name=name,
        kind=kind,
        required=required,
        title=str(prop.get("title") or name),
        description=str(prop.get("description") or ""),
        default=default,
        options=options,
    )


def _kind(prop: dict[str, Any]) -> str:
    """The one scalar type a property takes (null aside: an optional field left empty is not sent)."""
    types = prop.get("type")
    if isinstance(types, str):
        types = [types]
    if types is None and isinstance(prop.get("anyOf"), list):  # pydantic's `X | None`
        types = [branch.get("type") for branch in prop["anyOf"] if isinstance(branch, dict)]
    if not isinstance(types, list):
        return "json"
    kinds = [t for t in types if t != "null"]
    return kinds[0] if len(kinds) == 1 and kinds[0] in SCALARS else "json"
