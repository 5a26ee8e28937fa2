"""A policy service reached over gRPC (the reference's `host:` form of extAuthz and remoteRateLimit).

One channel per policy, opened on first use inside the serving event loop and closed on shutdown or
reload. Reconnect backoff is kept short so a service that comes back is used again within a second.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.config.errors import ConfigError
from gateway.config.policies import ServicePolicies, ServiceRef
from gateway.policies.envoy_protos import Method

DEFAULT_TIMEOUT = 2.0  # seconds per call, unless policies.http.requestTimeout says otherwise
_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def service_target(host: str | None, backend: str | None, service: ServiceRef | None, where: str) -> str:
    """`host` as a gRPC target; `backend` and `service` name things agentplex does not have."""
    if service is not None:
        raise ConfigError(
            f"{where}.service: agentplex has no service registry (Kubernetes services); "
            "give the service's address as host: HOST:PORT"
        )
    if backend is not None:
        raise ConfigError(
            f"{where}.backend: agentplex has no top-level backends list to refer to; "
            "give the service's address as host: HOST:PORT"
        )
    assert host is not None
    target = host.removeprefix("http://")
    if "://" in target or "/" in target:
        raise ConfigError(f"{where}.host: expected HOST:PORT of a plaintext gRPC service, got {host!r}")
    return target


def service_timeout(policies: ServicePolicies | None, where: str) -> float:
    timeout = policies.http.requestTimeout if policies and policies.http else None
    if timeout is None:
        return DEFAULT_TIMEOUT
    if timeout <= 0:
        raise ConfigError(f"{where}.policies.http.requestTimeout: must be greater than 0")
    return timeout


class GrpcService:
    """A lazily opened `grpc.aio` channel and one unary method of the service on it."""

    def __init__(self, target: str, method: Method, timeout: float) -> None:
        self.target = target
        self.method = method
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None

    async def call(self, request: Any, timeout: float) -> Any:
        """The service's answer to `request`; grpc.aio.AioRpcError when the call fails."""
        if self._call is None:  # made on first use, inside the event loop that serves requests
            self._channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
            self._call = self._channel.unary_unary(
                self.method.path,
                request_serializer=self.method.request.SerializeToString,
                response_deserializer=self.method.response.FromString,
            )
        return await self._call(request, timeout=timeout)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._call = None


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
