"""Building blocks shared by the config models: a strict base model, field types and validators."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, PydanticKnownError, core_schema

from .errors import PROBLEM_AT
from .units import parse_byte_size, parse_duration

_NAME = re.compile(r"[A-Za-z0-9._-]+")


class _CaseInsensitive:
    """Let 'FailOpen' or 'ALWAYS' match the canonical spelling of a Literal."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        canonical = {str(value).lower(): value for value in get_args(source)}

        def fold(value: Any) -> Any:
            return canonical.get(value.lower(), value) if isinstance(value, str) else value

        return core_schema.no_info_before_validator_function(fold, handler(source))


_CI = _CaseInsensitive()


def _reject_bool(value: Any) -> Any:
    # YAML `port: yes` should not quietly become port 1.
    if isinstance(value, bool):
        raise PydanticKnownError("int_type")
    return value


def _name(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r} (expected only letters, digits, '.', '_' and '-')")
    return value


def _separator(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid separator {value!r} (expected only letters, digits, '.', '_' and '-')")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"invalid path {value!r} (must start with '/')")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid URL {value!r} (expected an http:// or https:// URL)")
    return value


def host_url(value: str) -> str:
    """A backend `host`: `127.0.0.1:9100` or `http://127.0.0.1:9100/base`, kept as a URL."""
    return _http_url(value if "://" in value else f"http://{value}")


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _problem_at(subpath: tuple[str | int, ...], message: str) -> PydanticCustomError:
    """An error reported at a key below the model being validated."""
    return PydanticCustomError(PROBLEM_AT, "{message}", {"message": message, "subpath": subpath})


Name = Annotated[str, AfterValidator(_name)]
# Port 0 asks the OS for a free port (tests, ephemeral gateways).
Port = Annotated[int, BeforeValidator(_reject_bool), Field(ge=0, le=65535)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_kind: ClassVar[str] = "key"  # noun used in "unknown <key_kind>" errors


def _file_or_inline(value: Any) -> Any:
    """The reference's FileOrInline: a string, or `{file: path}` read now (relative to the working directory)."""
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        try:
            with open(value["file"], encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {value['file']!r}: {exc.strerror or exc}") from None
    if isinstance(value, dict):
        raise ValueError("expected a string or {file: <path>}")
    return value
