"""Route policies compiled from config: the HTTP stage (authentication, external authorization,
per-request rate limits) and the message-layer guard federation consults (rules, per-message limits).

Levels (mcp block or listener, route, backend) are all applied, outermost first; a refusal or a
denying rule at any level wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp.shared.exceptions import MCPError
from starlette.types import ASGIApp, Scope

from federation.guard import Access
from gateway.config import ConfigError
from gateway.config.policies import HeaderModifier, Policies, UrlRewrite
from gateway.policies.api_key import ApiKeyStep
from gateway.policies.authorization import AuthorizationStep
from gateway.policies.authz_cel import RuleSet
from gateway.policies.basic_auth import BasicAuthStep
from gateway.policies.cors import CorsApp, CorsPolicy
from gateway.policies.direct_response import DirectResponseStep
from gateway.policies.guard import Limiter, PolicyGuard
from gateway.policies.headers import RequestHeadersStep, ResponseHeaders
from gateway.policies.http import Identity, PolicyApp, Refusal, Step
from gateway.policies.jwt import JwtAuthStep
from gateway.policies.mcp_authn import McpAuthenticationStep
from gateway.policies.ratelimit_local import LocalRateLimit
from gateway.policies.redirect import RedirectStep
from gateway.policies.rewrite import UrlRewriteStep

__all__ = ["TOKEN_LIMITS", "PolicyApp", "RouteKind", "RoutePolicies", "compile_policies"]

RouteKind = Literal["http", "mcp", "a2a"]  # what serves the route: some policies depend on it


@dataclass
class RoutePolicies:
    steps: list[Step] = field(default_factory=list)
    guard: PolicyGuard | None = None
    extra_routes: list[tuple[str, ASGIApp]] = field(default_factory=list)  # exact path -> app (PRM documents)
    closers: list[Any] = field(default_factory=list)  # objects with `async aclose()`, closed on shutdown
    response_headers: list[HeaderModifier] = field(default_factory=list)  # applied to every answer
    cors: CorsPolicy | None = None
    # An A2A route's innermost urlRewrite, with where it was set: the route folds it into its agent's URL
    # (gateway/app.py) rather than rewriting each request, since its card is fetched and served by the gateway.
    url_rewrite: tuple[str, UrlRewrite] | None = None

    def observe_limits(self, decided: Callable[[bool], None]) -> None:
        """Have every rate limit of the route report each decision (allowed: True) to `decided`."""
        if self.guard is not None:
            self.guard.decided = decided
        for step in self.steps:
            if hasattr(step, "decided"):  # the per-request rate limits (local, Redis, Envoy's service)
                step.decided = decided  # type: ignore[attr-defined]

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The route's endpoint behind its HTTP-stage steps, then CORS (preflights never reach the
        steps; refusals get CORS headers), then the response header modifiers (they see every answer)."""
        if self.steps:
            app = PolicyApp(app, self.steps)
        if self.cors is not None:
            app = CorsApp(app, self.cors)
        if self.response_headers:
            app = ResponseHeaders(app, self.response_headers)
        return app


def compile_policies(
    levels: Sequence[tuple[str, Policies]],
    *,
    base_dir: Path,
    route_path: str,
    max_body: int = 4 * 1024 * 1024,
    kind: RouteKind = "http",
) -> RoutePolicies:
    """`levels` are (where, policies) pairs, `where` being '<file>: <key.path>' for error messages.

    Steps run authentication, request headers, `authorization` rules, external authorization and rate limits, urlRewrite,
    then the innermost requestRedirect or directResponse answers. The innermost cors wraps them all."""
    out = RoutePolicies()
    authn: list[Step] = []
    headers: list[Step] = []
    later: list[Step] = []
    rewrites: list[Step] = []
    direct: list[Step] = []
    authz: list[Step] = []
    rules: list[RuleSet] = []
    limits: list[Limiter] = []
    for where, p in levels:
        if p.mcpAuthentication is not None:
            step = McpAuthenticationStep(p.mcpAuthentication, base_dir, f"{where}.mcpAuthentication", route_path)
            authn.append(step)
            out.extra_routes.extend(step.extra_routes())
            out.closers.append(step)
        if p.jwtAuth is not None:
            authn.append(JwtAuthStep(p.jwtAuth, base_dir, f"{where}.jwtAuth"))
        if p.apiKey is not None:
            authn.append(ApiKeyStep(p.apiKey))
        if p.basicAuth is not None:
            authn.append(BasicAuthStep(p.basicAuth, base_dir, f"{where}.basicAuth"))
        if p.requestHeaderModifier is not None:
            headers.append(RequestHeadersStep(p.requestHeaderModifier))
        if p.responseHeaderModifier is not None:
            out.response_headers.append(p.responseHeaderModifier)
        if p.directResponse is not None and p.requestRedirect is not None:
            raise ConfigError(f"{where}: directResponse and requestRedirect both answer the request; keep one")
        if p.directResponse is not None:
            direct.append(DirectResponseStep(p.directResponse))
        if p.requestRedirect is not None:
            direct.append(RedirectStep(p.requestRedirect))
        if p.urlRewrite is not None:
            if kind == "mcp":
                raise ConfigError(
                    f"{where}.urlRewrite: applies to plain HTTP and A2A routes, not to an MCP route (the gateway "
                    "serves it itself; its targets have their own URLs)"
                )
            if kind == "a2a":
                out.url_rewrite = (f"{where}.urlRewrite", p.urlRewrite)
            else:
                rewrites.append(UrlRewriteStep(p.urlRewrite))
        if p.cors is not None:
            out.cors = CorsPolicy(p.cors, mcp=kind == "mcp")  # the innermost level's policy
        if p.extAuthz is not None:
            if p.extAuthz.reference and p.extAuthz.protocol.http is not None:  # the reference's HTTP protocol
                from gateway.policies.ext_authz_http_protocol import HttpProtocolExtAuthzStep as Ext
            elif p.extAuthz.reference:  # Envoy ext_authz over gRPC
                from gateway.policies.ext_authz_grpc import GrpcExtAuthzStep as Ext  # type: ignore[assignment]
            else:
                from gateway.policies.ext_authz import ExtAuthzStep as Ext  # type: ignore[assignment]

            ext = Ext(p.extAuthz, f"{where}.extAuthz", max_body)
            later.append(ext)
            out.closers.append(ext)
        if p.mcpAuthorization is not None and p.mcpAuthorization.rules:
            rules.append(RuleSet(p.mcpAuthorization))
        if p.authorization is not None and p.authorization.rules:
            authz.append(AuthorizationStep(p.authorization))
        for cfg in p.localRateLimit or []:
            limit = LocalRateLimit(cfg)
            (limits.append(limit) if limit.scope.per_message else later.append(HttpRateLimitStep(limit)))
        if p.remoteRateLimit is not None and p.remoteRateLimit.reference:  # Envoy's rate-limit service
            from gateway.policies.ratelimit_envoy import compile_envoy_limits

            service, http_steps, message_limits = compile_envoy_limits(p.remoteRateLimit, f"{where}.remoteRateLimit")
            out.closers.append(service)
            later.extend(http_steps)
            limits.extend(message_limits)
        elif p.remoteRateLimit is not None:
            from gateway.policies.ratelimit_remote import remote_limits

            remotes = remote_limits(p.remoteRateLimit, f"{where}.remoteRateLimit")
            out.closers.extend({id(r.store): r.store for r in remotes}.values())  # one Redis pool per policy
            for remote in remotes:
                (limits.append(remote) if remote.scope.per_message else later.append(HttpRateLimitStep(remote)))
    # The innermost urlRewrite applies (one rewrite of the matched prefix), the innermost redirect/directResponse answers.
    # `authorization` rules see the caller and the request as the client sent it, before extAuthz and limits.
    out.steps = authn + headers + authz + later + rewrites[-1:] + direct[-1:]
    if rules or limits:
        out.guard = PolicyGuard(rules, limits)
    return out


_HTTP = Access("")  # a whole HTTP request: no MCP method or item
# scope["state"] key: the (limit, bucket) pairs of tokens limits that let a request through, for its AI
# route to charge with the tokens the answer used (gateway/ai/endpoint.py)
TOKEN_LIMITS = "agentplex.token_limits"


class HttpRateLimitStep:
    """A limit that does not look at MCP messages refuses the whole HTTP request: 429 + Retry-After
    (503 when the limiter itself is unavailable and fails closed)."""

    decided: Callable[[bool], None] | None = None  # told each decision (metrics)

    def __init__(self, limit: Limiter) -> None:
        self.limit = limit

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        bucket = self.limit.scope.bucket(scope, _HTTP)
        if self.limit.scope.cfg.type == "tokens":
            assert isinstance(self.limit, LocalRateLimit)
            wait = await self.limit.admit(bucket)
            if wait is None:
                scope.setdefault("state", {}).setdefault(TOKEN_LIMITS, []).append((self.limit, bucket))
            return self._decided(wait)
        try:
            wait = await self.limit.take(bucket)
        except MCPError as exc:  # the limiter cannot decide (remoteRateLimit failClosed without Redis)
            return Refusal(503, "rate_limiter_unavailable", exc.message)
        return self._decided(wait)

    def _decided(self, wait: float | None) -> ASGIApp | None:
        if self.decided is not None:
            self.decided(wait is None)
        if wait is None:
            return None
        seconds = max(1, math.ceil(wait))
        return Refusal(
            429, "rate_limited", f"rate limit exceeded; retry after {seconds} s", {"retry-after": str(seconds)}
        )
