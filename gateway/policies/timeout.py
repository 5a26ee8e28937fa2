"""The `timeout` policy: how long the gateway waits for a backend to start answering.

`backendRequestTimeout` bounds each attempt, `requestTimeout` the whole request with its retries
(gateway/policies/retry.py). Both end when the answer's head arrives: a stream that has started
(SSE, chunked) is never cut. On MCP routes there is no HTTP answer to wait for, so both bound each
JSON-RPC message a target is sent (tools/call, ...), the tighter one winning; see `per_message`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.policies import TimeoutPolicy


@dataclass(frozen=True)
class Timeouts:
    request: float | None = None  # seconds for the whole request (retries included) to start answering
    backend: float | None = None  # seconds for each attempt to start answering

    @property
    def per_message(self) -> float | None:
        """An MCP route's bound on each message to a target: one message is one attempt and the whole request."""
        bounds = [t for t in (self.request, self.backend) if t is not None]
        return min(bounds) if bounds else None


def resolve(policies: Iterable[TimeoutPolicy | None]) -> Timeouts:
    """`policies` from the outermost level in; for each field the innermost level that sets it wins.
    A zero duration counts as unset (it could never be met)."""
    request = backend = None
    for policy in policies:
        if policy is None:
            continue
        request = policy.requestTimeout or request
        backend = policy.backendRequestTimeout or backend
    return Timeouts(request, backend)
