"""extAuthz in the reference's form: Envoy ext_authz v3 over gRPC, against a real grpc.aio Authorization
service this test runs on loopback (gateway/policies/envoy_protos.py's messages, no mocks)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import grpc
import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from gateway.policies.envoy_protos import CHECK, CheckRequest, CheckResponse, HeaderValue, HeaderValueOption, Method
from tests.conftest import HEADERS, free_port, http_route_yaml, http_target, mcp_yaml, run_gateway
from tests.gateway.test_ext_authz import call, message, rpc, session
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio

Decide = Callable[[Any], Any]


def unary_handler(method: Method, answer: Callable[[Any, Any], Awaitable[Any]]) -> grpc.GenericRpcHandler:
    """A server-side handler of one unary method, as generated `add_*Servicer_to_server` code makes."""
    handler = grpc.unary_unary_rpc_method_handler(
        answer, request_deserializer=method.request.FromString, response_serializer=method.response.SerializeToString
    )
    return grpc.method_handlers_generic_handler(method.service, {method.name: handler})


class Authorization:
    """Answers each Check with `decide(request)`, keeping every request it was asked."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.seen: list[Any] = []

    async def Check(self, request: Any, context: Any) -> Any:
        self.seen.append(request)
        answer = self.decide(request)
        if isinstance(answer, float):  # a slow service
            await anyio.sleep(answer)
            return ok()
        return answer


@contextlib.asynccontextmanager
async def grpc_serving(handler: Any) -> AsyncIterator[int]:
    """A real gRPC server on a free 127.0.0.1 port serving `handler`; yields the port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def authz_server(decide: Decide) -> AsyncIterator[tuple[int, Authorization]]:
    servicer = Authorization(decide)
    async with grpc_serving(unary_handler(CHECK, servicer.Check)) as port:
        yield port, servicer


def header(key: str, value: str, append: bool | None = None) -> HeaderValueOption:
    option = HeaderValueOption(header=HeaderValue(key=key, value=value))
    if append is not None:
        option.append.value = append
    return option


def ok(*headers: HeaderValueOption, remove: tuple[str, ...] = ()) -> CheckResponse:
    answer = CheckResponse()
    answer.status.code = 0
    answer.ok_response.headers.extend(headers)
    answer.ok_response.headers_to_remove.extend(remove)
    return answer


def denied(status: int, body: str, *headers: HeaderValueOption) -> CheckResponse:
    answer = CheckResponse()
    answer.status.code = 7  # PERMISSION_DENIED
    answer.denied_response.status.code = status  # type: ignore[assignment]
    answer.denied_response.body = body
    answer.denied_response.headers.extend(headers)
    return answer


def by_user(request: CheckRequest) -> CheckResponse:
    user = request.attributes.request.http.headers.get("x-user")
    if user == "alice":
        return ok(header("x-authz-user", "alice"), header("x-tier", "gold", append=True), remove=("x-secret",))
    if user == "mallory":
        return denied(401, "who are you?", header("www-authenticate", 'Bearer realm="corp"'))
    bare = CheckResponse()
    bare.status.code = 7
    return bare


def ext(port: int, **more: Any) -> str:
    return json.dumps({"extAuthz": {"host": f"127.0.0.1:{port}", **more}})


async def test_allow_adds_headers_upstream_and_deny_passes_the_services_answer_on() -> None:
    async with authz_server(by_user) as (port, authz), backend() as (url, _):
        yaml = http_route_yaml(url.removeprefix("http://"), ext(port))
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            base = f"http://127.0.0.1:{gw.port}/api/items?x=1"
            answer = await http.post(
                base,
                content=b"payload",
                headers={"x-user": "alice", "x-authz-user": "forged", "x-secret": "s3", "cookie": "a=1"},
            )
            assert answer.status_code == 200, answer.text
            seen = answer.json()["headers"]
            assert seen["x-authz-user"] == "alice" and "x-secret" not in seen  # set: replaces the client's
            assert seen["x-tier"] == "gold"  # appended (added: the client sent none)
            check = authz.seen[-1].attributes
            http_req = check.request.http
            assert (http_req.method, http_req.path, http_req.host) == ("POST", "/api/items?x=1", f"127.0.0.1:{gw.port}")
            assert http_req.headers[":method"] == "POST" and http_req.headers[":path"] == "/api/items?x=1"
            assert (
                http_req.headers["x-secret"] == "s3" and http_req.headers["cookie"] == "a=1"
            )  # all headers by default
            assert http_req.body == "" and check.source.address.socket_address.address == "127.0.0.1"
            assert dict(check.context_extensions) == {}  # not a JSON-RPC message

            refused = await http.get(base, headers={"x-user": "mallory"})
            assert refused.status_code == 401 and refused.text == "who are you?"
            assert refused.headers["www-authenticate"] == 'Bearer realm="corp"'
            bare = await http.get(base, headers={"x-user": "nobody"})
            assert bare.status_code == 403 and bare.text == "external authorization failed"
            assert len(authz.seen) == 3


async def test_an_mcp_route_check_sees_the_method_and_tool_name(upstream: Any) -> None:
    def decide(request: CheckRequest) -> CheckResponse:
        context = request.attributes.context_extensions
        if context.get("mcp.method") == "tools/call" and context.get("mcp.name") == "grow":
            return denied(403, '{"error": "no growing"}', header("content-type", "application/json"))
        return ok()

    async with authz_server(decide) as (port, authz):
        policies = ext(port, protocol={"grpc": {"context": {"team": "blue"}}}, includeRequestHeaders=["x-user"])
        yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies)
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            headers = await session(http, gw.url, {**HEADERS, "x-user": "ann"})
            first = authz.seen[0].attributes
            assert dict(first.context_extensions) == {"team": "blue", "mcp.method": "initialize"}
            assert dict(first.request.http.headers) == {"x-user": "ann"}  # only those listed
            answer = await http.post(gw.url, json=call("echo", text="hi"), headers=headers)
            assert "web: hi" in answer.text
            assert authz.seen[-1].attributes.context_extensions["mcp.name"] == "echo"
            grow = await http.post(gw.url, json=call("grow", name="x"), headers=headers)
            assert grow.status_code == 403 and grow.json() == {"error": "no growing"}
            read = await http.post(gw.url, json=rpc("resources/read", uri="mem://static"), headers=headers)
            assert "static from web" in message(read)["result"]["contents"][0]["text"]
            last = authz.seen[-1].attributes.context_extensions
            assert (last["mcp.method"], last["mcp.name"]) == ("resources/read", "mem://static")


@pytest.mark.parametrize(
    ("mode", "status", "body"),
    [
        (None, 403, "external authorization failed"),
        ({"denyWithStatus": 503}, 503, "Authorization service unavailable"),
        ("allow", 200, None),
    ],
)
async def test_a_service_that_is_down_or_slow_follows_failure_mode(mode: Any, status: int, body: str | None) -> None:
    extra = {} if mode is None else {"failureMode": mode}
    async with authz_server(lambda _: 5.0) as (slow, _), backend() as (url, _release):
        for port in (free_port(), slow):  # nothing listening; a service slower than requestTimeout
            policies = ext(port, policies={"http": {"requestTimeout": "300ms"}}, **extra)
            yaml = http_route_yaml(url.removeprefix("http://"), policies)
            async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
                with anyio.fail_after(5):
                    answer = await http.get(f"http://127.0.0.1:{gw.port}/api/x")
                assert answer.status_code == status
                if body is not None:
                    assert answer.text == body
                else:
                    assert answer.json()["path"] == "/api/x"


def test_the_reference_shape_validates_and_mixing_forms_is_an_error() -> None:
    reference = """
binds:
- port: 0
  listeners:
  - routes:
    - policies:
        extAuthz:
          host: "127.0.0.1:9000"
          protocol: { grpc: { context: { team: blue }, metadata: { caller: 'jwt.sub' } } }
          failureMode: { denyWithStatus: 503 }
          includeRequestHeaders: [authorization, ":path"]
          includeRequestBody: { maxRequestBytes: 1024, allowPartialMessage: true }
          policies: { http: { requestTimeout: 1s } }
      backends: [{ host: "127.0.0.1:9100" }]
"""
    Gateway(parse_config(reference, "ref.yaml"))
    plain = parse_config(
        reference.replace("failureMode: { denyWithStatus: 503 }", "").replace(
            "protocol: { grpc: { context: { team: blue }, metadata: { caller: 'jwt.sub' } } }", ""
        ),
        "ref.yaml",
    )
    route = plain.binds[0].listeners[0].routes[0]
    assert route.policies.extAuthz.failureMode == "deny" and route.policies.extAuthz.protocol.grpc is not None

    def problem(doc: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as caught:
            Gateway(parse_config(http_route_yaml("127.0.0.1:9100", json.dumps({"extAuthz": doc})), "bad.yaml"))
        return str(caught.value)

    mixed = problem({"http": {"url": "http://127.0.0.1:1/check"}, "host": "127.0.0.1:9000"})
    assert mixed.startswith(
        "bad.yaml: binds[0].listeners[0].routes[0].policies.extAuthz.host: mixes agentplex's HTTP form"
    )
    assert "no service registry" in problem({"service": {"name": {"namespace": "a", "hostname": "b"}, "port": 9000}})
    assert "no top-level backends list" in problem({"backend": "authz"})
    assert "expected deny, allow" in problem({"host": "127.0.0.1:9000", "failureMode": "failOpen"})
    assert "expected exactly one of: host, backend, service" in problem({"failureMode": "deny"})
    assert "not supported by agentplex" in problem({"host": "127.0.0.1:9000", "cache": {"key": ["1"], "ttl": "1s"}})
    assert "reserved" in problem({"host": "127.0.0.1:9000", "protocol": {"grpc": {"context": {"mcp.name": "x"}}}})
