"""`mcpAuthentication`: the MCP authorization spec's resource-server side.

Serves OAuth 2.0 Protected Resource Metadata (RFC 9728) for the route, validates bearer JWTs like
`jwtAuth`, answers 401 with `WWW-Authenticate: Bearer resource_metadata="..."` so MCP clients can
discover the authorization server, and 403 `insufficient_scope` when required scopes are missing.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config.policies import McpAuthentication, TokenLocation
from gateway.policies.http import Identity, Refusal, find_token, header
from gateway.policies.jwt import authenticate, token_scopes, unauthorized, validator_for

logger = logging.getLogger("agentplex.mcp_authn")

WELL_KNOWN = "/.well-known/oauth-protected-resource"
_BEARER = TokenLocation()


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


class McpAuthenticationStep:
    def __init__(self, cfg: McpAuthentication, base_dir: Path, where: str, route_path: str) -> None:
        self.cfg = cfg
        self.route_path = route_path
        self.metadata_path = metadata_path(route_path)
        resource = cfg.resourceMetadata.resource
        # The MCP spec: a token must be meant for this resource. With neither `audiences` nor a fixed
        # `resource`, its audience must be the resource URL this route advertises (from the request).
        self.dynamic_audience = not cfg.audiences and resource is None
        self.validator = validator_for(cfg, base_dir, where, [resource] if resource else None)

    def resource(self, scope: Scope) -> str:
        return self.cfg.resourceMetadata.resource or public_base(scope) + self.route_path

    def _challenge(self, scope: Scope) -> dict[str, str]:
        return {"resource_metadata": public_base(scope) + self.metadata_path}

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        token = find_token(scope, _BEARER)
        identity.consumed.add(_BEARER)
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

    def document(self, scope: Scope) -> dict[str, Any]:
        meta = self.cfg.resourceMetadata
        doc: dict[str, Any] = {
            "resource": self.resource(scope),
            "authorization_servers": meta.authorizationServers or [self.cfg.issuer],
            "bearer_methods_supported": meta.bearerMethodsSupported,
        }
        if meta.scopesSupported or self.cfg.scopes:
            doc["scopes_supported"] = meta.scopesSupported or self.cfg.scopes
        if meta.resourceName:
            doc["resource_name"] = meta.resourceName
        if meta.resourceDocumentation:
            doc["resource_documentation"] = meta.resourceDocumentation
        doc.update(meta.model_extra or {})
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
                (b"access-control-allow-origin", b"*"),  # browser-based MCP clients read it cross-origin
                (b"cache-control", b"max-age=300"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

        return app


def _meant_for(audience: Any, resource: str) -> bool:
    wanted = resource.rstrip("/")
    values = audience if isinstance(audience, list) else [audience]
    return any(isinstance(v, str) and v.rstrip("/") == wanted for v in values)
