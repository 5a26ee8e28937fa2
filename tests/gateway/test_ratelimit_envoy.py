"""remoteRateLimit in the reference's form: Envoy's rate-limit service over gRPC, against a real grpc.aio
RateLimitService this test runs on loopback (counting per descriptor, OVER_LIMIT past a limit)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, load_config, parse_config
from gateway.policies.envoy_protos import SHOULD_RATE_LIMIT, HeaderValue, RateLimitResponse
from gateway.policies.ratelimit_local import RATE_LIMITED
from gateway.policies.ratelimit_remote import RATE_LIMITER_UNAVAILABLE
from gateway.runtime import Runtime
from tests.conftest import HEADERS, free_port, http_route_yaml, http_target, mcp_yaml, run_gateway, started
from tests.gateway.test_ext_authz import call, message, rpc, session
from tests.gateway.test_ext_authz_grpc import grpc_serving, unary_handler
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio

Key = tuple[str, tuple[tuple[str, str], ...]]


class RateLimits:
    """Allows `limit` hits per (domain, descriptor), then OVER_LIMIT with 30 s until reset."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.hits: Counter[Key] = Counter()
        self.seen: list[Any] = []

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        self.seen.append(request)
        answer = RateLimitResponse(overall_code=RateLimitResponse.OK)
        for descriptor in request.descriptors:
            key = (request.domain, tuple((e.key, e.value) for e in descriptor.entries))
            self.hits[key] += 1
            status = answer.statuses.add(code=RateLimitResponse.OK)
            status.current_limit.requests_per_unit = self.limit
            status.current_limit.unit = RateLimitResponse.RateLimit.MINUTE
            status.limit_remaining = max(0, self.limit - self.hits[key])
            if self.hits[key] > self.limit:
                status.code = RateLimitResponse.OVER_LIMIT
                status.duration_until_reset.FromSeconds(30)
                answer.overall_code = RateLimitResponse.OVER_LIMIT
        if answer.overall_code == RateLimitResponse.OVER_LIMIT:
            answer.raw_body = b"slow down"
            answer.response_headers_to_add.append(HeaderValue(key="content-type", value="text/plain"))
        else:
            answer.request_headers_to_add.append(HeaderValue(key="x-rate-checked", value="yes"))
        return answer


@contextlib.asynccontextmanager
async def rls_server(limit: int) -> AsyncIterator[tuple[int, RateLimits]]:
    servicer = RateLimits(limit)
    async with grpc_serving(unary_handler(SHOULD_RATE_LIMIT, servicer.ShouldRateLimit)) as port:
        yield port, servicer


def policy(port: int, *entries: tuple[str, str], **more: Any) -> str:
    descriptor = {"entries": [{"key": k, "value": v} for k, v in entries], "type": "requests"}
    return json.dumps(
        {"remoteRateLimit": {"domain": "agentplex", "host": f"127.0.0.1:{port}", "descriptors": [descriptor], **more}}
    )


async def test_a_whole_request_limit_answers_429_with_retry_after() -> None:
    async with rls_server(2) as (port, rls), backend() as (url, _):
        yaml = http_route_yaml(url.removeprefix("http://"), policy(port, ("user", 'request.headers["x-user"]')))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/api/items"
            for _ in range(2):
                allowed = await http.get(base, headers={"x-user": "alice"})
                assert allowed.status_code == 200 and allowed.json()["headers"]["x-rate-checked"] == "yes"
            refused = await http.get(base, headers={"x-user": "alice"})
            assert refused.status_code == 429 and refused.text == "slow down"
            assert refused.headers["retry-after"] == "30" and refused.headers["content-type"] == "text/plain"
            assert (refused.headers["x-ratelimit-limit"], refused.headers["x-ratelimit-remaining"]) == ("2", "0")
            assert refused.headers["x-ratelimit-reset"] == "30"
            assert (await http.get(base, headers={"x-user": "bob"})).status_code == 200  # bob has his own count
            asked = len(rls.seen)
            assert (await http.get(base)).status_code == 200  # no x-user: the descriptor is left out, nobody asked
            assert len(rls.seen) == asked
            assert rls.seen[0].domain == "agentplex"
            assert [(e.key, e.value) for e in rls.seen[0].descriptors[0].entries] == [("user", "alice")]


async def test_a_descriptor_on_the_tool_limits_each_tool_call(upstream: Any) -> None:
    async with rls_server(2) as (port, rls):
        policies = policy(port, ("tool", "mcp.tool.name"), ("target", "mcp.tool.target"))
        yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies)
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            headers = await session(http, gw.url, HEADERS)
            assert rls.seen == []  # initialize and notifications have no tool: not asked
            for _ in range(2):
                assert "result" in message(await http.post(gw.url, json=call("echo", text="x"), headers=headers))
            limited = message(await http.post(gw.url, json=call("echo", text="x"), headers=headers))
            assert limited["error"]["code"] == RATE_LIMITED and limited["error"]["data"]["retryAfter"] == 30
            assert "result" in message(await http.post(gw.url, json=call("add", a=1, b=2), headers=headers))
            for _ in range(3):  # listing reads no tool: never charged
                assert "result" in message(await http.post(gw.url, json=rpc("tools/list"), headers=headers))
            entries = [[(e.key, e.value) for e in d.entries] for r in rls.seen for d in r.descriptors]
            assert entries[0] == [("tool", "echo"), ("target", "web")]  # the name the target uses
            assert len(rls.seen) == 4


@pytest.mark.parametrize("mode", ["failClosed", "failOpen", None])
async def test_a_service_that_is_down_follows_failure_mode(mode: str | None, upstream: Any) -> None:
    extra = {} if mode is None else {"failureMode": mode}
    port = free_port()  # nothing listens there
    async with backend() as (url, _):
        yaml = http_route_yaml(url.removeprefix("http://"), policy(port, ("path", "request.path"), **extra))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            with anyio.fail_after(5):
                answer = await http.get(f"http://127.0.0.1:{gw.port}/api/x")
            if mode == "failOpen":
                assert answer.status_code == 200 and answer.json()["path"] == "/api/x"
            else:  # failClosed is the reference's default
                assert answer.status_code == 500 and answer.text == "rate limit failed"
    policies = policy(port, ("tool", "mcp.tool.name"), **extra)
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies)
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, HEADERS)
        answer = message(await http.post(gw.url, json=call("echo", text="x"), headers=headers))
        if mode == "failOpen":
            assert "result" in answer
        else:
            assert answer["error"]["code"] == RATE_LIMITER_UNAVAILABLE


def test_the_reference_example_shape_validates_and_forms_do_not_mix() -> None:
    shape = """
binds:
- port: 3000
  listeners:
  - routes:
    - policies:
        remoteRateLimit:
          domain: "gateway"
          host: "127.0.0.1:8081"
          failureMode: failOpen
          descriptors:
            - entries:
                - key: "caller"
                  value: 'jwt.sub'
                - key: "tool"
                  value: 'mcp.tool.name'
              type: "requests"
            - entries:
                - key: "model"
                  value: '"any"'
              type: tokens
      backends:
      - mcp:
          targets:
          - name: everything
            mcp: { host: "http://127.0.0.1:9001/mcp" }
"""
    cfg = parse_config(shape, "global.yaml")
    Gateway(cfg)
    limit = cfg.binds[0].listeners[0].routes[0].policies.remoteRateLimit
    assert limit.failureMode == "failOpen" and limit.reference
    default = parse_config(shape.replace("failureMode: failOpen", ""), "global.yaml")
    assert default.binds[0].listeners[0].routes[0].policies.remoteRateLimit.failureMode == "failClosed"

    def problem(doc: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as caught:
            Gateway(parse_config(http_route_yaml("127.0.0.1:9100", json.dumps({"remoteRateLimit": doc})), "bad.yaml"))
        return str(caught.value)

    descriptors = [{"entries": [{"key": "a", "value": '"b"'}]}]
    where = "bad.yaml: binds[0].listeners[0].routes[0].policies.remoteRateLimit"
    mixed = problem({"domain": "d", "host": "127.0.0.1:1", "descriptors": descriptors, "limits": []})
    assert mixed.startswith(f"{where}.domain: mixes agentplex's Redis form (limits)")
    assert problem({"host": "127.0.0.1:1", "descriptors": descriptors}).startswith(
        f"{where}.domain: missing required key"
    )
    assert "no service registry" in problem(
        {"domain": "d", "service": {"name": "x", "port": 1}, "descriptors": descriptors}
    )
    bad_cel = problem(
        {"domain": "d", "host": "127.0.0.1:1", "descriptors": [{"entries": [{"key": "a", "value": "("}]}]}
    )
    assert bad_cel.startswith(f"{where}.descriptors[0].entries[0].value: invalid CEL expression")


async def test_a_reload_with_a_malformed_descriptor_names_it_and_the_gateway_keeps_serving(tmp_path: Path) -> None:
    """A config reload whose descriptor is not CEL is refused at the entry's key path; the running config
    (its routes and its limits) keeps serving."""
    async with rls_server(1) as (port, rls), backend() as (url, _):
        head = "config: { adminAddr: null, statsAddr: null }\n"
        good = head + http_route_yaml(url.removeprefix("http://"), policy(port, ("route", '"api"')))
        path = tmp_path / "gateway.yaml"
        path.write_text(good)
        runtime = Runtime(load_config(path), lambda: load_config(path), poll=3600)
        async with started(runtime), httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{next(iter(runtime.sockets.values())).bind.bound_port}/api/items"
            assert (await http.get(base)).status_code == 200
            path.write_text(head + http_route_yaml(url.removeprefix("http://"), policy(port, ("route", "jwt.sub ==("))))
            problems = await runtime.apply()
            where = "binds[0].listeners[0].routes[0].policies.remoteRateLimit.descriptors[0].entries[0].value"
            assert problems and f"{where}: invalid CEL expression" in problems[0], problems
            refused = await http.get(base)  # the old descriptor, still counted by the service
            assert refused.status_code == 429 and refused.text == "slow down"
            assert [(e.key, e.value) for r in rls.seen for d in r.descriptors for e in d.entries][-1] == ("route", "api")
