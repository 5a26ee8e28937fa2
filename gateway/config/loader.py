"""Read a config file or string: parse YAML/JSON, expand env vars, validate, and collect every problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .env import expand_env
from .errors import ConfigError, Problem, describe_value, format_problem, validation_problems
from .models import Config

_EMPTY_HINT = "expected a 'mcp:' block, an 'a2a:' block, an 'llm:' block or a 'binds:' list"


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key; let the base class report it
                continue
            if duplicate:
                raise _DuplicateKey(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_config(path: str | Path) -> Config:
    """Load and validate a config file; raise ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: cannot read config: not valid UTF-8 (byte {exc.start})") from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate config text (YAML or JSON); `source` names it in error messages."""
    data = _parse(text, source)
    if data is None:
        raise ConfigError(f"{source}: config is empty ({_EMPTY_HINT})")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level ({_EMPTY_HINT}), got {describe_value(data)}")

    data, problems = expand_env(data)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A value with an unset variable also fails validation; its env problem already says why.
        reported = {loc for loc, _ in problems}
        problems += [problem for problem in validation_problems(exc, Config) if problem[0] not in reported]
    if problems or config is None:
        raise ConfigError(_format(source, problems))
    config._source = source
    return config


def _format(source: str, problems: list[Problem]) -> list[str]:
    return [format_problem(source, loc, message) for loc, message in problems]


def _parse(text: str, source: str) -> Any:
    if source.endswith(".json"):
        return _parse_json(text, source)
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        # PyYAML rejects tab-indented JSON, which is still valid config.
        if text.lstrip().startswith(("{", "[")):
            try:
                return _parse_json(text, source)
            except ConfigError:
                pass
        raise ConfigError(_yaml_problem(exc, source)) from None


def _parse_json(text: str, source: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise ConfigError(f"{source}: duplicate key {key!r}")
            result[key] = value
        return result

    if not text.strip():
        return None
    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}") from None


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        if isinstance(exc, _DuplicateKey):
            return f"{where}: {exc.problem}"
        return f"{where}: YAML syntax error: {exc.problem or exc.context}"
    return f"{source}: YAML syntax error: {exc}"
