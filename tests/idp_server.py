"""One real identity provider on 127.0.0.1 that publishes each `mcpAuthentication` provider's paths.

Every provider agentgateway adapts puts its keys, metadata and client registration somewhere else
relative to its issuer; this server serves all of them at once, one issuer (a "tenant") per
provider, with one signing key (joserfc, authlib's JOSE library):

    async with running_idp() as idp:
        tenant = idp.tenants["keycloak"]    # .issuer, .jwks_path, .metadata_path, .registration_path, ...
        token = idp.mint("keycloak", audience="mcp_proxy")

| provider  | issuer                         | JWKS                             | metadata (what the gateway fetches)           | registration                            |
|-----------|--------------------------------|----------------------------------|-----------------------------------------------|-----------------------------------------|
| none      | /plain                         | {issuer}/.well-known/jwks.json   | /.well-known/oauth-authorization-server/plain  | {issuer}/clients-registrations/openid-connect |
| auth0     | /auth0                         | {issuer}/.well-known/jwks.json   | /.well-known/oauth-authorization-server/auth0  | {issuer}/clients-registrations/openid-connect |
| keycloak  | /realms/mcp                    | {issuer}/protocol/openid-connect/certs | {issuer}/.well-known/openid-configuration | {issuer}/clients-registrations/openid-connect |
| okta      | /oauth2/default                | {issuer}/.well-known/jwks.json   | {issuer}/.well-known/openid-configuration     | /oauth2/v1/clients                      |
| descope   | /v1/apps/agentic/P1/S1         | /P1/.well-known/jwks.json        | {issuer}/.well-known/openid-configuration     | /v1/mgmt/mcp/client/P1/S1/register      |
| authentik | /application/o/tools/          | {issuer}jwks/                    | {issuer}.well-known/openid-configuration      | none (authentik has no DCR)             |
| entra     | /tenant-1/v2.0                 | /tenant-1/discovery/v2.0/keys    | {issuer}/.well-known/openid-configuration     | none; token at /tenant-1/oauth2/v2.0/token |

Every request is recorded in `requests` (method, path, query, headers, body); `down()` makes every
path answer 503. Token and registration endpoints answer canned documents the tests can recognise.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tests.conftest import free_port
from tests.oauth_server import serving

PROVIDERS = (None, "auth0", "keycloak", "okta", "descope", "authentik", "entra")


@dataclass
class Tenant:
    provider: str | None
    issuer: str
    jwks_path: str
    metadata_path: str
    registration_path: str | None  # None: the IdP has no client registration (not in its metadata)
    authorize_path: str
    token_path: str


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Idp:
    port: int
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "idp-1"}, private=True))
    requests: list[Recorded] = field(default_factory=list)
    status: int | None = None  # every path answers this instead (an IdP that is down)
    tenants: dict[str | None, Tenant] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = self.base
        well_known = "/.well-known/oauth-authorization-server"
        oidc = "/.well-known/openid-configuration"
        for tenant in [
            Tenant(None, f"{b}/plain", "/plain/.well-known/jwks.json", f"{well_known}/plain",
                   "/plain/clients-registrations/openid-connect", "/plain/authorize", "/plain/token"),
            Tenant("auth0", f"{b}/auth0", "/auth0/.well-known/jwks.json", f"{well_known}/auth0",
                   "/auth0/clients-registrations/openid-connect", "/auth0/authorize", "/auth0/oauth/token"),
            Tenant("keycloak", f"{b}/realms/mcp", "/realms/mcp/protocol/openid-connect/certs", f"/realms/mcp{oidc}",
                   "/realms/mcp/clients-registrations/openid-connect", "/realms/mcp/protocol/openid-connect/auth",
                   "/realms/mcp/protocol/openid-connect/token"),
            Tenant("okta", f"{b}/oauth2/default", "/oauth2/default/.well-known/jwks.json", f"/oauth2/default{oidc}",
                   "/oauth2/v1/clients", "/oauth2/default/v1/authorize", "/oauth2/default/v1/token"),
            Tenant("descope", f"{b}/v1/apps/agentic/P1/S1", "/P1/.well-known/jwks.json",
                   f"/v1/apps/agentic/P1/S1{oidc}", "/v1/mgmt/mcp/client/P1/S1/register",
                   "/oauth2/v1/apps/authorize", "/oauth2/v1/apps/token"),
            Tenant("authentik", f"{b}/application/o/tools/", "/application/o/tools/jwks/",
                   f"/application/o/tools{oidc}", None, "/application/o/authorize/", "/application/o/token/"),
            Tenant("entra", f"{b}/tenant-1/v2.0", "/tenant-1/discovery/v2.0/keys", f"/tenant-1/v2.0{oidc}", None,
                   "/tenant-1/oauth2/v2.0/authorize", "/tenant-1/oauth2/v2.0/token"),
        ]:  # fmt: skip
            self.tenants[tenant.provider] = tenant

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def mint(self, provider: str | None, *, audience: str | None = None, **extra: Any) -> str:
        """A token from `provider`'s issuer; `extra` adds claims (None drops one: `exp=None`)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.tenants[provider].issuer,
            "sub": "user-1",
            "aud": audience,
            "scope": "openid profile",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": self.key.kid}, claims, self.key)

    def metadata(self, tenant: Tenant) -> dict[str, Any]:
        """The IdP's own metadata (OIDC discovery or RFC 8414 shaped), before any gateway adapts it."""
        doc: dict[str, Any] = {
            "issuer": tenant.issuer,
            "authorization_endpoint": self.base + tenant.authorize_path,
            "token_endpoint": self.base + tenant.token_path,
            "jwks_uri": self.base + tenant.jwks_path,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        }
        if tenant.registration_path is not None:
            doc["registration_endpoint"] = self.base + tenant.registration_path
        return doc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        self.requests.append(Recorded(request.method, request.url.path, request.url.query, dict(request.headers), body))
        await self._answer(request, body)(scope, receive, send)

    def _answer(self, request: Request, body: bytes) -> Response:
        if self.status is not None:
            return JSONResponse({"error": "unavailable"}, status_code=self.status)
        path = request.url.path
        for tenant in self.tenants.values():
            if path == tenant.jwks_path and request.method == "GET":
                return JSONResponse({"keys": [{**self.key.as_dict(private=False), "use": "sig", "alg": "RS256"}]})
            if path == tenant.metadata_path and request.method == "GET":
                return JSONResponse(self.metadata(tenant))
            if path == tenant.registration_path and request.method == "POST":
                asked = json.loads(body or b"{}")
                return JSONResponse({**asked, "client_id": f"registered-at-{tenant.provider}"}, status_code=201)
            if path == tenant.token_path and request.method == "POST":
                return JSONResponse({"access_token": "from-the-idp", "token_type": "Bearer", "expires_in": 60})
        return JSONResponse({"error": "not_found"}, status_code=404)


@contextlib.asynccontextmanager
async def running_idp(startup_timeout: float = 10.0) -> AsyncIterator[Idp]:
    """Serve an `Idp` on a free port in this event loop; stopped when the block ends."""
    idp = Idp(port=free_port())
    async with serving(idp, idp.port, "the identity provider", startup_timeout):
        yield idp
