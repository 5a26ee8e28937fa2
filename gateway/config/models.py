"""Config models; field names are the camelCase YAML keys of agentgateway's local config."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, PrivateAttr, model_validator

from protocols.mcp.session_seal import parse_key

from .a2a import A2aShort
from .ai import AiBackend
from .base import (
    _CI,
    AbsolutePath,
    ByteSize,
    Duration,
    Name,
    Port,
    _http_url,
    _Model,
    _non_empty,
    _problem_at,
    _regex,
    _separator,
)
from .frontend import FrontendPolicies
from .listener_tls import ListenerTLS
from .llm import LlmShort
from .policies import Policies, RedisConnection


class StdioTarget(_Model):
    # `env: {DEBUG: 1}` and `args: [--port, 8080]` are common; numbers become strings.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    cmd: Annotated[str, AfterValidator(_non_empty)]
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # over the gateway's own environment
    clearEnv: bool = False  # the process gets only `env`, nothing of the gateway's environment
    cwd: str | None = None


class HttpTarget(_Model):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    host: Annotated[str, AfterValidator(_http_url)]
    headers: dict[str, str] = Field(default_factory=dict)


class OpenApiSchemaFile(_Model):
    file: Annotated[str, AfterValidator(_non_empty)]  # relative to the working directory, as in the reference


class OpenApiSchemaUrl(_Model):
    url: Annotated[str, AfterValidator(_http_url)]  # fetched once, when the config is loaded


def _api_host(value: str) -> str:
    """`host:port`, or a URL (`http://` or `https://`; a path in it is not used, as in the reference)."""
    url = value if "://" in value else f"http://{value}"
    _http_url(url)
    return url


class OpenApiTarget(_Model):
    """A REST API described by an OpenAPI 3.x document, served as MCP tools (federation/openapi_tools.py)."""

    # the document: {file: path} | {url: ...} | the document itself, inline as a string
    schema_: Annotated[str | OpenApiSchemaFile | OpenApiSchemaUrl, Field(alias="schema")]
    host: Annotated[str, AfterValidator(_api_host)]  # where the API is: `localhost:8080` or a URL


TRANSPORTS = ("stdio", "mcp", "sse", "openapi")


class Target(_Model):
    name: Name
    stdio: StdioTarget | None = None
    mcp: HttpTarget | None = None
    sse: HttpTarget | None = None
    openapi: OpenApiTarget | None = None
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
    def kind(self) -> Literal["stdio", "mcp", "sse", "openapi"]:
        """Which transport this target uses."""
        if self.stdio is not None:
            return "stdio"
        if self.openapi is not None:
            return "openapi"
        return "mcp" if self.mcp is not None else "sse"


class McpBackend(_Model):
    targets: list[Target] = Field(min_length=1)
    prefixMode: Annotated[Literal["conditional", "always", "never"], _CI] = "conditional"
    statefulMode: Annotated[Literal["stateful", "stateless"], _CI] = "stateful"
    failureMode: Annotated[Literal["failClosed", "failOpen"], _CI] = "failClosed"
    separator: Annotated[str, AfterValidator(_separator)] = "_"
    maxRequestBodySize: ByteSize = 4 * 1024 * 1024
    maxResponseBodySize: ByteSize = 16 * 1024 * 1024  # agentplex extension: one JSON body or SSE event from a target
    # agentplex extensions. Idle client sessions end, and their upstream sessions (stdio: processes) with them;
    # a session holding its GET stream open is not idle.
    sessionIdleTimeout: Duration = 300.0
    # Client sessions (streamable HTTP and SSE) this route holds, and one caller (principal, else address) may
    # hold; null: no limit. Each may own an upstream session (stdio: a process) per target it calls.
    maxSessions: Annotated[int, Field(ge=1)] | None = 1000
    maxSessionsPerCaller: Annotated[int, Field(ge=1)] | None = 64
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


class StringMatch(_Model):
    """A header or query value: equal to `exact`, or wholly matched by `regex`."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    exact: str | None = None
    regex: Annotated[str, AfterValidator(_regex)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StringMatch:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("expected exactly one of: exact, regex")
        return self


class HeaderMatch(_Model):
    name: Annotated[str, AfterValidator(_non_empty)]
    value: StringMatch


class QueryMatch(_Model):
    name: Annotated[str, AfterValidator(_non_empty)]
    value: StringMatch


class Match(_Model):
    """All conditions of one match must hold; any one match of a route selects it."""

    path: PathMatch | None = None
    method: str | None = None
    headers: list[HeaderMatch] = Field(default_factory=list)
    query: list[QueryMatch] = Field(default_factory=list)


class Backend(_Model):
    mcp: McpBackend | None = None
    host: Annotated[str, AfterValidator(_host)] | None = None  # a plain HTTP backend (an A2A agent): host:port or URL
    backend: Name | None = None  # a top-level named backend (`backends:`)
    ai: AiBackend | None = None  # a model provider (gateway/ai/)
    weight: int = Field(default=1, ge=0)  # share of a plain HTTP route's requests among its backends

    @model_validator(mode="after")
    def _one(self) -> Backend:
        if sum(v is not None for v in (self.mcp, self.host, self.backend, self.ai)) != 1:
            raise ValueError("expected exactly one of: mcp, host, backend, ai")
        return self


class NamedBackend(_Model):
    """A plain HTTP backend defined once (`backends:` at the top level) and used by name from routes;
    its policies are the backend level (backendTLS, backendAuth, timeout, retry)."""

    name: Name
    host: Annotated[str, AfterValidator(_host)]
    policies: Policies | None = None

    @model_validator(mode="after")
    def _toward_the_backend(self) -> NamedBackend:
        for key in sorted((self.policies.model_fields_set if self.policies else set()) - _BACKEND_POLICIES):
            raise _problem_at(
                ("policies", key), "a backend's policies are those toward it (backendTLS, backendAuth, timeout, retry)"
            )
        return self


_BACKEND_POLICIES = {"backendTLS", "backendAuth", "timeout", "retry"}


def _host(value: str) -> str:
    """`127.0.0.1:9100` or `http://127.0.0.1:9100/base`: kept as a URL."""
    url = value if "://" in value else f"http://{value}"
    return _http_url(url)


def _hostname(value: str) -> str:
    """`api.example.com` or `*.example.com` (any subdomain, not the domain itself); no port."""
    name = value.strip().lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    if not bare or "*" in bare or not _HOSTNAME.fullmatch(bare):
        raise ValueError(f"invalid hostname {value!r} (expected a name like api.example.com or *.example.com)")
    return name


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
Hostname = Annotated[str, AfterValidator(_hostname)]


class Route(_Model):
    name: str | None = None
    hostnames: list[Hostname] = Field(default_factory=list)  # none: any host (the listener's hostname still applies)
    matches: list[Match] = Field(default_factory=list)  # empty matches every path
    policies: Policies | None = None
    backends: list[Backend] = Field(default_factory=list)  # none: a directResponse route (checked when compiled)


class Listener(_Model):
    name: str | None = None
    hostname: Hostname | None = None
    protocol: Annotated[Literal["HTTP", "HTTPS"], _CI] = "HTTP"
    tls: ListenerTLS | None = None  # required for HTTPS (gateway/listener_tls.py serves it)
    policies: Policies | None = None
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _tls_for_https(self) -> Listener:
        if self.protocol == "HTTPS" and self.tls is None:
            raise _problem_at(("tls",), "an HTTPS listener needs a tls block (cert and key)")
        if self.protocol == "HTTP" and self.tls is not None:
            raise _problem_at(("protocol",), "a listener with a tls block serves HTTPS: set protocol: HTTPS")
        return self


class Bind(_Model):
    port: Port
    address: str = "127.0.0.1"
    listeners: list[Listener] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_socket(self) -> Bind:
        """A bind is one socket: its listeners all speak HTTP or all HTTPS; several HTTPS listeners
        are told apart by SNI (their hostname) and may differ only in their certificate."""
        first = self.listeners[0]
        for index, listener in enumerate(self.listeners[1:], start=1):
            if listener.protocol != first.protocol:
                raise _problem_at(
                    ("listeners", index, "protocol"),
                    f"one bind is one socket: its listeners are all HTTP or all HTTPS (listeners[0] is {first.protocol})",
                )
            if listener.tls is not None and first.tls is not None:
                mine = listener.tls.model_dump(exclude={"cert", "key"})
                if mine != first.tls.model_dump(exclude={"cert", "key"}):
                    raise _problem_at(
                        ("listeners", index, "tls"),
                        "HTTPS listeners on one bind may differ only in cert and key (root, versions and cipher"
                        " suites are the socket's); use another port for other settings",
                    )
        if first.protocol == "HTTPS":
            hostnames = [listener.hostname for listener in self.listeners]
            for index, name in enumerate(hostnames):
                if name in hostnames[:index]:
                    raise _problem_at(
                        ("listeners", index, "hostname"),
                        f"another HTTPS listener on this bind already serves {name or 'any hostname'}:"
                        " SNI could not choose between their certificates",
                    )
        return self

    @property
    def https(self) -> bool:
        return self.listeners[0].protocol == "HTTPS"


class LoggingSettings(_Model):
    level: Annotated[Literal["debug", "info", "warning", "error"], _CI] = "info"
    format: Annotated[Literal["text", "json"], _CI] = "text"


def _listen_addr(value: str | None) -> str | None:
    """`host:port` (`[::1]:15000` for IPv6); None turns the server off."""
    if value is None:
        return None
    host, port = split_addr(value)
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid address {value!r} (expected host:port, e.g. 127.0.0.1:15000, or null for off)")
    return value


def split_addr(value: str) -> tuple[str, str]:
    """`127.0.0.1:15000` -> ("127.0.0.1", "15000"); `[::1]:15000` -> ("::1", "15000")."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TracingSettings(_Model):
    """OpenTelemetry traces, exported over OTLP/HTTP (gateway/observability/tracing.py)."""

    otlpEndpoint: Annotated[str, AfterValidator(_http_url)]  # the full URL, e.g. http://collector:4318/v1/traces
    headers: dict[str, str] = Field(default_factory=dict)  # sent with every export (a backend's API key)
    randomSampling: float = Field(default=1.0, ge=0.0, le=1.0)  # share of new traces kept; callers' choice wins


def _advertise(value: str) -> str:
    """A host name, an IPv4 address or an IPv6 address (no scheme, no port)."""
    host = value.strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host.lower()):
        raise ValueError(f"invalid address {value!r} (expected a host name or IP address, without scheme or port)")
    return host


class ClusterSettings(_Model):
    """Replicas behind one load balancer (agentplex's own key; the reference has none): a Redis they share
    records which replica holds each MCP session, so a request that lands elsewhere is forwarded to it."""

    redis: RedisConnection = Field(default_factory=RedisConnection)
    # How the other replicas reach this one: a host name or IP (the port is the one the request came in
    # on). Forwarded requests go to `<scheme>://<advertise>:<port><path>`. Unset: the address this host
    # reaches Redis from (a pod's IP, a container's address on its network).
    advertise: Annotated[str, AfterValidator(_advertise)] | None = None
    prefix: Annotated[str, AfterValidator(_non_empty)] = "agentplex:cluster"  # Redis key prefix
    heartbeat: Duration = 5.0  # a replica silent for 3 heartbeats is taken for dead

    @model_validator(mode="after")
    def _positive(self) -> ClusterSettings:
        if self.heartbeat <= 0:
            raise _problem_at(("heartbeat",), "must be greater than 0")
        return self
def _session_key(value: str) -> str:
    if value:  # empty: none (`key: ${SESSION_KEY:-}`)
        parse_key(value)  # raises ValueError saying what is wrong (never echoing the key)
    return value


SessionKey = Annotated[str, AfterValidator(_session_key)]


class SessionSettings(_Model):
    """Portable MCP sessions: the key that seals session ids (gateway/session_key.py; `SESSION_KEY` wins)."""

    # An all-digit key reads as a YAML number; its text is still the key (quote keys that start with 0).
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    key: SessionKey | None = None  # 64 hex characters, as from `openssl rand -hex 32`
    # agentplex addition: keys that sealed ids before a rotation; they still open ids, never seal new ones.
    previousKeys: list[SessionKey] = Field(default_factory=list)


class GlobalSettings(_Model):
    # The admin API (gateway/admin.py); null turns it off. Off loopback it needs adminToken.
    adminAddr: Annotated[str | None, AfterValidator(_listen_addr)] = "127.0.0.1:15000"
    adminToken: str | None = None  # `Authorization: Bearer <token>` on every admin request but the probes
    statsAddr: str | None = "127.0.0.1:15020"  # Prometheus /metrics (gateway/observability); null: none
    # On SIGTERM: keep accepting for the minimum, then stop accepting and let open requests finish
    # until the deadline (event streams clients hold open end once the requests are done).
    connectionMinTerminationDeadline: Duration = 0.0
    connectionTerminationDeadline: Duration = 10.0
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tracing: TracingSettings | None = None  # off unless set; read once, at start
    cluster: ClusterSettings | None = None  # off unless set: one replica, sessions in its memory only
    session: SessionSettings | None = None  # sealed, portable MCP session ids; off (random ids) without a key

    @model_validator(mode="after")
    def _admin_token_off_loopback(self) -> GlobalSettings:
        if self.adminAddr is not None and not self.adminToken and not is_loopback(split_addr(self.adminAddr)[0]):
            raise _problem_at(
                ("adminAddr",),
                f"the admin API on {self.adminAddr} would be reachable from other machines: set adminToken"
                " (e.g. adminToken: ${AGENTPLEX_ADMIN_TOKEN}) or bind it to a loopback address",
            )
        return self


class Config(_Model):
    config: GlobalSettings = Field(default_factory=GlobalSettings)
    mcp: McpShort | None = None
    a2a: A2aShort | None = None
    llm: LlmShort | None = None
    frontendPolicies: FrontendPolicies | None = None
    binds: list[Bind] = Field(default_factory=list)
    backends: list[NamedBackend] = Field(default_factory=list)

    _source: str = PrivateAttr(default="<string>")

    @property
    def source(self) -> str:
        """Where this config came from: a file path or '<string>'."""
        return self._source

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.mcp is None and self.a2a is None and self.llm is None and not self.binds:
            raise ValueError("expected a 'mcp:' block, an 'a2a:' block, an 'llm:' block or a 'binds:' list")
        named: set[str] = set()
        for index, backend in enumerate(self.backends):
            if backend.name in named:
                raise _problem_at(("backends", index, "name"), f"duplicate backend name {backend.name!r}")
            named.add(backend.name)
        owners: dict[int, str] = {} if self.mcp is None else {self.mcp.port: "mcp.port"}
        for index, bind in enumerate(self.binds):
            if bind.port in owners and bind.port != 0:
                raise _problem_at(("binds", index, "port"), f"port {bind.port} is already used by {owners[bind.port]}")
            owners[bind.port] = f"binds[{index}].port"
        if self.llm is not None and self.llm.port in owners and self.llm.port != 0:
            raise _problem_at(("llm", "port"), f"port {self.llm.port} is already used by {owners[self.llm.port]}")
        return self
