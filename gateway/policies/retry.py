"""The `retry` policy for plain HTTP and A2A routes, with `timeout.requestTimeout` as its deadline.

Semantics (agentgateway's reading): `attempts` counts every try, the first included. A try is repeated
when it never reached the backend (connect refused or failed, no free connection) whatever the method,
and when the backend answered with a status in `codes` (or, with 504 in `codes`, did not start answering
within `backendRequestTimeout`) only for idempotent methods: a POST that reached the backend may have
done its work. A body is replayed from memory, so one over 64 KiB is sent once, like a streamed one
that has not ended by then. When the tries run out the last answer (or failure) is the caller's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx

from gateway.config.policies import RetryPolicy
from protocols.a2a.proxy import AgentUnavailable, Attempt, Content, Upstream

logger = logging.getLogger("agentplex.retry")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})  # RFC 9110 §9.2.2
MAX_REPLAY_BODY = 64 * 1024
# The request never left the gateway: trying again cannot do anything twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Delivery:
    """A route's way of sending each request (protocols.a2a.proxy.Sending): tries and the overall deadline."""

    attempts: int = 1
    backoff: float = 0.0
    codes: frozenset[int] = frozenset()
    deadline: float | None = None  # requestTimeout: until the answer starts, retries included

    async def send(self, upstream: Upstream, method: str, content: Content, attempt: Attempt) -> httpx.Response:
        with anyio.move_on_after(self.deadline) as scope:
            return await self._tries(upstream, method, content, attempt)
        assert scope.cancelled_caught and self.deadline is not None
        raise AgentUnavailable(
            504, f"{upstream.kind} {upstream.agent!r} did not answer within {self.deadline:g} s (requestTimeout)"
        )

    async def _tries(self, upstream: Upstream, method: str, content: Content, attempt: Attempt) -> httpx.Response:
        if self.attempts > 1 and content is not None and not isinstance(content, bytes):
            content = await _buffered(content)
        replayable = content is None or isinstance(content, bytes)
        idempotent = method in IDEMPOTENT
        for n in range(1, self.attempts + 1):
            last = n == self.attempts or not replayable
            try:
                response = await attempt(content)
            except _NOT_SENT as exc:
                if last:
                    raise
                why = type(exc).__name__
            except TimeoutError:  # this attempt's backendRequestTimeout
                if last or not idempotent or 504 not in self.codes:
                    raise
                why = "no answer in time"
            else:
                if last or not idempotent or response.status_code not in self.codes:
                    return response
                why = f"status {response.status_code}"
                await response.aclose()  # a failed attempt's answer is dropped
            logger.info(
                "%s %r: attempt %d of %d failed (%s); retrying", upstream.kind, upstream.agent, n, self.attempts, why
            )
            await anyio.sleep(self.backoff)
        raise AssertionError("unreachable: the last attempt returns or raises")


async def _buffered(content: AsyncIterator[bytes]) -> Content:
    """The whole body as bytes (replayable) when it ends within MAX_REPLAY_BODY, else a stream that
    yields what was read and then the rest (sent once)."""
    head = bytearray()
    async for chunk in content:
        head += chunk
        if len(head) > MAX_REPLAY_BODY:
            return _chain(bytes(head), content)
    return bytes(head)


async def _chain(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


def delivery(retry: RetryPolicy | None, request_timeout: float | None) -> Delivery | None:
    """The route's Delivery; None when it has neither retries nor an overall deadline (send once)."""
    if (retry is None or retry.attempts == 1) and request_timeout is None:
        return None
    if retry is None:
        return Delivery(deadline=request_timeout)
    return Delivery(retry.attempts, retry.backoff, frozenset(retry.codes), request_timeout)
