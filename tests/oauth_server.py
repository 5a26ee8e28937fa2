"""A small, real OAuth 2.0 authorization server for the tests (client-credentials grant, JWKS).

Starlette served by uvicorn on a free 127.0.0.1 port, in the test's own event loop:

    async with running_oauth_server() as auth:      # auth.issuer, auth.jwks_uri, auth.hits, ...
        ...

- `/.well-known/oauth-authorization-server[<issuer path>]`: RFC 8414 metadata. The `issuer` in it is
  exactly `auth.issuer`, the string the tokens carry as `iss`, and the string an MCP resource server
  must advertise in its protected-resource metadata: the mcp SDK compares issuers as plain strings,
  so `http://h:p` and `http://h:p/` are different issuers (`trailing_slash=True` makes the root
  issuer the slash form).
- `/token`: `grant_type=client_credentials`, the client authenticated by `client_secret_basic` or
  `client_secret_post` (not both). It issues RS256 JWT access tokens (RFC 9068 shaped: `typ: at+jwt`)
  with `iss`, `aud` = the `resource` form parameters (RFC 8707; absent: no `aud`), `sub` and
  `client_id` (the client), `scope` (what was asked, or every scope the client may have, narrowed
  to the scopes it may have), `iat`, `exp`, `jti`, and the signing key's `kid` in the header.
- `/jwks`: the public keys (also at `/moved/jwks` through a 301 redirect). `rotate()` adds a new signing key (and can retire the old ones);
  `jwks_status` makes the endpoint answer that HTTP status instead (an IdP that is down), and
  `jwks_override` some other JSON (an IdP that is broken); `jwks_delay` slows it down.
- `/authorize`: required in RFC 8414 metadata, but only the client-credentials grant is offered.

Every request is counted per path in `hits`; token requests are recorded in `token_requests`.
`mint(...)` signs arbitrary tokens (other keys, other headers, any claims) for the negative tests.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.conftest import free_port

DEFAULT_CLIENTS = {
    "agent": ("agent-secret", ["mcp:tools", "mcp:admin"]),
    "reader": ("reader-secret", ["mcp:read"]),
}


def new_key(kid: str | None = None) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid or f"k-{uuid.uuid4().hex[:8]}"}, private=True)


@dataclass
class TokenRequest:
    auth_method: str  # client_secret_basic | client_secret_post | none
    form: dict[str, list[str]]
    status: int = 0


@dataclass
class OAuthServer:
    """State of the running server; tests read and change it directly (same event loop)."""

    port: int
    clients: dict[str, tuple[str, list[str]]]  # client_id -> (secret, scopes it may have)
    issuer_path: str = ""
    trailing_slash: bool = False
    lifetime: int = 300
    signing_key: RSAKey = field(default_factory=lambda: new_key("k1"))
    published: list[RSAKey] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    token_requests: list[TokenRequest] = field(default_factory=list)
    jwks_status: int | None = None  # answer /jwks with this status instead of the keys
    jwks_override: Any = None  # answer /jwks 200 with this JSON instead of the keys (a broken IdP)
    jwks_delay: float = 0.0  # seconds /jwks takes to answer (a slow IdP)

    def __post_init__(self) -> None:
        if not self.published:
            self.published = [self.signing_key]

    # -- addresses -------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        if self.issuer_path:
            return self.base + self.issuer_path
        return self.base + ("/" if self.trailing_slash else "")

    @property
    def metadata_url(self) -> str:
        return f"{self.base}/.well-known/oauth-authorization-server{self.issuer_path}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.base}/jwks"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base}/token"

    # -- keys and tokens ---------------------------------------------------------------------------

    def rotate(self, key: RSAKey | None = None, *, retire_old: bool = False) -> RSAKey:
        """Sign with a new key (default: a fresh one) from now on and publish it (alongside the old
        ones unless retired)."""
        self.signing_key = key or new_key()
        self.published = [self.signing_key] if retire_old else [*self.published, self.signing_key]
        return self.signing_key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**key.as_dict(private=False), "use": "sig", "alg": "RS256"} for key in self.published]}

    def claims(self, client_id: str, *, audience: str | list[str] | None, scope: str, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
        }
        if audience is not None:
            claims["aud"] = audience
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}  # extra=None drops a claim

    def mint(
        self,
        *,
        client_id: str = "agent",
        audience: str | list[str] | None = None,
        scope: str = "mcp:tools",
        key: RSAKey | None = None,
        header: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        """A token signed by `key` (default: the current signing key) with the usual claims plus `extra`."""
        key = key or self.signing_key
        head = header if header is not None else {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(head, self.claims(client_id, audience=audience, scope=scope, **extra), key)

    # -- endpoints -----------------------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.base}/authorize",
                "token_endpoint": self.token_endpoint,
                "jwks_uri": self.jwks_uri,
                "scopes_supported": sorted({s for _, scopes in self.clients.values() for s in scopes}),
                "response_types_supported": ["code"],
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    async def jwks_endpoint(self, request: Request) -> Response:
        if self.jwks_delay:
            await anyio.sleep(self.jwks_delay)
        if self.jwks_status is not None:
            return JSONResponse({"error": "unavailable"}, status_code=self.jwks_status)
        if self.jwks_override is not None:
            return JSONResponse(self.jwks_override)
        return JSONResponse(self.jwks(), headers={"cache-control": "max-age=60"})

    async def authorize(self, request: Request) -> Response:
        return _oauth_error(400, "unsupported_response_type", "only the client_credentials grant is offered")

    async def token(self, request: Request) -> Response:
        raw = await request.form()
        form: dict[str, list[str]] = {}
        for name, value in raw.multi_items():
            form.setdefault(name, []).append(str(value))
        record = TokenRequest(_auth_method(request, form), form)
        self.token_requests.append(record)
        response = self._token_response(request, form)
        record.status = response.status_code
        return response

    def _token_response(self, request: Request, form: dict[str, list[str]]) -> Response:
        client = self._authenticate(request, form)
        if client is None:
            return _oauth_error(401, "invalid_client", "client authentication failed", basic_challenge=True)
        one = {k: v[0] for k, v in form.items() if len(v) == 1}
        if any(len(v) > 1 for k, v in form.items() if k != "resource"):
            return _oauth_error(400, "invalid_request", "repeated parameter")
        if one.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        allowed = self.clients[client][1]
        asked = one.get("scope", "").split()
        unknown = [s for s in asked if s not in allowed]
        if unknown:
            return _oauth_error(400, "invalid_scope", f"not allowed: {' '.join(unknown)}")
        scope = " ".join(asked or allowed)
        resources = form.get("resource", [])
        for resource in resources:
            parts = urlsplit(resource)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                return _oauth_error(400, "invalid_target", f"not an absolute URI without fragment: {resource}")
        audience: str | list[str] | None = (resources[0] if len(resources) == 1 else resources) or None
        token = self.mint(client_id=client, audience=audience, scope=scope)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime, "scope": scope}
        return JSONResponse(body, headers={"cache-control": "no-store", "pragma": "no-cache"})

    def _authenticate(self, request: Request, form: dict[str, list[str]]) -> str | None:
        """The client id, when exactly one client authentication method was used and it checks out."""
        method = _auth_method(request, form)
        if method == "client_secret_basic":
            try:
                decoded = base64.b64decode(request.headers["authorization"][6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, sep, secret = decoded.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)  # RFC 6749 §2.3.1 form-encodes both
            if not sep:
                return None
            if "client_secret" in form:
                return None  # two methods at once (RFC 6749 §2.3)
        elif method == "client_secret_post":
            if len(form["client_id"]) != 1 or len(form.get("client_secret", [])) != 1:
                return None
            client_id, secret = form["client_id"][0], form["client_secret"][0]
        else:
            return None
        known = self.clients.get(client_id)
        return client_id if known is not None and known[0] == secret else None

    def app(self) -> Starlette:
        well_known = "/.well-known/oauth-authorization-server"
        routes = [
            Route(well_known + self.issuer_path, self.metadata, methods=["GET"]),
            Route("/token", self.token, methods=["POST"]),
            Route("/jwks", self.jwks_endpoint, methods=["GET"]),
            Route("/moved/jwks", lambda _: RedirectResponse("/jwks", status_code=301), methods=["GET"]),
            Route("/authorize", self.authorize, methods=["GET"]),
        ]
        inner = Starlette(routes=routes)

        async def counting(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.hits[scope["path"]] += 1
            await inner(scope, receive, send)

        return counting  # type: ignore[return-value]


def _auth_method(request: Request, form: dict[str, list[str]]) -> str:
    if request.headers.get("authorization", "")[:6].lower() == "basic ":
        return "client_secret_basic"
    if "client_id" in form and "client_secret" in form:
        return "client_secret_post"
    return "none"


def _oauth_error(status: int, error: str, description: str, *, basic_challenge: bool = False) -> Response:
    headers = {"cache-control": "no-store"}
    if basic_challenge:
        headers["www-authenticate"] = 'Basic realm="test-as"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest owns the signals
        yield


@contextlib.asynccontextmanager
async def running_oauth_server(
    clients: dict[str, tuple[str, list[str]]] | None = None,
    *,
    issuer_path: str = "",
    trailing_slash: bool = False,
    lifetime: int = 300,
    startup_timeout: float = 10.0,
) -> AsyncIterator[OAuthServer]:
    """Serve an `OAuthServer` on a free port in this event loop; stopped when the block ends."""
    state = OAuthServer(
        port=free_port(),
        clients=dict(DEFAULT_CLIENTS if clients is None else clients),
        issuer_path=issuer_path.rstrip("/"),
        trailing_slash=trailing_slash,
        lifetime=lifetime,
    )
    async with serving(state.app(), state.port, "the authorization server", startup_timeout):
        yield state


@contextlib.asynccontextmanager
async def serving(app: Any, port: int, what: str, startup_timeout: float) -> AsyncIterator[None]:
    """Serve an ASGI app on 127.0.0.1:`port` in this event loop until the block ends."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        try:
            with anyio.fail_after(startup_timeout):
                while not server.started:
                    if server.should_exit:
                        raise RuntimeError(f"{what} could not start on port {port}")
                    await anyio.sleep(0.01)
            yield
        finally:
            server.should_exit = True
