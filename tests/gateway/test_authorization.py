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
