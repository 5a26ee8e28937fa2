"""`authorization`: the reference's request-level CEL rules on plain HTTP and MCP routes; a denial is
its 403 `authorization failed`, and nothing behind the route sees the request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import http_route_yaml, http_target, mcp_yaml, run_gateway
from tests.gateway.test_auth import SIGNER, bearer, initialize, jwt_policy
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio


def _rules(*rules: Any) -> str:
    return json.dumps({"authorization": {"rules": list(rules)}})


async def test_rules_on_a_plain_http_route() -> None:
    rules = _rules({"deny": 'request.headers["x-block"] == "yes"'}, 'request.method == "GET"')
    async with (
        backend() as (url, _),
        run_gateway(http_route_yaml(url.removeprefix("http://"), rules)) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        base = f"http://127.0.0.1:{gw.port}/api/thing"
        allowed = await http.get(base)
        assert allowed.status_code == 200 and allowed.json()["path"] == "/api/thing"
        for refused in (await http.post(base, content=b"x"), await http.get(base, headers={"x-block": "yes"})):
            assert refused.status_code == 403, refused.text
            assert refused.text == "authorization failed"
            assert refused.headers["content-type"].startswith("text/plain")
            assert "x-backend" not in refused.headers  # the backend never saw it


async def test_rules_see_the_caller_on_an_mcp_route(upstream: Any) -> None:
    policies = jwt_policy()[:-1] + ", authorization: {rules: [{require: 'jwt.sub == \"alice\"'}]}}"
    async with (
        run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies)) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        assert (await initialize(http, gw.url, bearer(SIGNER.token("alice")))).status_code == 200
        bob = await initialize(http, gw.url, bearer(SIGNER.token("bob")))
        assert (bob.status_code, bob.text) == (403, "authorization failed")
        nobody = await initialize(http, gw.url, {"accept": "application/json, text/event-stream"})
        assert nobody.status_code == 401  # authentication first


def test_a_bad_rule_is_a_config_error_at_its_key_path() -> None:
    text = http_route_yaml("127.0.0.1:1", _rules("request.method ==")).replace("\n", "\n", 1)
    with pytest.raises(ConfigError) as err:
        Gateway(parse_config(text, "gw.yaml"))
    assert "gw.yaml: binds[0].listeners[0].routes[0].policies.authorization.rules[0]" in str(err.value), err.value


async def test_the_reference_ip_and_cidr_functions_in_rules() -> None:
    """A route as the reference's traffic example writes its `ip-rules` one: a block-scalar rule calling
    `cidr(...).containsIP(source.address)` in front of a direct response."""
    text = """
binds:
- port: 0
  listeners:
  - protocol: HTTP
    routes:
    - name: ip-rules
      matches:
      - path:
          pathPrefix: /ips
      policies:
        authorization:
          rules:
          - |
            cidr("127.0.0.1/8").containsIP(source.address)
        directResponse:
          body: hello!
          status: 200
    - name: elsewhere
      matches:
      - path:
          pathPrefix: /other
      policies:
        authorization:
          rules:
          - 'cidr("10.0.0.0/8").containsIP(source.address) || cidr("2001:db8::/32").containsIP(source.address)'
          - deny: 'isCIDR(request.headers["x-net"]) && cidr(request.headers["x-net"]).containsCIDR("127.0.0.0/16")'
          - '!isIP(request.headers["x-ip"]) && ip(source.address) == "127.0.0.1"'
        directResponse:
          body: other
          status: 200
"""
    async with run_gateway(text) as gw, httpx.AsyncClient(timeout=20) as http:
        base = f"http://127.0.0.1:{gw.port}"
        allowed = await http.get(f"{base}/ips")
        assert (allowed.status_code, allowed.text) == (200, "hello!")
        assert (await http.get(f"{base}/other", headers={"x-ip": "1.2.3.4"})).status_code == 403
        assert (await http.get(f"{base}/other", headers={"x-ip": "not an ip"})).text == "other"
        denied = await http.get(f"{base}/other", headers={"x-ip": "no", "x-net": "127.0.0.0/8"})
        assert (denied.status_code, denied.text) == (403, "authorization failed")
        assert (await http.get(f"{base}/other", headers={"x-ip": "no", "x-net": "10.0.0.0/8"})).status_code == 200


def test_ip_and_cidr_functions_answer_as_the_references() -> None:
    from gateway.policies import cel_net

    assert cel_net.contains_ip(cel_net.cidr("192.168.0.1/24"), "192.168.0.200")
    assert not cel_net.contains_ip("192.168.0.0/24", "192.168.1.1")
    assert not cel_net.contains_ip("::/0", "127.0.0.1")  # families do not mix
    assert cel_net.contains_ip("127.0.0.0/8", "::ffff:127.0.0.1")  # a dual-stack socket's IPv4 caller
    assert cel_net.contains_cidr("10.0.0.0/8", "10.1.0.0/16") and not cel_net.contains_cidr("10.1.0.0/16", "10.0.0.0/8")
    assert cel_net.is_ip("2001:db8::1") and not cel_net.is_ip("fe80::1%eth0") and not cel_net.is_ip("1.2.3.4/32")
    assert cel_net.is_cidr("1.2.3.4/32") and not cel_net.is_cidr("1.2.3.4") and not cel_net.is_cidr("1.2.3.4/33")
    assert cel_net.ip("2001:DB8::0:1") == "2001:db8::1"
    assert cel_net.called('cidr("a").containsIP(x) && ip(y) == z') == ("cidr", "containsIP", "ip")
    assert cel_net.called('request.headers["zip"] == "1"') == ()
