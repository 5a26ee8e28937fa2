"""Config models; field names are the camelCase YAML keys of agentgateway's local config."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    model_validator,
)
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


class TimeoutPolicy(_Model):
    requestTimeout: Duration | None = None
    backendRequestTimeout: Duration | None = None


class Policies(_Model):
    key_kind: ClassVar[str] = "policy"

    timeout: TimeoutPolicy | None = None


class StdioTarget(_Model):
    # `env: {DEBUG: 1}` and `args: [--port, 8080]` are common; numbers become strings.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    cmd: Annotated[str, AfterValidator(_non_empty)]
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class HttpTarget(_Model):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    host: Annotated[str, AfterValidator(_http_url)]
    headers: dict[str, str] = Field(default_factory=dict)


TRANSPORTS = ("stdio", "mcp", "sse")


class Target(_Model):
    name: Name
    stdio: StdioTarget | None = None
    mcp: HttpTarget | None = None
    sse: HttpTarget | None = None
    era: Annotated[Literal["handshake", "modern", "auto"], _CI] = "handshake"
    # agentplex extension: one upstream session (stdio: one process) per client session, or one for all.
    sharing: Annotated[Literal["session", "shared"], _CI] = "session"

    @model_validator(mode="after")
    def _one_transport(self) -> Target:
        found = [kind for kind in TRANSPORTS if getattr(self, kind) is not None]
        if len(found) != 1:
            detail = "found " + " and ".join(found) if found else "found none"
            raise ValueError(f"expected exactly one of: {', '.join(TRANSPORTS)} ({detail})")
        return self

    @property
    def kind(self) -> Literal["stdio", "mcp", "sse"]:
        """Which transport this target uses."""
        if self.stdio is not None:
            return "stdio"
        return "mcp" if self.mcp is not None else "sse"


class McpBackend(_Model):
    targets: list[Target] = Field(min_length=1)
    prefixMode: Annotated[Literal["conditional", "always", "never"], _CI] = "conditional"
    statefulMode: Annotated[Literal["stateful", "stateless"], _CI] = "stateful"
    failureMode: Annotated[Literal["failClosed", "failOpen"], _CI] = "failClosed"
    separator: Annotated[str, AfterValidator(_separator)] = "_"
    maxRequestBodySize: ByteSize = 4 * 1024 * 1024
    sessionIdleTimeout: Duration = 1800.0  # agentplex extension: idle client sessions (and theirs upstream) end
    policies: Policies | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> McpBackend:
        seen: set[str] = set()
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise _problem_at(("targets", index, "name"), f"duplicate target name {target.name!r}")
            seen.add(target.name)
        return self


class McpShort(McpBackend):
    """The one-endpoint shape: `mcp:` at the top level instead of binds/listeners/routes."""

    port: Port = 3000
    address: str = "127.0.0.1"
    path: AbsolutePath = "/mcp"


class PathMatch(_Model):
    exact: AbsolutePath | None = None
    pathPrefix: AbsolutePath | None = None
    regex: Annotated[str, AfterValidator(_regex)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PathMatch:
        if sum(value is not None for value in (self.exact, self.pathPrefix, self.regex)) != 1:
            raise ValueError("expected exactly one of: exact, pathPrefix, regex")
        return self


class Match(_Model):
    path: PathMatch | None = None
    method: str | None = None


class Backend(_Model):
    mcp: McpBackend


class Route(_Model):
    name: str | None = None
    matches: list[Match] = Field(default_factory=list)  # empty matches every path
    policies: Policies | None = None
    backends: list[Backend] = Field(min_length=1)


class Listener(_Model):
    name: str | None = None
    hostname: str | None = None
    protocol: Annotated[Literal["HTTP"], _CI] = "HTTP"
    routes: list[Route] = Field(min_length=1)


class Bind(_Model):
    port: Port
    address: str = "127.0.0.1"
    listeners: list[Listener] = Field(min_length=1)


class LoggingSettings(_Model):
    level: Annotated[Literal["debug", "info", "warning", "error"], _CI] = "info"
    format: Annotated[Literal["text", "json"], _CI] = "text"


class GlobalSettings(_Model):
    adminAddr: str = "127.0.0.1:15000"
    statsAddr: str = "127.0.0.1:15020"
    logging: LoggingSettings = Field(default_factory=LoggingSettings)


class Config(_Model):
    config: GlobalSettings = Field(default_factory=GlobalSettings)
    mcp: McpShort | None = None
    binds: list[Bind] = Field(default_factory=list)

    _source: str = PrivateAttr(default="<string>")

    @property
    def source(self) -> str:
        """Where this config came from: a file path or '<string>'."""
        return self._source

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.mcp is None and not self.binds:
            raise ValueError("expected a 'mcp:' block or a 'binds:' list")
        owners: dict[int, str] = {} if self.mcp is None else {self.mcp.port: "mcp.port"}
        for index, bind in enumerate(self.binds):
            if bind.port in owners and bind.port != 0:
                raise _problem_at(("binds", index, "port"), f"port {bind.port} is already used by {owners[bind.port]}")
            owners[bind.port] = f"binds[{index}].port"
        return self
