"""`requestRedirect`: answer with a redirect built from the request, without a backend.

Unset parts come from the request as the client addressed the gateway (X-Forwarded-Proto/-Host
honoured, like the protected-resource metadata). A new `scheme` without a port in `authority` drops
the request's port (the scheme's well-known one applies), as the Gateway API specifies. The query
string is kept; `path.prefix` replaces the matched pathPrefix (see rewrite.replace_path).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Scope

from gateway.config.policies import RequestRedirect
from gateway.policies.http import Identity
from gateway.policies.mcp_authn import public_base
from gateway.policies.rewrite import replace_authority, replace_path, split_authority


class RedirectStep:
    def __init__(self, cfg: RequestRedirect) -> None:
        self.cfg = cfg

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        return Response(status_code=self.cfg.status, headers={"location": self.location(scope)})

    def location(self, scope: Scope) -> str:
        cfg = self.cfg
        scheme, _, authority = public_base(scope).partition("://")
        if cfg.scheme is not None and cfg.scheme != scheme:
            scheme = cfg.scheme
            if cfg.authority is None or cfg.authority.host is not None:
                authority = split_authority(authority)[0]
        if cfg.authority is not None:
            authority = replace_authority(authority, cfg.authority)
        if cfg.path is not None:
            raw = replace_path(scope, cfg.path)[1]
        else:
            raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        return f"{scheme}://{authority}{raw}" + (f"?{query}" if query else "")
