"""backendAuth: the credentials the gateway presents to an HTTP MCP target.

Each kind is an `UpstreamAuth` (protocols/mcp/upstream.py), built once per target and asked for
headers on every upstream request, with the caller the request is made for (an ASGI scope, or
None when nobody in particular is: a shared upstream's own traffic).

- `key`: a static credential, `authorization: Bearer <value>` unless its `location` (or agentplex's
  `header`/`prefix`) says otherwise: another header, a query parameter or a cookie.
- `passthrough`: the caller's validated bearer token (left in the scope by jwtAuth or
  mcpAuthentication), as `authorization: Bearer <token>` or at its `location`; nothing when there is none.
- `oauth2`: an OAuth 2 client-credentials token, fetched with authlib and reused until shortly
  before it expires.
- `tokenExchange`: RFC 8693, the caller's token exchanged for one meant for the target, cached per
  caller token (bounded). Nothing is sent for a caller without a token.
- `gcp` and `aws`: gateway/policies/cloud_auth.py (optional extras).

A token endpoint that fails makes the request at hand fail with a message naming the endpoint and
what it said (the upstream layer adds the target); the failure is remembered for a moment so a
burst of requests does not hammer a broken endpoint.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore2
import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from gateway.config.policies import (
    AuthorizationLocation,
    BackendAuth,
    BackendKey,
    OAuthClientCredentials,
    TokenExchange,
)
from gateway.policies.http import IDENTITY
from protocols import redaction
from protocols.mcp.upstream import UpstreamAuth

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DEFAULT_LIFETIME = 300.0  # a token response without expires_in
FETCH_TIMEOUT = 10.0  # one token request, connect to answer
RETRY_AFTER = 2.0  # a failed fetch is not retried sooner (for the same key)
EXCHANGE_CACHE_SIZE = 1024  # exchanged tokens kept (one per caller token)


class BackendAuthError(Exception):
    """No credentials could be had; the message says why (never contains a secret)."""


def build(cfg: BackendAuth) -> UpstreamAuth:
    """The UpstreamAuth for one target's backendAuth policy."""
    if cfg.key is not None:
        return KeyAuth(cfg.key)
    if cfg.oauth2 is not None:
        return ClientCredentialsAuth(cfg.oauth2)
    if cfg.tokenExchange is not None:
        return TokenExchangeAuth(cfg.tokenExchange)
    if cfg.gcp is not None:
        from gateway.policies.cloud_auth import GcpTokenAuth

        return GcpTokenAuth(cfg.gcp)
    if cfg.aws is not None:
        from gateway.policies.cloud_auth import AwsSigV4Auth

        return AwsSigV4Auth(cfg.aws)
    assert cfg.passthrough is not None
    location = Location(cfg.passthrough.location)
    return PassthroughAuth() if location.is_bearer else PlacedPassthroughAuth(location)


def caller_token(caller: Any) -> str | None:
    """The caller's validated bearer token, if authentication put one in its scope."""
    state = caller.get("state") if isinstance(caller, Mapping) else None
    identity = state.get(IDENTITY) if isinstance(state, Mapping) else None
    token = getattr(identity, "token", None)
    return token if isinstance(token, str) and token else None


def request_auth(auth: Any, scope: Any) -> tuple[Any, bool]:
    """(proxy.Upstream's `auth`, `signs_body`) for a backendAuth that works on the request itself (its
    `apply`: a query parameter, a cookie, a signature), made for this caller."""
    apply = getattr(auth, "apply", None)
    if apply is None:
        return None, False
    return functools.partial(apply, scope), bool(getattr(auth, "signs_body", False))


class Location:
    """Where a credential goes (the reference's AuthorizationLocation): `authorization: Bearer <value>` by
    default, or a header with an optional prefix, a query parameter, a cookie."""

    def __init__(
        self, cfg: AuthorizationLocation | None, header: str = "authorization", prefix: str = "Bearer "
    ) -> None:
        self.header: str | None = header.lower()
        self.prefix = prefix
        self.query: str | None = None
        self.cookie: str | None = None
        if cfg is not None and cfg.header is not None:
            self.header, self.prefix = cfg.header.name.lower(), cfg.header.prefix or ""
        elif cfg is not None:
            self.header = None
            self.query = cfg.queryParameter.name if cfg.queryParameter is not None else None
            self.cookie = cfg.cookie.name if cfg.cookie is not None else None

    @property
    def is_bearer(self) -> bool:
        return self.header == "authorization" and self.prefix == "Bearer "

    def headers(self, value: str) -> dict[str, str]:
        """The header carrying `value` ({} when it goes elsewhere: see put())."""
        return {self.header: f"{self.prefix}{value}"} if self.header is not None else {}

    def put(self, request: Any, value: str) -> None:
        """Put `value` on an httpx/httpx2 request: its query parameter, or its cookie (others kept)."""
        if self.query is not None:
            request.url = request.url.copy_merge_params({self.query: value})
        elif self.cookie is not None:
            kept = [
                pair.strip()
                for header in request.headers.get_list("cookie")
                for pair in header.split(";")
                if pair.strip() and pair.split("=", 1)[0].strip() != self.cookie
            ]
            request.headers["cookie"] = "; ".join([*kept, f"{self.cookie}={value}"])


class KeyAuth:
    """A static header. `prefix` defaults to "Bearer " for the authorization header, to nothing for others."""

    def __init__(self, cfg: BackendKey) -> None:
        if cfg.location is not None:
            location = Location(cfg.location)
        else:
            prefix = cfg.prefix
            if "prefix" not in cfg.model_fields_set and cfg.header.lower() != "authorization":
                prefix = ""
            location = Location(None, cfg.header, prefix)
        self.location = location
        self.value = cfg.value
        self._headers = location.headers(cfg.value)
        if location.header is None:
            self.apply = self._put  # a query parameter or a cookie: set on each request

    async def headers(self, caller: Any) -> dict[str, str]:
        return self._headers

    async def _put(self, caller: Any, request: Any) -> None:
        self.location.put(request, self.value)


class PassthroughAuth:
    async def headers(self, caller: Any) -> dict[str, str]:
        token = caller_token(caller)
        return {"authorization": f"Bearer {token}"} if token else {}


class PlacedPassthroughAuth:
    """The caller's token at the configured `location`."""

    def __init__(self, location: Location) -> None:
        self.location = location

    async def headers(self, caller: Any) -> dict[str, str]:
        token = caller_token(caller)
        return self.location.headers(token) if token else {}

    async def apply(self, caller: Any, request: Any) -> None:
        token = caller_token(caller)
        if token and self.location.header is None:
            self.location.put(request, token)

    def placed(self, caller: Any) -> str | None:
        return caller_token(caller)


class ClientCredentialsAuth:
    def __init__(self, cfg: OAuthClientCredentials) -> None:
        self.endpoint = _TokenEndpoint(cfg)
        self.cache = _TokenCache(1)

    async def headers(self, caller: Any) -> dict[str, str]:
        token = await self.cache.get(None, lambda: self.endpoint.fetch("client_credentials"))
        return {"authorization": f"Bearer {token}"}

    def forget(self, caller: Any) -> None:
        self.cache.drop(None)


class TokenExchangeAuth:
    def __init__(self, cfg: TokenExchange) -> None:
        self.cfg = cfg
        self.endpoint = _TokenEndpoint(cfg)
        self.cache = _TokenCache(EXCHANGE_CACHE_SIZE)

    async def headers(self, caller: Any) -> dict[str, str]:
        subject = caller_token(caller)
        if subject is None:
            return {}
        extra = {"subject_token": subject, "subject_token_type": self.cfg.subjectTokenType}
        if self.cfg.requestedTokenType:
            extra["requested_token_type"] = self.cfg.requestedTokenType
        token = await self.cache.get(subject, lambda: self.endpoint.fetch(TOKEN_EXCHANGE, **extra))
        return {"authorization": f"Bearer {token}"}

    def forget(self, caller: Any) -> None:
        subject = caller_token(caller)
        if subject is not None:
            self.cache.drop(subject)


# -- fetching and caching ------------------------------------------------------------------------


class _TokenEndpoint:
    """Token requests with authlib's AsyncOAuth2Client (client_secret_basic), one short-lived client each.

    Fetches are rare (once per token lifetime), so a client is not kept open between them; the
    TLS context, the costly part, is built once for the process.
    """

    def __init__(self, cfg: OAuthClientCredentials) -> None:
        self.cfg = cfg
        self.form = {k: v for k, v in (("audience", cfg.audience), ("resource", cfg.resource)) if v}

    async def fetch(self, grant_type: str, **extra: str) -> tuple[str, float]:
        """(access token, lifetime in seconds), or BackendAuthError."""
        cfg = self.cfg
        endpoint = redaction.url(cfg.tokenUrl)  # errors reach clients and logs: no credential of the URL
        scope = " ".join(cfg.scopes) or None
        try:
            async with AsyncOAuth2Client(
                cfg.clientId, cfg.clientSecret, scope=scope, timeout=FETCH_TIMEOUT, verify=_token_endpoint_tls()
            ) as client:
                token = await client.fetch_token(cfg.tokenUrl, grant_type=grant_type, **self.form, **extra)
        except OAuthError as exc:
            problem = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
            raise BackendAuthError(f"the token endpoint {endpoint} refused: {problem}") from None
        except httpx2.HTTPStatusError as exc:
            raise BackendAuthError(f"the token endpoint {endpoint} answered HTTP {exc.response.status_code}") from None
        except httpx2.HTTPError as exc:
            raise BackendAuthError(f"cannot reach the token endpoint {endpoint}: {_describe(exc)}") from None
        except ValueError as exc:
            raise BackendAuthError(f"the token endpoint {endpoint} answered with no token: {exc}") from None
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise BackendAuthError(f"the token endpoint {endpoint} answered with no access_token")
        lifetime = token.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_LIFETIME
        return access, float(lifetime)


@functools.cache
def _token_endpoint_tls() -> ssl.SSLContext:
    return httpcore2.default_ssl_context()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _Entry:
    token: str | None
    refresh_at: float  # monotonic: fetch again from then on
    problem: str | None = None


class _TokenCache:
    """Tokens by key, refreshed shortly before they expire; one fetch per key at a time; LRU-bounded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Any, _Entry] = OrderedDict()
        self.locks: dict[Any, anyio.Lock] = {}

    async def get(self, key: Any, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        entry = self._fresh(key)
        if entry is None:
            lock = self.locks.get(key)
            if lock is None:
                lock = self.locks[key] = anyio.Lock()
            try:
                async with lock:
                    entry = self._fresh(key)  # a concurrent caller may have fetched it meanwhile
                    if entry is None:
                        entry = await self._fetch(fetch)
                        self._store(key, entry)
            finally:
                if not lock.locked() and lock.statistics().tasks_waiting == 0:
                    self.locks.pop(key, None)
        if entry.problem is not None:
            raise BackendAuthError(entry.problem)
        assert entry.token is not None
        return entry.token

    def drop(self, key: Any) -> None:
        self.entries.pop(key, None)

    def _fresh(self, key: Any) -> _Entry | None:
        entry = self.entries.get(key)
        if entry is None or time.monotonic() >= entry.refresh_at:
            return None
        self.entries.move_to_end(key)
        return entry

    async def _fetch(self, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> _Entry:
        try:
            token, lifetime = await fetch()
        except BackendAuthError as exc:
            return _Entry(None, time.monotonic() + RETRY_AFTER, str(exc))
        # Refresh a quarter of the lifetime early, at most a minute early.
        return _Entry(token, time.monotonic() + lifetime - min(60.0, lifetime / 4))

    def _store(self, key: Any, entry: _Entry) -> None:
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
