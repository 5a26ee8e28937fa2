"""`authorization`: the reference's request-level CEL rules, on any route, before the backend.

The rule forms and their order are mcpAuthorization's (a matching `deny` denies, every `require`
must hold, then one `allow` must match if there are any), over the whole HTTP request: `request.*`,
`jwt.*`, `apiKey.*`, `basicAuth.*`, `source.*`. A denial is the reference's: 403, text/plain
`authorization failed`.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Scope

from federation.guard import Access
from gateway.config.policies import McpAuthorization
from gateway.policies.authz_cel import RuleSet
from gateway.policies.http import Identity

_REQUEST = Access("")  # a whole HTTP request: no MCP method or item
_DENIED = PlainTextResponse("authorization failed", status_code=403)


class AuthorizationStep:
    def __init__(self, cfg: McpAuthorization) -> None:
        self.rules = RuleSet(cfg)

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        return None if self.rules.decides(scope, _REQUEST) else _DENIED
