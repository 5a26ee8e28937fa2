"""ConfigError, plus turning pydantic errors into `<file>: <key.path>: <message>` lines people can act on."""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

# Custom pydantic error type whose ctx carries a sub-path, so a model validator can point below itself.
PROBLEM_AT = "agentplex_problem_at"


class ConfigError(Exception):
    """Every problem found in a config, so one run shows them all."""

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def format_loc(loc: Iterable[str | int]) -> str:
    """Render ('binds', 0, 'port') as 'binds[0].port', matching how people read YAML."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_problem(source: str, loc: Loc, message: str) -> str:
    path = format_loc(loc)
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"


def describe_value(value: Any) -> str:
    """Short description of a parsed YAML value for 'got ...' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def validation_problems(exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """Translate each pydantic error into (key path, human message)."""
    return [_translate(err, root) for err in exc.errors(include_url=False)]


def _translate(err: Any, root: type[BaseModel]) -> Problem:
    kind: str = err["type"]
    loc: Loc = tuple(err["loc"])
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")

    if kind == PROBLEM_AT:
        return (*loc, *ctx["subpath"]), ctx["message"]
    if kind == "missing":
        what = _describe_type(_resolve(root, loc))
        return loc, f"missing required key (expected {what})" if what else "missing required key"
    if kind == "extra_forbidden":
        parent = _resolve(root, loc[:-1])
        if isinstance(parent, type) and issubclass(parent, BaseModel):
            noun = getattr(parent, "key_kind", "key")
            return loc, f"unknown {noun} (expected one of: {', '.join(_keys(parent))})"
        return loc, "unknown key"
    if kind in ("literal_error", "enum"):
        choices = _literal_values(_resolve(root, loc))
        expected = ", ".join(map(str, choices)) if choices else ctx.get("expected", "?")
        return loc, f"invalid value {describe_value(value)} (expected one of: {expected})"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {describe_value(value)}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return loc, str(ctx["error"])
    if kind in ("too_short", "string_too_short"):
        size = ctx.get("min_length", 1)
        return loc, "must not be empty" if size == 1 else f"must have at least {size} items"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("greater than", "gt"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return loc, f"must be {words} {ctx.get(key)} (got {describe_value(value)})"
    return loc, err["msg"]


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that carries meaning."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _resolve(root: type[BaseModel], loc: Loc) -> Any:
    """Find the declared type at a key path, or None if the path leaves the schema."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(part, int) and origin is list:
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        elif isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for name, f in tp.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return None
            tp = field.annotation
        else:
            return None
    return _unwrap(tp)


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _literal_values(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) is Literal else ()


def _describe_type(tp: Any) -> str | None:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of: " + ", ".join(map(str, get_args(tp)))
    if origin is list:
        return "a list"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a mapping"
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return names.get(tp)
