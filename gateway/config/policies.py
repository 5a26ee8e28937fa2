"""Policy config models, in the agentgateway dialect; each is enforced by one module under gateway/policies/.

CEL expressions are compiled here, so a rule with a syntax error is a config error at its key path.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, get_args

import cel
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from .ai import AiPolicy
from .base import _CI, AbsolutePath, Duration, _file_or_inline, _http_url, _Model, _non_empty, _problem_at, host_url

Mode = Annotated[Literal["strict", "optional", "permissive"], _CI]
FailureMode = Annotated[Literal["failClosed", "failOpen"], _CI]


# The functions agentplex's CEL evaluates: the standard ones the `cel` package implements, and the reference's
# IP/CIDR functions (gateway/policies/cel_net.py). A call to anything else would fail at every evaluation, and
# a rule that cannot be evaluated does not match: a `deny` that never denies. So it is refused at load.
CEL_OPERATORS = frozenset(
    {
        "!_", "-_", "@in", "@not_strictly_false", "_!=_", "_%_", "_&&_", "_*_", "_+_", "_-_", "_/_", "_<=_",
        "_<_", "_==_", "_>=_", "_>_", "_?_:_", "_[_]", "_||_"
    }
)
CEL_STANDARD = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string", "bytes",
        "timestamp", "duration", "type", "dyn", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear",
        "getFullYear", "getHours", "getMilliseconds", "getMinutes", "getMonth", "getSeconds"
    }
)
CEL_NET = frozenset({"cidr", "ip", "isIP", "isCIDR", "containsIP", "containsCIDR"})


def _cel(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a CEL expression")
    try:
        program = cel.compile(value)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0].removeprefix(f"Failed to parse expression '{value}': ")
        raise ValueError(f"invalid CEL expression {value!r}: {first}") from None
    unknown = sorted(set(program.functions()) - CEL_OPERATORS - CEL_STANDARD - CEL_NET)
    if unknown:
        raise ValueError(
            f"invalid CEL expression {value!r}: agentplex's CEL has no function {', '.join(unknown)} (it has the"
            f" standard {', '.join(sorted(CEL_STANDARD))} and {', '.join(sorted(CEL_NET))})"
        )
    return value


CelExpr = Annotated[str, AfterValidator(_cel)]


class TimeoutPolicy(_Model):
    """Both bound the wait for the answer's start (a started stream is never cut); gateway/policies/timeout.py."""

    requestTimeout: Duration | None = None  # the whole request, retries included
    backendRequestTimeout: Duration | None = None  # each attempt (MCP: each message to a target)


class RetryPolicy(_Model):
    """`attempts` counts every try, the first included (as in agentgateway: 1 means no retry)."""

    attempts: int = Field(default=1, ge=1, le=255)
    backoff: Duration = 0.0  # between tries
    codes: list[Annotated[int, Field(ge=100, le=599)]]  # answers worth another try; connect failures always are


class MirrorBackend(_Model):
    host: Annotated[str, AfterValidator(host_url)]


def _mirror_backend(value: Any) -> Any:
    return {"host": value} if isinstance(value, str) else value  # a plain string is a host


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"expected a fraction from 0 to 1 (0.5 mirrors half the requests, as in agentgateway), got {value:g}"
        )
    return value


class RequestMirror(_Model):
    """A copy of each request, for `percentage` of them, to another backend; its answer is ignored."""

    backend: Annotated[MirrorBackend, BeforeValidator(_mirror_backend)]
    percentage: Annotated[float, AfterValidator(_fraction)] = 1.0  # as in agentgateway: 0.5 mirrors half


# -- authentication ----------------------------------------------------------------------------


class Jwks(_Model):
    """Where signing keys come from: exactly one of a URL (fetched and cached), a file, or inline JSON."""

    url: Annotated[str, AfterValidator(_http_url)] | None = None
    file: str | None = None
    inline: str | dict[str, Any] | None = None
    cacheTtl: Duration = 300.0  # agentplex: how long a fetched JWKS is trusted
    refreshCooldown: Duration = 30.0  # agentplex: unknown `kid` refetches at most this often

    @model_validator(mode="after")
    def _one(self) -> Jwks:
        if sum(v is not None for v in (self.url, self.file, self.inline)) != 1:
            raise ValueError("expected exactly one of: url, file, inline")
        return self


class TokenLocation(_Model):
    """Where the token is read from; the header (with its scheme prefix) by default."""

    header: str | None = "authorization"
    prefix: str = "Bearer "
    queryParameter: str | None = None
    cookie: str | None = None


class JwtAuth(_Model):
    mode: Mode = "strict"
    issuer: Annotated[str, AfterValidator(_non_empty)] | None = None
    audiences: list[str] = Field(default_factory=list)
    jwks: Jwks
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    location: TokenLocation = Field(default_factory=TokenLocation)
    leeway: Duration = 30.0

    @model_validator(mode="after")
    def _algorithms(self) -> JwtAuth:
        if not self.algorithms or any(a.lower() == "none" for a in self.algorithms):
            raise ValueError("algorithms: expected signing algorithms such as RS256 or ES256 ('none' is never allowed)")
        return self


class ResourceMetadata(_Model):
    """RFC 9728 protected-resource metadata; unknown keys are served as configured extras."""

    model_config = ConfigDict(extra="allow")

    resource: Annotated[str, AfterValidator(_http_url)] | None = None  # default: this route's URL
    authorizationServers: list[str] = Field(default_factory=list)  # default: [issuer]
    scopesSupported: list[str] = Field(default_factory=list)
    bearerMethodsSupported: list[str] = Field(default_factory=list)
    resourceName: str | None = None
    resourceDocumentation: str | None = None


McpProviderName = Literal["auth0", "keycloak", "okta", "descope", "authentik", "entra"]
MCP_PROVIDERS: tuple[str, ...] = get_args(McpProviderName)


def _provider(value: Any) -> Any:
    """`provider: {keycloak: {}}` as in agentgateway (a plain `provider: keycloak` is accepted too)."""
    if isinstance(value, str):
        value = {value: {}}
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(
            f"expected exactly one of {', '.join(MCP_PROVIDERS)}, written as `provider: {{keycloak: {{}}}}`"
        )
    ((name, options),) = value.items()
    if name not in MCP_PROVIDERS:
        raise ValueError(f"unknown provider {name!r} (expected one of: {', '.join(MCP_PROVIDERS)})")
    if options not in (None, {}):
        raise ValueError(f"provider {name} takes no options (expected `{name}: {{}}`)")
    return name


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 token)


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"invalid header name {value!r}")
    return value


class NamedLocation(_Model):
    name: Annotated[str, AfterValidator(_non_empty)]


class HeaderLocation(_Model):
    name: Annotated[str, AfterValidator(_header_name)]
    prefix: str | None = None  # an incoming credential: removed before validation; an outgoing one: put before it


class AuthorizationLocation(_Model):
    """agentgateway's `AuthorizationLocation`, where a credential is found (mcpAuthentication) or put
    (backendAuth): exactly one of header, queryParameter, cookie (expression is refused)."""

    header: HeaderLocation | None = None
    queryParameter: NamedLocation | None = None
    cookie: NamedLocation | None = None
    expression: Any = None

    @model_validator(mode="after")
    def _one(self) -> AuthorizationLocation:
        if self.expression is not None:
            raise ValueError("expression: not supported by agentplex yet (use header, queryParameter or cookie)")
        if sum(v is not None for v in (self.header, self.queryParameter, self.cookie)) != 1:
            raise ValueError("expected exactly one of: header, queryParameter, cookie")
        return self

    def token_location(self) -> TokenLocation:
        if self.header is not None:
            return TokenLocation(header=self.header.name, prefix=self.header.prefix or "")
        if self.queryParameter is not None:
            return TokenLocation(header=None, prefix="", queryParameter=self.queryParameter.name)
        assert self.cookie is not None
        return TokenLocation(header=None, prefix="", cookie=self.cookie.name)


def _bearer_header() -> AuthorizationLocation:
    return AuthorizationLocation(header=HeaderLocation(name="authorization", prefix="Bearer "))


ENFORCED_CLAIMS = ("exp", "nbf", "aud", "iss", "sub")  # agentgateway enforces the presence of these only


class JwtValidationOptions(_Model):
    """Claims a token must carry; as in agentgateway only exp, nbf, aud, iss and sub are enforced
    (others are ignored with a warning when the policy is built)."""

    requiredClaims: list[str] = Field(default_factory=lambda: ["exp"])


class McpAuthentication(_Model):
    """agentgateway's `LocalMcpAuthentication`, plus agentplex's algorithms, scopes and leeway."""

    mode: Mode = "strict"
    issuer: Annotated[str, AfterValidator(_non_empty)]
    audiences: list[str] = Field(default_factory=list)
    provider: Annotated[McpProviderName, BeforeValidator(_provider)] | None = None
    jwks: Jwks | None = None  # default: derived from issuer and provider
    authorizationLocation: AuthorizationLocation = Field(default_factory=_bearer_header)
    jwtValidationOptions: JwtValidationOptions = Field(default_factory=JwtValidationOptions)
    clientId: str | None = None  # answers client registration (a pre-registered client)
    clientSecret: str | None = None  # entra: added to proxied token requests for clientId
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    scopes: list[str] = Field(default_factory=list)  # required scopes: 403 insufficient_scope without them
    resourceMetadata: ResourceMetadata = Field(default_factory=ResourceMetadata)
    leeway: Duration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _reference_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "relaySigningKey" in data:
            raise ValueError(
                "relaySigningKey: the gateway-managed authorization flow is not supported by agentplex yet"
            )
        jwks = data.get("jwks")
        if isinstance(jwks, dict) and set(jwks) == {"url"} and jwks["url"] in ("", None):
            data = {k: v for k, v in data.items() if k != "jwks"}  # as in agentgateway: an empty url is derived
        return data


class ApiKeyEntry(_Model):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    key: Annotated[str, AfterValidator(_non_empty)]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ApiKey(_Model):
    mode: Mode = "strict"
    keys: list[ApiKeyEntry] = Field(min_length=1)
    location: TokenLocation = Field(default_factory=TokenLocation)


class Htpasswd(_Model):
    file: str | None = None
    inline: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Htpasswd:
        if (self.file is None) == (self.inline is None):
            raise ValueError("expected exactly one of: file, inline")
        return self


class BasicAuth(_Model):
    mode: Mode = "strict"
    htpasswd: Htpasswd
    realm: str = "agentplex"


class ExtAuthzHttp(_Model):
    url: Annotated[str, AfterValidator(_http_url)]
    timeout: Duration = 2.0


class ServiceRef(_Model):
    """The reference's `service: {name, port}` (a Kubernetes service); agentplex has no service registry."""

    name: Any
    port: int


class BackendHttpPolicy(_Model):
    version: str | None = None  # accepted: gRPC is always HTTP/2
    requestTimeout: Duration | None = None  # how long one call may take (agentplex default: 2 s)


class ServicePolicies(_Model):
    """The reference's `policies` for the connection to a policy service; agentplex knows only `http`."""

    http: BackendHttpPolicy | None = None


class ExtAuthzGrpc(_Model):
    context: dict[str, str] | None = None  # CheckRequest attributes.context_extensions
    metadata: dict[str, CelExpr] | None = None  # attributes.metadata_context.filter_metadata, from CEL


class ExtAuthzHttpProtocol(_Model):
    """The reference's HTTP protocol (gateway/policies/ext_authz_http_protocol.py); `metadata` is refused there."""

    path: CelExpr | None = None
    redirect: CelExpr | None = None
    body: CelExpr | None = None
    includeResponseHeaders: list[str] = Field(default_factory=list)
    addRequestHeaders: dict[str, CelExpr] = Field(default_factory=dict)
    metadata: dict[str, CelExpr] = Field(default_factory=dict)


class ExtAuthzProtocol(_Model):
    grpc: ExtAuthzGrpc | None = None
    http: ExtAuthzHttpProtocol | None = None

    @model_validator(mode="after")
    def _one(self) -> ExtAuthzProtocol:
        if (self.grpc is None) == (self.http is None):
            raise ValueError("expected exactly one of: grpc, http")
        return self


class ExtAuthzBody(_Model):
    maxRequestBytes: int = Field(default=8192, ge=0)
    allowPartialMessage: bool = False
    packAsBytes: bool = False


class DenyWithStatus(_Model):
    denyWithStatus: int = Field(ge=100, le=599)


_REFERENCE_EXT_AUTHZ = ("host", "backend", "service", "protocol", "includeRequestBody", "cache", "policies")
_AGENTPLEX_EXT_AUTHZ = ("http", "includeMcp", "propagateHeaders")


class ExtAuthz(_Model):
    """Two forms, one per policy: agentplex's `http: {url}` form, or the reference's `host` form (Envoy
    ext_authz v3 over gRPC). `failureMode` is failClosed|failOpen in the first, deny|allow|{denyWithStatus}
    in the second."""

    # agentplex's HTTP form
    http: ExtAuthzHttp | None = None
    includeMcp: Annotated[Literal["headers", "body", "none"], _CI] = "headers"
    propagateHeaders: list[str] = Field(default_factory=list)  # from its answer onto the request upstream
    # the reference's form
    host: Annotated[str, AfterValidator(_non_empty)] | None = None
    backend: str | None = None
    service: ServiceRef | None = None
    protocol: ExtAuthzProtocol = Field(default_factory=lambda: ExtAuthzProtocol(grpc=ExtAuthzGrpc()))
    includeRequestBody: ExtAuthzBody | None = None
    cache: dict[str, Any] | None = None
    policies: ServicePolicies | None = None
    # both
    failureMode: Annotated[Literal["failClosed", "failOpen", "deny", "allow"], _CI] | DenyWithStatus | None = None
    includeRequestHeaders: list[str] | None = None  # sent to the service (lower-cased)

    @property
    def reference(self) -> bool:
        return self.http is None

    @model_validator(mode="after")
    def _one_form(self) -> ExtAuthz:
        given = self.model_fields_set
        ours = [k for k in _AGENTPLEX_EXT_AUTHZ if k in given]
        theirs = [k for k in _REFERENCE_EXT_AUTHZ if k in given]
        if ours and theirs:
            raise _problem_at(
                (theirs[0],),
                f"mixes agentplex's HTTP form ({', '.join(ours)}) with the reference's form ({', '.join(theirs)}); "
                "use one: `http: {url}` or `host: HOST:PORT` (Envoy ext_authz over gRPC)",
            )
        targets = [k for k in ("host", "backend", "service") if getattr(self, k) is not None]
        if self.http is None and len(targets) != 1:
            raise ValueError(
                "expected exactly one of: host, backend, service (the reference's form) or http (agentplex's form)"
                if not targets
                else f"expected exactly one of: host, backend, service (got {', '.join(targets)})"
            )
        mode = self.failureMode
        if self.http is not None:
            if mode is None:
                self.failureMode = "failClosed"
            elif mode not in ("failClosed", "failOpen"):
                raise _problem_at(("failureMode",), "expected failClosed or failOpen (deny/allow belong to the host: form)")
        elif mode is None:
            self.failureMode = "deny"
        elif mode in ("failClosed", "failOpen"):
            raise _problem_at(
                ("failureMode",), "expected deny, allow or {denyWithStatus: CODE} (failClosed/failOpen belong to the http: form)"
            )
        return self


# -- authorization and rate limits -------------------------------------------------------------


class AuthorizationRule(_Model):
    allow: CelExpr | None = None
    deny: CelExpr | None = None
    require: CelExpr | None = None

    @model_validator(mode="after")
    def _one(self) -> AuthorizationRule:
        if sum(v is not None for v in (self.allow, self.deny, self.require)) != 1:
            raise ValueError("expected exactly one of: allow, deny, require")
        return self


def _rule(value: Any) -> Any:
    return {"allow": value} if isinstance(value, str) else value  # a plain string is an allow rule


class McpAuthorization(_Model):
    rules: list[AuthorizationRule] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _plain_strings(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            return {**data, "rules": [_rule(r) for r in data["rules"]]}
        return data


class RateLimit(_Model):
    """A token bucket. `key` (CEL) splits it per caller/tool/...; `methods`/`tools` say what it charges."""

    maxTokens: int = Field(gt=0)
    tokensPerFill: int = Field(default=1, gt=0)
    fillInterval: Duration
    # tokens (AI routes): a request is let through while the bucket holds any, and charged the tokens its
    # answer used (input + output, as the provider counts them); the bucket never goes below empty
    type: Annotated[Literal["requests", "tokens"], _CI] = "requests"
    key: CelExpr | None = None
    methods: list[str] = Field(default_factory=list)  # MCP methods charged; empty: every MCP request
    tools: list[str] = Field(default_factory=list)  # exposed tool names charged; empty: all

    @model_validator(mode="after")
    def _positive(self) -> RateLimit:
        if self.fillInterval <= 0:
            raise ValueError("fillInterval: must be greater than 0")
        if self.type == "tokens" and (self.methods or self.tools):
            raise _problem_at(("type",), "a tokens limit charges whole AI requests: methods and tools do not apply")
        return self


class RedisConnection(_Model):
    url: Annotated[str, AfterValidator(_non_empty)] = "redis://127.0.0.1:6379/0"
    timeout: Duration = 0.5


class DescriptorEntry(_Model):
    key: Annotated[str, AfterValidator(_non_empty)]
    value: CelExpr  # its value: a string (numbers and booleans are written as text)


class Descriptor(_Model):
    entries: list[DescriptorEntry] = Field(min_length=1)
    type: Annotated[Literal["requests", "tokens"], _CI] = "requests"  # tokens: LLM routes only, never charged here


_REFERENCE_RRL = ("domain", "host", "backend", "service", "descriptors", "policies")
_AGENTPLEX_RRL = ("redis", "limits", "prefix")


class RemoteRateLimit(_Model):
    """Two forms, one per policy: agentplex's Redis token buckets (`redis`, `limits`), or the reference's
    Envoy rate-limit service (`domain`, `host`, `descriptors`). `failureMode` defaults to failOpen in the
    first and failClosed (500) in the second, as the reference does."""

    # agentplex's Redis form
    redis: RedisConnection = Field(default_factory=RedisConnection)
    limits: list[RateLimit] = Field(default_factory=list)
    prefix: str = "agentplex:rl"
    # the reference's form
    domain: Annotated[str, AfterValidator(_non_empty)] | None = None
    host: Annotated[str, AfterValidator(_non_empty)] | None = None
    backend: str | None = None
    service: ServiceRef | None = None
    descriptors: list[Descriptor] = Field(default_factory=list)
    policies: ServicePolicies | None = None
    # both
    failureMode: FailureMode | None = None

    @property
    def reference(self) -> bool:
        return self.domain is not None

    @model_validator(mode="after")
    def _one_form(self) -> RemoteRateLimit:
        given = self.model_fields_set
        ours = [k for k in _AGENTPLEX_RRL if k in given]
        theirs = [k for k in _REFERENCE_RRL if k in given]
        if ours and theirs:
            raise _problem_at(
                (theirs[0],),
                f"mixes agentplex's Redis form ({', '.join(ours)}) with the reference's form ({', '.join(theirs)}); "
                "use one: `redis` + `limits`, or `domain` + `host` + `descriptors` (Envoy rate-limit service)",
            )
        if theirs:
            if self.domain is None:
                raise _problem_at(("domain",), "missing required key (expected the rate-limit service's domain)")
            if not self.descriptors:
                raise _problem_at(("descriptors",), "missing required key (expected a list of {entries: [{key, value}]})")
            targets = [k for k in ("host", "backend", "service") if getattr(self, k) is not None]
            if len(targets) != 1:
                raise ValueError(f"expected exactly one of: host, backend, service (got {', '.join(targets) or 'none'})")
            if self.failureMode is None:
                self.failureMode = "failClosed"
            return self
        if not self.limits:
            raise _problem_at(("limits",), "must not be empty")
        if self.failureMode is None:
            self.failureMode = "failOpen"
        return self


# -- toward backends ---------------------------------------------------------------------------


class OAuthClientCredentials(_Model):
    tokenUrl: Annotated[str, AfterValidator(_http_url)]
    clientId: str
    clientSecret: str
    scopes: list[str] = Field(default_factory=list)
    audience: str | None = None
    resource: str | None = None


class TokenExchange(OAuthClientCredentials):
    subjectTokenType: str = "urn:ietf:params:oauth:token-type:access_token"
    requestedTokenType: str | None = None


FileOrInline = Annotated[str, BeforeValidator(_file_or_inline), AfterValidator(_non_empty)]


class BackendKey(_Model):
    """`{value, location?}` as in the reference; `header`/`prefix` are agentplex's shorter spelling of
    `location: {header: {name, prefix}}`."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    value: FileOrInline
    location: AuthorizationLocation | None = None
    header: str = "authorization"
    prefix: str = "Bearer "

    @model_validator(mode="after")
    def _where(self) -> BackendKey:
        if self.location is not None and self.model_fields_set & {"header", "prefix"}:
            raise ValueError("location and header/prefix say the same thing: use one of them")
        return self


class Passthrough(_Model):
    location: AuthorizationLocation | None = None  # default: authorization: Bearer <token>


class GcpAuth(_Model):
    """A Google token, as the reference's `gcp`: from `credential` (credential JSON) if set, else from the
    default credentials (a service-account file in GOOGLE_APPLICATION_CREDENTIALS, gcloud's
    application-default credentials, or the metadata server).

    `type: idToken` asks for an ID token for `audience` (default: `https://<host of the request>`);
    otherwise (`accessToken`, the default) an OAuth access token."""

    type: Annotated[Literal["idToken", "accessToken"], _CI] = "accessToken"
    audience: str | None = None
    # ADC-style credential JSON (inline or {file}) instead of the default credentials
    credential: FileOrInline | None = None

    @model_validator(mode="after")
    def _shape(self) -> GcpAuth:
        if self.audience is not None and self.type != "idToken":
            raise _problem_at(("audience",), "only an idToken has an audience (set type: idToken)")
        if self.credential is not None:
            kind = self.credential_info.get("type")
            if not isinstance(kind, str):
                raise _problem_at(("credential",), "expected Google credential JSON with a type (service_account, ...)")
            if self.type == "idToken" and kind not in _ID_TOKEN_CREDENTIALS:
                raise _problem_at(
                    ("credential",),
                    f"{kind} credentials give no ID token (expected one of: {', '.join(_ID_TOKEN_CREDENTIALS)})",
                )
        _needs("google.auth", "gcp", "google-auth")
        return self

    @property
    def credential_info(self) -> dict[str, Any]:
        """The credential JSON, parsed (config validation has checked it is an object)."""
        try:
            info = json.loads(self.credential or "{}")
        except ValueError:
            raise _problem_at(("credential",), "expected Google credential JSON (a JSON object)") from None
        if not isinstance(info, dict):
            raise _problem_at(("credential",), "expected Google credential JSON (a JSON object)")
        return info


_ID_TOKEN_CREDENTIALS = ("service_account", "impersonated_service_account", "authorized_user")


class AwsAuth(_Model):
    """SigV4 request signing, as the reference's `aws`: explicit keys (`accessKeyId` + `secretAccessKey`,
    `sessionToken`, `region`) or, without them, botocore's default credential chain (AWS_ACCESS_KEY_ID...,
    profiles, container and instance roles) and its region (AWS_REGION, the profile's region).

    `serviceName` defaults to "bedrock" as in the reference. agentplex also takes `region` without keys."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    accessKeyId: str | None = None
    secretAccessKey: str | None = None
    sessionToken: str | None = None
    region: str | None = None
    serviceName: str | None = None
    assumeRole: Any = None  # named so that setting it is refused clearly

    @model_validator(mode="after")
    def _shape(self) -> AwsAuth:
        if (self.accessKeyId is None) != (self.secretAccessKey is None):
            missing = "secretAccessKey" if self.secretAccessKey is None else "accessKeyId"
            raise _problem_at((missing,), "accessKeyId and secretAccessKey go together")
        if self.sessionToken is not None and self.accessKeyId is None:
            raise _problem_at(("sessionToken",), "goes with accessKeyId and secretAccessKey")
        if self.assumeRole is not None:
            raise _problem_at(("assumeRole",), "assuming an IAM role is not supported by agentplex")
        _needs("botocore", "aws", "botocore")
        return self


def _needs(module: str, extra: str, package: str) -> None:
    """A cloud library is an optional extra: say which one to install."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"needs the {package} package: pip install 'agentplex[{extra}]'")


# The reference's backendAuth kinds agentplex does not build: refused, never accepted and ignored.
_UNSUPPORTED_AUTH = {
    "azure": "Azure credentials",
    "copilot": "GitHub Copilot credentials",
    "jwtSign": "signing a JWT per request",
}


def _refused(kind: str) -> Callable[[Any], Any]:
    def refuse(value: Any) -> Any:
        raise ValueError(f"{_UNSUPPORTED_AUTH[kind]} ({kind}) is not supported by agentplex")

    return refuse


class BackendAuth(_Model):
    """Exactly one way to authenticate to the backend: the reference's passthrough, key, gcp, aws; agentplex's
    oauth2 (client credentials) and tokenExchange."""

    passthrough: Passthrough | None = None
    key: BackendKey | None = None
    gcp: GcpAuth | None = None
    aws: AwsAuth | None = None
    oauth2: OAuthClientCredentials | None = None
    tokenExchange: TokenExchange | None = None
    azure: Annotated[Any, AfterValidator(_refused("azure"))] = None
    copilot: Annotated[Any, AfterValidator(_refused("copilot"))] = None
    jwtSign: Annotated[Any, AfterValidator(_refused("jwtSign"))] = None

    KINDS: ClassVar[tuple[str, ...]] = ("passthrough", "key", "gcp", "aws", "oauth2", "tokenExchange")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if data == "copilot":  # the reference's one plain-string kind
            return {"copilot": {}}
        if isinstance(data, dict) and isinstance(data.get("key"), str | int):
            return {**data, "key": {"value": data["key"]}}
        return data

    @model_validator(mode="after")
    def _one(self) -> BackendAuth:
        if sum(getattr(self, kind) is not None for kind in self.KINDS) != 1:
            raise ValueError(f"expected exactly one of: {', '.join(self.KINDS)}")
        return self


class BackendTLS(_Model):
    root: str | None = None  # CA bundle (PEM file) to trust instead of the system roots
    cert: str | None = None  # client certificate (PEM) for mTLS
    key: str | None = None  # its private key (PEM)
    hostname: str | None = None  # SNI and the name the certificate must carry
    insecure: bool = False  # skip verification (tests only)
    alpn: list[str] | None = None  # offered as is; upstream connections speak HTTP/1.1

    @model_validator(mode="after")
    def _pair(self) -> BackendTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (mTLS needs both)")
        if self.alpn is not None and ("http/1.1" not in self.alpn or "h2" in self.alpn):
            raise ValueError("alpn: must offer http/1.1 and not h2 (the gateway speaks HTTP/1.1 to MCP targets)")
        return self


def _authority(value: str) -> str:
    """host, host:port or [v6]:port, without scheme, path or spaces (it ends up in Location and Host)."""
    if not _AUTHORITY.fullmatch(value):
        raise ValueError(f"invalid authority {value!r} (expected host or host:port)")
    return value


_AUTHORITY = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?")


def _header_map(value: Any) -> Any:
    """`{x-a: b}` or the Gateway API's `[{name: x-a, value: b}]`."""
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, dict) or set(item) != {"name", "value"}:
                raise ValueError("expected a mapping of header names to values, or a list of {name, value}")
            out[str(item["name"])] = item["value"]
        return out
    return value


class HeaderModifier(_Model):
    """`requestHeaderModifier` / `responseHeaderModifier`: add (append), set (replace), remove."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    add: Annotated[dict[str, str], BeforeValidator(_header_map)] = Field(default_factory=dict)
    set: Annotated[dict[str, str], BeforeValidator(_header_map)] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class DirectResponse(_Model):
    """Answer without a backend."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    status: int = Field(default=200, ge=100, le=599)
    body: str = ""


class Authority(_Model):
    """`full: host[:port]`, or only the `host` or only the `port` of the authority it replaces."""

    full: Annotated[str, AfterValidator(_authority)] | None = None
    host: Annotated[str, AfterValidator(_authority)] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _one(self) -> Authority:
        if sum(v is not None for v in (self.full, self.host, self.port)) != 1:
            raise ValueError("expected exactly one of: full, host, port")
        if self.host is not None and ":" in self.host.strip("[]"):
            raise ValueError("host: expected a host without a port (use full: for host:port)")
        return self


class PathReplacement(_Model):
    """`full` replaces the whole path; `prefix` replaces the pathPrefix the route matched, keeping the rest."""

    full: AbsolutePath | None = None
    prefix: AbsolutePath | None = None

    @model_validator(mode="after")
    def _one(self) -> PathReplacement:
        if (self.full is None) == (self.prefix is None):
            raise ValueError("expected exactly one of: full, prefix")
        return self


REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def _redirect_status(value: int) -> int:
    if value not in REDIRECT_STATUSES:
        raise ValueError(f"invalid redirect status {value} (expected one of: {', '.join(map(str, REDIRECT_STATUSES))})")
    return value


class RequestRedirect(_Model):
    """Answer with a redirect built from the request (the query string is kept)."""

    scheme: Annotated[Literal["http", "https"], _CI] | None = None
    authority: Authority | None = None
    path: PathReplacement | None = None
    status: Annotated[int, AfterValidator(_redirect_status)] = 302


class UrlRewrite(_Model):
    """Change the URL sent to a plain HTTP backend or a one-agent A2A route's agent: its path, and the Host."""

    authority: Authority | None = None
    path: PathReplacement | None = None


def _origin(value: str) -> str:
    """`*`, `https://app.example.com[:port]`, or `https://*.example.com` (any subdomain)."""
    origin = value.strip().lower().rstrip("/")
    if origin == "*" or _ORIGIN.fullmatch(origin):
        return origin
    raise ValueError(f"invalid origin {value!r} (expected '*' or scheme://host[:port], host may start with '*.')")


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\*\.)?[a-z0-9.\[\]:-]+")


class Cors(_Model):
    """Cross-origin access for browsers: preflights answered by the gateway, CORS headers on answers."""

    allowOrigins: list[Annotated[str, AfterValidator(_origin)]] = Field(default_factory=list)
    allowMethods: list[str] = Field(default_factory=list)
    allowHeaders: list[str] = Field(default_factory=list)
    exposeHeaders: list[str] = Field(default_factory=list)
    allowCredentials: bool = False
    maxAge: Duration | None = None


class A2aPolicy(_Model):
    """Marks a route whose backend is an A2A agent: its card is rewritten to point at the gateway."""


class Policies(_Model):
    key_kind: ClassVar[str] = "policy"

    timeout: TimeoutPolicy | None = None
    retry: RetryPolicy | None = None
    requestMirror: RequestMirror | None = None
    jwtAuth: JwtAuth | None = None
    mcpAuthentication: McpAuthentication | None = None
    apiKey: ApiKey | None = None
    basicAuth: BasicAuth | None = None
    extAuthz: ExtAuthz | None = None
    mcpAuthorization: McpAuthorization | None = None
    authorization: McpAuthorization | None = None  # the same rule forms, over whole HTTP requests
    localRateLimit: list[RateLimit] | None = None
    remoteRateLimit: RemoteRateLimit | None = None
    backendAuth: BackendAuth | None = None
    backendTLS: BackendTLS | None = None
    a2a: A2aPolicy | None = None
    ai: AiPolicy | None = None  # on a route whose backend is `ai` (gateway/ai/)
    requestHeaderModifier: HeaderModifier | None = None
    responseHeaderModifier: HeaderModifier | None = None
    directResponse: DirectResponse | None = None
    requestRedirect: RequestRedirect | None = None
    urlRewrite: UrlRewrite | None = None
    cors: Cors | None = None
