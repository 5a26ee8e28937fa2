"""`${VAR}` / `${VAR:-default}` expansion in string values, so secrets and ports can come from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import Loc, Problem

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_env(data: Any, environ: Mapping[str, str] | None = None) -> tuple[Any, list[Problem]]:
    """Expand references in every string value (never in keys); unresolvable ones stay as written and are reported."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def expand(text: str, loc: Loc) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            body, closed = match.group(1), match.group(2)
            if not closed:
                problems.append((loc, f"unterminated '${{' in {text!r} (write '$${{' for a literal '${{')"))
                return match.group(0)
            name, has_default, default = body.partition(":-")
            if not _NAME.fullmatch(name):
                problems.append((loc, f"invalid environment variable reference '${{{body}}}'"))
                return match.group(0)
            current = env.get(name)
            if has_default and not current:
                return default
            if current is None:
                problems.append((loc, f"environment variable {name!r} is not set"))
                return match.group(0)
            return current

        return _REFERENCE.sub(replace, text)

    def walk(value: Any, loc: Loc) -> Any:
        if isinstance(value, str):
            return expand(value, loc)
        if isinstance(value, dict):
            return {key: walk(item, (*loc, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    return walk(data, ()), problems
