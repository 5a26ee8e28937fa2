"""`remoteRateLimit` in the reference's form: Envoy's rate-limit service
(`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) over gRPC at `host`.

Each descriptor's entries are CEL expressions; a descriptor whose entry cannot be evaluated (or is not
a string, number or boolean) is left out, as the reference does, and when none is left the service is
not asked. Descriptors of `type: tokens` count LLM tokens in the reference and are never sent here
(agentplex has no LLM routes). A descriptor that reads `mcp.*` (or `a2a.*`) is charged per MCP message,
like the other limits, the others per HTTP request; `mcp.tool.name` is the name the target uses.

Per request, OVER_LIMIT answers 429 with the service's `raw_body` and `response_headers_to_add`, plus
`Retry-After` (the longest `duration_until_reset` of the descriptors over their limit) and
`x-ratelimit-limit`/`-remaining`/`-reset` (the first of them) unless the service sets those itself; OK
adds `request_headers_to_add` to the request. Per message, OVER_LIMIT is the JSON-RPC rate-limit error
(-32029, `data.retryAfter`). A service that is down or slow (`policies.http.requestTimeout`, default
2 s): `failClosed` (the default) answers 500 "rate limit failed" as the reference does (a -32030
JSON-RPC error per message), `failOpen` lets the request through.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import anyio
import grpc
from mcp.shared.exceptions import MCPError
from starlette.types import ASGIApp, Scope

from federation.guard import Access
from gateway.config.policies import Descriptor, RemoteRateLimit
from gateway.policies.cel_context import EvalError, Expr
from gateway.policies.envoy_protos import SHOULD_RATE_LIMIT, RateLimitRequest, RateLimitResponse
from gateway.policies.ext_authz_grpc import Answer
from gateway.policies.grpc_service import GrpcService, failure_reason, service_target, service_timeout
from gateway.policies.http import Identity, headers_changed
from gateway.policies.ratelimit_remote import RATE_LIMITER_UNAVAILABLE

logger = logging.getLogger("agentplex.ratelimit")

OVER_LIMIT = RateLimitResponse.OVER_LIMIT
WARN_EVERY = 10.0  # seconds between two "service unavailable" warnings of one policy
_HTTP = Access("")
_MESSAGE_VARS = frozenset({"mcp", "a2a"})

Entries = list[tuple[str, str]]


class RateLimitService:
    """One policy's channel to the service, its domain and its failure mode."""

    def __init__(self, cfg: RemoteRateLimit, where: str) -> None:
        assert cfg.domain is not None
        self.domain = cfg.domain
        self.where = where
        self.fail_open = cfg.failureMode == "failOpen"
        target = service_target(cfg.host, cfg.backend, cfg.service, where)
        self.grpc = GrpcService(target, SHOULD_RATE_LIMIT, service_timeout(cfg.policies, where))
        self._last_warning = -WARN_EVERY

    async def ask(self, descriptors: list[Entries]) -> RateLimitResponse | None:
        """The service's answer; None when it failed (the caller applies failureMode)."""
        request = RateLimitRequest(domain=self.domain)
        for entries in descriptors:
            descriptor = request.descriptors.add()
            for key, value in entries:
                descriptor.entries.add(key=key, value=value)
        timeout = self.grpc.timeout
        try:
            with anyio.fail_after(timeout + 1):
                return await self.grpc.call(request, timeout)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY:
                self._last_warning = now
                outcome = "requests pass (failOpen)" if self.fail_open else "requests are refused (failClosed)"
                logger.warning("%s: rate-limit service failed (%s); %s", self.where, failure_reason(exc), outcome)
            return None

    async def aclose(self) -> None:
        await self.grpc.aclose()


class Descriptors:
    """Compiled descriptors; `evaluate` gives those whose every entry has a value."""

    def __init__(self, descriptors: list[Descriptor]) -> None:
        self.items = [[(e.key, Expr(e.value)) for e in d.entries] for d in descriptors]

    def evaluate(self, request: Any, access: Access) -> list[Entries]:
        out: list[Entries] = []
        for entries in self.items:
            values: Entries = []
            for key, expr in entries:
                try:
                    text = _text(expr.evaluate(request, access))
                except EvalError:
                    text = None
                if text is None:
                    break
                values.append((key, text))
            else:
                out.append(values)
        return out


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def compile_envoy_limits(cfg: RemoteRateLimit, where: str) -> tuple[RateLimitService, list[Any], list[Any]]:
    """The service, the per-request steps and the per-message limiters of one policy."""
    service = RateLimitService(cfg, where)
    counted = [d for d in cfg.descriptors if d.type == "requests"]
    if not counted:
        logger.warning("%s: only `type: tokens` descriptors, which count LLM tokens; nothing is limited here", where)
    per_message = [d for d in counted if any(Expr(e.value).reads & _MESSAGE_VARS for e in d.entries)]
    per_request = [d for d in counted if d not in per_message]
    steps = [EnvoyRateLimitStep(service, Descriptors(per_request))] if per_request else []
    limiters = [EnvoyMessageLimit(service, Descriptors(per_message))] if per_message else []
    return service, steps, limiters


class EnvoyRateLimitStep:
    """Descriptors that do not read MCP messages: the whole HTTP request is charged."""

    decided: Any = None  # told each decision (metrics)

    def __init__(self, service: RateLimitService, descriptors: Descriptors) -> None:
        self.service = service
        self.descriptors = descriptors

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        descriptors = self.descriptors.evaluate(scope, _HTTP)
        if not descriptors:
            return None
        answer = await self.service.ask(descriptors)
        if answer is None:
            return None if self.service.fail_open else Answer(500, [], b"rate limit failed")
        allowed = answer.overall_code != OVER_LIMIT
        if self.decided is not None:
            self.decided(allowed)
        if not allowed:
            headers = _limit_headers(answer)
            for h in answer.response_headers_to_add:
                key = h.key.lower().encode("latin-1")
                headers = [(k, v) for k, v in headers if k != key] + [(key, _raw(h))]
            return Answer(429, headers, answer.raw_body)
        if answer.request_headers_to_add:
            headers = list(scope.get("headers", ()))
            for h in answer.request_headers_to_add:
                key = h.key.lower().encode("latin-1")
                if key and key not in (b"host", b"content-length", b"transfer-encoding"):
                    headers = [(k, v) for k, v in headers if k != key] + [(key, _raw(h))]
            scope["headers"] = headers
            headers_changed(scope)
        return None


def _raw(header: Any) -> bytes:
    return header.raw_value or header.value.encode("latin-1", "replace")


def _limit_headers(answer: RateLimitResponse) -> list[tuple[bytes, bytes]]:
    over = [s for s in answer.statuses if s.code == OVER_LIMIT]
    headers: list[tuple[bytes, bytes]] = []
    wait = _wait(answer)
    if wait is not None:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(wait))))
    first = next((s for s in over if s.HasField("current_limit")), None)
    if first is not None:
        headers.append((b"x-ratelimit-limit", b"%d" % first.current_limit.requests_per_unit))
        headers.append((b"x-ratelimit-remaining", b"%d" % first.limit_remaining))
        if first.HasField("duration_until_reset"):
            headers.append(
                (b"x-ratelimit-reset", b"%d" % math.ceil(first.duration_until_reset.ToTimedelta().total_seconds()))
            )
    return headers


def _wait(answer: RateLimitResponse) -> float | None:
    """Seconds until every descriptor over its limit is reset (None: the service did not say)."""
    waits = [
        s.duration_until_reset.ToTimedelta().total_seconds()
        for s in answer.statuses
        if s.code == OVER_LIMIT and s.HasField("duration_until_reset")
    ]
    return max(waits) if waits else None


class _MessageScope:
    """The `Scope` a guard asks: every MCP message applies; its bucket is its evaluated descriptors."""

    per_message = True

    def __init__(self, descriptors: Descriptors) -> None:
        self.descriptors = descriptors

    def applies(self, access: Access) -> bool:
        return True

    def bucket(self, request: Any, access: Access) -> str:
        return json.dumps(self.descriptors.evaluate(request, access))


class EnvoyMessageLimit:
    """Descriptors that read `mcp.*`: each MCP message is charged (a `Limiter` for the guard)."""

    def __init__(self, service: RateLimitService, descriptors: Descriptors) -> None:
        self.service = service
        self.scope = _MessageScope(descriptors)

    async def take(self, key: str) -> float | None:
        """None if allowed, else seconds to wait (1 when the service does not say)."""
        descriptors = [[(k, v) for k, v in entries] for entries in json.loads(key)]
        if not descriptors:
            return None
        answer = await self.service.ask(descriptors)
        if answer is None:
            if self.service.fail_open:
                return None
            raise MCPError(
                RATE_LIMITER_UNAVAILABLE,
                "Rate limiter unavailable: the rate-limit service did not answer, so the request is refused (failClosed)",
            )
        if answer.overall_code != OVER_LIMIT:
            return None
        wait = _wait(answer)
        return wait if wait is not None and wait > 0 else 1.0
