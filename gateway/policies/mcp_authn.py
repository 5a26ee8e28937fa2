"""`mcpAuthentication`: the MCP authorization spec's resource-server side, with agentgateway's IdP adapters.

Serves OAuth 2.0 Protected Resource Metadata (RFC 9728) for the route, validates bearer JWTs like
`jwtAuth`, answers 401 with `WWW-Authenticate: Bearer resource_metadata="..."` so MCP clients can
discover the authorization server, and 403 `insufficient_scope` when required scopes are missing.

As in agentgateway (its mcp/auth.rs and types/agent.rs), the route also serves the authorization
server's metadata at `/.well-known/oauth-authorization-server<route path>`, fetched from the issuer
and adapted to what MCP clients need when a `provider` names an IdP that does not quite follow the
specs (no RFC 8414, no RFC 8707 `resource`, no CORS on client registration, no registration at
all), and then advertises the gateway itself as the authorization server. Without `jwks`, the
signing keys' URL is derived from the issuer the way each provider publishes it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import ConfigError
from gateway.config.policies import ENFORCED_CLAIMS, Jwks, McpAuthentication
from gateway.policies.http import Identity, Refusal, find_token, header
from gateway.policies.jwt import authenticate, token_scopes, unauthorized, validator_for
from protocols import redaction

logger = logging.getLogger("agentplex.mcp_authn")

WELL_KNOWN = "/.well-known/oauth-protected-resource"
AS_WELL_KNOWN = "/.well-known/oauth-authorization-server"
MCP_PROTOCOL_VERSION = "2025-06-18"  # what agentgateway advertises in the metadata document
_MAX_DOCUMENT = 1024 * 1024  # bytes of an IdP answer the gateway reads
_CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, OPTIONS",
    "access-control-allow-headers": "content-type",
}


def metadata_path(route_path: str) -> str:
    """RFC 9728 §3.1: the well-known prefix goes before the resource's path."""
    return WELL_KNOWN + (route_path.rstrip("/") if route_path != "/" else "")


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def public_base(scope: Scope) -> str:
    """scheme://host as the client sees it, honouring X-Forwarded-Proto/-Host from a proxy in front.

    Values that are not an http(s) scheme or a host[:port] are ignored: they end up inside JSON and
    a quoted WWW-Authenticate parameter, where a stray quote would forge parameters.
    """
    proto = _first(header(scope, "x-forwarded-proto")).lower()
    if proto not in ("http", "https"):
        proto = scope.get("scheme", "http")
    for candidate in (_first(header(scope, "x-forwarded-host")), _first(header(scope, "host"))):
        if _HOST.fullmatch(candidate):
            return f"{proto}://{candidate}"
    address, port = scope.get("server") or ("localhost", None)
    address = f"[{address}]" if ":" in str(address) else address
    return f"{proto}://{address}:{port}" if port else f"{proto}://{address}"


# -- what each provider derives from the issuer (agentgateway's LocalMcpAuthentication, http/oauth.rs) ---------


class IssuerError(ValueError):
    """The issuer does not have the shape its provider needs."""


def _url(issuer: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path) of an http(s) issuer, or IssuerError."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IssuerError(f"issuer {issuer!r} is not an http:// or https:// URL")
    return parts.scheme, parts.netloc.rpartition("@")[2], parts.path


def entra_endpoints(issuer: str) -> dict[str, str]:
    """Entra ID's endpoints for the tenant in the issuer (v2 `https://login.microsoftonline.com/<tenant>/v2.0`
    or v1 `https://sts.windows.net/<tenant>/`); the interactive ones always live on the login host."""
    scheme, authority, path = _url(issuer)
    tenant = next((segment for segment in path.split("/") if segment), None)
    if tenant is None:
        raise IssuerError(
            f"Entra issuer {issuer!r} has no tenant path segment (expected https://login.microsoftonline.com/"
            "<tenant>/v2.0 or https://sts.windows.net/<tenant>/)"
        )
    if urlsplit(issuer).hostname == "sts.windows.net":
        scheme, authority = "https", "login.microsoftonline.com"
    base = f"{scheme}://{authority}/{tenant}"
    return {
        "openid_configuration": f"{base}/v2.0/.well-known/openid-configuration",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
    }


def _descope_agentic(issuer: str) -> tuple[str, str, str] | None:
    """(origin, project id, server id) of a Descope agentic issuer `.../v1/apps/agentic/<project>/<server>`."""
    scheme, authority, path = _url(issuer)
    segments = path.strip("/").split("/")
    if len(segments) >= 5 and segments[:3] == ["v1", "apps", "agentic"]:
        return f"{scheme}://{authority}", segments[3], segments[4]
    return None


def derived_jwks_url(issuer: str, provider: str | None) -> str:
    """Where `provider` publishes the issuer's signing keys (agentgateway's derived_jwks_url)."""
    _url(issuer)
    if provider == "keycloak":
        return f"{issuer}/protocol/openid-connect/certs"
    if provider == "authentik":  # issuers look like https://<host>/application/o/<app-slug>/
        return f"{issuer.rstrip('/')}/jwks/"
    if provider == "entra":
        return entra_endpoints(issuer)["jwks_uri"]
    if provider == "descope" and (agentic := _descope_agentic(issuer)) is not None:
        origin, project, _ = agentic  # the keys live at the project level
        return f"{origin}/{project}/.well-known/jwks.json"
    return f"{issuer}/.well-known/jwks.json"  # no provider, auth0, okta, other Descope issuers


def metadata_source_url(issuer: str, provider: str | None) -> str:
    """Where the authorization server's metadata is fetched from: OIDC discovery for the IdPs that do not
    implement RFC 8414, else RFC 8414's URL (the well-known prefix inserted before the issuer's path)."""
    if provider in ("keycloak", "okta", "descope", "authentik"):
        return f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    if provider == "entra":  # always the v2.0 document, even for a v1 (sts.windows.net) issuer
        return entra_endpoints(issuer)["openid_configuration"]
    scheme, authority, path = _url(issuer)
    return f"{scheme}://{authority}{AS_WELL_KNOWN}{'' if path in ('', '/') else path}"


def registration_url(issuer: str, provider: str | None) -> str:
    """Where client registrations are proxied to (no `clientId`); IssuerError where there is none."""
    issuer = issuer.rstrip("/")
    if provider == "entra":
        raise IssuerError(
            "Entra ID does not support Dynamic Client Registration (RFC 7591); set `clientId` on "
            "mcpAuthentication to a pre-registered app registration"
        )
    if provider == "authentik":
        raise IssuerError(
            "authentik does not support Dynamic Client Registration; set clientId to a pre-registered public client"
        )
    if provider == "okta":  # relative to the org URL, not the issuer
        scheme, authority, _ = _url(issuer)
        return f"{scheme}://{authority}/oauth2/v1/clients"
    if provider == "descope":
        agentic = _descope_agentic(issuer)
        if agentic is None:
            raise IssuerError("Descope DCR requires an agentic issuer URL")
        origin, project, server = agentic
        return f"{origin}/v1/mgmt/mcp/client/{project}/{server}/register"
    return f"{issuer}/clients-registrations/openid-connect"  # keycloak, auth0, no provider


def _snake(key: str) -> str:
    key = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", key)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()


# -- the policy ---------------------------------------------------------------------------------------


class McpAuthenticationStep:
    def __init__(self, cfg: McpAuthentication, base_dir: Path, where: str, route_path: str) -> None:
        self.cfg = cfg
        self.where = where
        self.route_path = route_path
        self.metadata_path = metadata_path(route_path)
        self.as_path = AS_WELL_KNOWN + (route_path.rstrip("/") if route_path != "/" else "")
        self.location = cfg.authorizationLocation.token_location()
        resource = cfg.resourceMetadata.resource
        # The MCP spec: a token must be meant for this resource. With neither `audiences` nor a fixed
        # `resource`, its audience must be the resource URL this route advertises (from the request).
        self.dynamic_audience = not cfg.audiences and resource is None
        jwks = cfg.jwks
        if jwks is None:
            try:
                jwks = Jwks(url=derived_jwks_url(cfg.issuer, cfg.provider))
            except IssuerError as exc:
                raise ConfigError(f"{where}.jwks: not set, and cannot be derived from the issuer: {exc}") from None
        self.jwks_url = jwks.url
        if cfg.provider == "entra":
            try:
                entra_endpoints(cfg.issuer)
            except IssuerError as exc:
                raise ConfigError(f"{where}.issuer: {exc}") from None
        required = list(dict.fromkeys(cfg.jwtValidationOptions.requiredClaims))
        ignored = [c for c in required if c not in ENFORCED_CLAIMS]
        if ignored:
            logger.warning(
                "%s.jwtValidationOptions.requiredClaims: %s not enforced (as in agentgateway only %s are)",
                where,
                ", ".join(ignored),
                ", ".join(ENFORCED_CLAIMS),
            )
        required = [c for c in required if c in ENFORCED_CLAIMS]
        self.validator = validator_for(
            cfg, base_dir, where, [resource] if resource else None, jwks=jwks, required=required
        )
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def resource(self, scope: Scope) -> str:
        return self.cfg.resourceMetadata.resource or public_base(scope) + self.route_path

    def _challenge(self, scope: Scope) -> dict[str, str]:
        """Where the metadata document is: on the configured resource's origin (as in agentgateway), else
        on the host the client used."""
        resource = self.cfg.resourceMetadata.resource
        if resource is not None:
            parts = urlsplit(resource)
            return {"resource_metadata": f"{parts.scheme}://{parts.netloc}{self.metadata_path}"}
        return {"resource_metadata": public_base(scope) + self.metadata_path}

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        token = find_token(scope, self.location)
        identity.consumed.add(self.location)
        claims, refusal = await authenticate(self.validator, token, self.cfg.mode, **self._challenge(scope))
        if claims is None:
            return refusal
        if self.dynamic_audience and not _meant_for(claims.get("aud"), self.resource(scope)):
            if self.cfg.mode == "permissive":
                return None
            return unauthorized("invalid_token", "token has the wrong aud", **self._challenge(scope))
        granted = token_scopes(claims)
        missing = [s for s in self.cfg.scopes if s not in granted]
        if missing:
            description = f"token lacks scope {' '.join(missing)}"
            challenge = {"scope": " ".join(self.cfg.scopes), **self._challenge(scope)}
            refusal = unauthorized("insufficient_scope", description, **challenge)
            refusal.status = 403
            return refusal
        identity.jwt, identity.token, identity.scopes = claims, token, granted
        return None

    # -- the documents and endpoints the route serves -------------------------------------------------

    def extra_routes(self) -> list[tuple[str, ASGIApp]]:
        """(exact path, app) pairs served before the route, without authentication (as in agentgateway)."""
        routes: list[tuple[str, ASGIApp]] = [
            (self.metadata_path, self.metadata_app()),
            (self.as_path, _endpoint(self.authorization_server_metadata, "GET")),
            (self.as_path + "/client-registration", _endpoint(self.client_registration, "POST")),
        ]
        if self.cfg.provider == "entra":
            routes.append((self.as_path + "/authorize", _endpoint(self.entra_authorize, "GET")))
            routes.append((self.as_path + "/token", _endpoint(self.entra_token, "POST")))
        return routes

    def document(self, scope: Scope) -> dict[str, Any]:
        """agentgateway's protected-resource metadata: resource and authorization_servers computed (the
        gateway itself is the authorization server when a provider adapts the IdP), the MCP additions, then
        every configured key in snake_case (a configured `resource` or `authorizationServers` wins)."""
        meta = self.cfg.resourceMetadata
        here = public_base(scope) + self.route_path
        doc: dict[str, Any] = {
            "resource": here,
            "authorization_servers": [here if self.cfg.provider else self.cfg.issuer],
            "mcp_protocol_version": MCP_PROTOCOL_VERSION,
            "resource_type": "mcp-server",
        }
        if self.cfg.scopes:
            doc["scopes_supported"] = self.cfg.scopes  # agentplex: the required scopes, unless configured
        configured = meta.model_dump(exclude_defaults=True)
        configured.update(meta.model_extra or {})
        for key, value in configured.items():
            doc[_snake(key)] = value
        return doc

    def metadata_app(self) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
                await Refusal(405, "method_not_allowed", "use GET", {"allow": "GET, HEAD, OPTIONS"})(
                    scope, receive, send
                )
                return
            body = json.dumps(self.document(scope)).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *((k.encode(), v.encode()) for k, v in _CORS.items()),  # browser-based MCP clients read it cross-origin
                (b"cache-control", b"max-age=300"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

        return app

    async def authorization_server_metadata(self, request: Request) -> Response:
        """The issuer's metadata, adapted per provider; with a provider the gateway is its issuer."""
        cfg = self.cfg
        here = public_base(request.scope) + self.as_path  # the URL this document was asked for
        try:
            source = metadata_source_url(cfg.issuer, cfg.provider)
        except IssuerError as exc:  # an issuer that is not a URL, with jwks configured
            return _failed(f"cannot find the authorization server metadata: {exc}")
        try:
            response = await self.client.get(source, follow_redirects=True)
            response.raise_for_status()
            if len(response.content) > _MAX_DOCUMENT:
                raise ValueError(f"larger than {_MAX_DOCUMENT} bytes")
            doc = response.json()
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except (httpx.HTTPError, ValueError) as exc:
            return _failed(f"cannot fetch the authorization server metadata from {redaction.url(source)}", exc)
        registration = f"{here}/client-registration"
        audience = cfg.audiences[0] if cfg.audiences else None
        try:
            if cfg.provider in ("auth0", "okta"):  # no RFC 8707: the audience goes on the authorize URL
                endpoint = _field(doc, "authorization_endpoint")
                if audience is not None:
                    doc["authorization_endpoint"] = f"{endpoint}?audience={audience}"
            if cfg.provider in ("okta", "descope") and isinstance(doc.get("registration_endpoint"), str):
                doc["registration_endpoint"] = registration  # the IdP's lacks CORS: proxied
            elif cfg.provider == "keycloak":
                _field(doc, "registration_endpoint")
                doc["registration_endpoint"] = registration
            elif cfg.provider == "authentik":
                doc["registration_endpoint"] = registration  # no DCR at all: answered with clientId
            elif cfg.provider == "entra":  # rejects RFC 8707 `resource`: its endpoints are proxied
                _field(doc, "authorization_endpoint")
                _field(doc, "token_endpoint")
                doc["authorization_endpoint"] = f"{here}/authorize"
                doc["token_endpoint"] = f"{here}/token"
                doc["registration_endpoint"] = registration
                doc.setdefault("code_challenge_methods_supported", ["S256"])
        except KeyError as exc:
            return _failed(f"the authorization server metadata from {redaction.url(source)} lacks {exc.args[0]}")
        if cfg.provider is not None:  # RFC 8414 §3.3: the issuer is the URL the metadata was asked for
            doc["issuer"] = public_base(request.scope) + ("" if self.route_path == "/" else self.route_path)
        return JSONResponse(doc, headers=_CORS)

    async def client_registration(self, request: Request) -> Response:
        """RFC 7591 registration: answered for a pre-registered `clientId`, else proxied to the IdP."""
        body = await _bounded_body(request)
        cors = {**_CORS, "access-control-allow-methods": "POST, OPTIONS"}
        if self.cfg.clientId is not None:
            try:
                asked = json.loads(body)
            except ValueError:
                asked = None
            redirect_uris = asked.get("redirect_uris") if isinstance(asked, dict) else None
            answer = {
                "client_id": self.cfg.clientId,
                "client_id_issued_at": 0,
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "redirect_uris": redirect_uris if isinstance(redirect_uris, list) else [],
            }
            return JSONResponse(answer, status_code=201)
        try:
            target = registration_url(self.cfg.issuer, self.cfg.provider)
        except IssuerError as exc:
            return _failed(str(exc))
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        try:
            upstream = await self.client.post(target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _failed(f"cannot register the client at {redaction.url(target)}", exc)
        return _relayed(upstream, cors)

    async def entra_authorize(self, request: Request) -> Response:
        """To Entra's authorize endpoint with the same query minus RFC 8707 `resource` (AADSTS9010010)."""
        endpoint = entra_endpoints(self.cfg.issuer)["authorization_endpoint"]
        query = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "resource"]
        return RedirectResponse(f"{endpoint}?{urlencode(query)}" if request.url.query else endpoint, status_code=302)

    async def entra_token(self, request: Request) -> Response:
        """To Entra's token endpoint without `resource`, with `clientSecret` added for `clientId`'s
        user-delegated grants when the client sent no credential of its own (never for client_credentials:
        this endpoint is reachable without authentication)."""
        endpoint = entra_endpoints(self.cfg.issuer)["token_endpoint"]
        authorization = request.headers.get("authorization")
        form = parse_qsl((await _bounded_body(request)).decode("latin-1"), keep_blank_values=True)
        fields = dict(form)
        kept = [(k, v) for k, v in form if k != "resource"]
        if (
            authorization is None
            and "client_secret" not in fields
            and self.cfg.clientId is not None
            and fields.get("client_id") == self.cfg.clientId
            and fields.get("grant_type") in ("authorization_code", "refresh_token")
            and self.cfg.clientSecret is not None
        ):
            kept.append(("client_secret", self.cfg.clientSecret))
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if authorization is not None:
            headers["authorization"] = authorization
        try:
            upstream = await self.client.post(endpoint, content=urlencode(kept), headers=headers)
        except httpx.HTTPError as exc:
            return _failed(f"cannot reach the token endpoint {redaction.url(endpoint)}", exc)
        return _relayed(upstream, {})


def _field(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise KeyError(name)
    return value


def _failed(problem: str, exc: BaseException | None = None) -> Response:
    """agentgateway answers a failed adaptation 500; the log says why, the body too (no secrets in it)."""
    detail = f"{problem}: {redaction.text(str(exc) or type(exc).__name__)}" if exc is not None else problem
    logger.warning("mcpAuthentication: %s", detail)
    return JSONResponse({"error": "server_error", "error_description": detail}, status_code=500)


def _relayed(upstream: httpx.Response, extra: dict[str, str]) -> Response:
    keep = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "cache-control", "pragma")}
    return Response(upstream.content, status_code=upstream.status_code, headers={**keep, **extra})


class _TooLarge(Exception):
    pass


async def _bounded_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_DOCUMENT:
            raise _TooLarge
    return body


def _endpoint(handler: Any, method: str) -> ASGIApp:
    """An ASGI app for one of the adapter endpoints: `method` only, and CORS preflights (browser clients)."""
    preflight = {**_CORS, "access-control-allow-methods": f"{method}, OPTIONS"}
    if method == "POST":
        preflight["access-control-allow-headers"] = "content-type, authorization"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method == "OPTIONS":
            response: Response = Response(status_code=204, headers=preflight)
        elif request.method != method:
            response = Response(status_code=405, headers={"allow": f"{method}, OPTIONS"})
        else:
            try:
                response = await handler(request)
            except _TooLarge:
                response = JSONResponse(
                    {"error": "invalid_request", "error_description": f"body over {_MAX_DOCUMENT} bytes"},
                    status_code=413,
                )
        await response(scope, receive, send)

    return app


def _meant_for(audience: Any, resource: str) -> bool:
    wanted = resource.rstrip("/")
    values = audience if isinstance(audience, list) else [audience]
    return any(isinstance(v, str) and v.rstrip("/") == wanted for v in values)
