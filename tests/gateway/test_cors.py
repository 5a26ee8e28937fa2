"""cors over real sockets: preflights answered before authentication, CORS headers on every allowed answer."""

from __future__ import annotations

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import HEADERS, INIT, http_route_yaml, mcp_yaml, run_gateway, stdio_target
from tests.gateway.test_auth import SIGNER, bearer, jwt_policy
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio

APP = "https://app.example.com"
CORS = (
    "{cors: {allowOrigins: [https://app.example.com, 'https://*.example.org'], allowMethods: [GET, PUT],"
    " allowHeaders: [X-Custom], exposeHeaders: [x-backend], maxAge: 10m}}"
)


def preflight(origin: str, method: str = "PUT", headers: str = "x-custom") -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method, "access-control-request-headers": headers}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_preflights_and_actual_requests_on_an_http_route() -> None:
    async with backend() as (url, _), run_gateway(http_route_yaml(url, CORS)) as gw, httpx.AsyncClient(timeout=20) as http:
        api = f"http://127.0.0.1:{gw.port}/api/items"
        allowed = await http.options(api, headers=preflight(APP))
        assert allowed.status_code == 204  # answered by the gateway: the backend does not serve OPTIONS
        assert cors_headers(allowed) == {
            "access-control-allow-origin": APP,
            "access-control-allow-methods": "GET, PUT",
            "access-control-allow-headers": "x-custom",
            "access-control-max-age": "600",
        }
        assert allowed.headers["vary"] == "Origin"
        wildcard = await http.options(api, headers=preflight("https://eu.shop.example.org"))
        assert wildcard.headers["access-control-allow-origin"] == "https://eu.shop.example.org"
        for origin in ("https://evil.test", "https://example.org", "http://app.example.com"):
            denied = await http.options(api, headers=preflight(origin))
            assert (denied.status_code, cors_headers(denied)) == (403, {}), origin

        actual = await http.put(api, content=b"x", headers={"origin": APP})
        assert actual.json()["method"] == "PUT"  # reached the backend
        assert cors_headers(actual) == {"access-control-allow-origin": APP, "access-control-expose-headers": "x-backend"}
        assert actual.headers["vary"] == "Origin"
        other = await http.get(api, headers={"origin": "https://evil.test"})
        assert other.status_code == 200 and cors_headers(other) == {}  # passes, but the browser cannot read it
        assert other.headers["vary"] == "Origin"
        plain = await http.options(api, headers={"origin": APP})  # not a preflight: the backend's business
        assert plain.status_code == 405 and plain.headers["access-control-allow-origin"] == APP


async def test_a_preflight_reaches_the_route_of_the_method_it_asks_about() -> None:
    text = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: writes
      matches: [{{path: {{pathPrefix: /api}}, method: PUT}}]
      policies: {{cors: {{allowOrigins: [{APP}], allowMethods: [PUT]}}, directResponse: {{body: written}}}}
    - {{name: rest, policies: {{directResponse: {{body: rest}}}}}}
"""
    async with run_gateway(text) as gw, httpx.AsyncClient(timeout=20) as http:
        api = f"http://127.0.0.1:{gw.port}/api/x"
        asked = await http.options(api, headers=preflight(APP))
        assert asked.status_code == 204 and asked.headers["access-control-allow-methods"] == "PUT"
        assert (await http.options(api, headers=preflight(APP, "GET"))).text == "rest"
        assert (await http.options(api)).text == "rest"


async def test_any_origin_and_credentials() -> None:
    async with backend() as (url, _), httpx.AsyncClient(timeout=20) as http:
        async with run_gateway(http_route_yaml(url, "{cors: {allowOrigins: ['*'], allowHeaders: ['*']}}")) as gw:
            api = f"http://127.0.0.1:{gw.port}/api/x"
            answer = await http.get(api, headers={"origin": "https://anyone.test"})
            assert answer.headers["access-control-allow-origin"] == "*" and "vary" not in answer.headers
            asked = await http.options(api, headers=preflight("https://anyone.test", headers="x-a, x-b"))
            assert asked.headers["access-control-allow-headers"] == "x-a, x-b"  # `*` echoes what was asked
        policies = "{cors: {allowOrigins: ['*'], allowCredentials: true}}"
        async with run_gateway(http_route_yaml(url, policies)) as gw:
            api = f"http://127.0.0.1:{gw.port}/api/x"
            answer = await http.get(api, headers={"origin": "https://anyone.test"})
            assert cors_headers(answer) == {  # never `*` with credentials
                "access-control-allow-origin": "https://anyone.test",
                "access-control-allow-credentials": "true",
            }
            assert answer.headers["vary"] == "Origin"


async def test_mcp_route_with_jwt_auth() -> None:
    policies = jwt_policy()[:-1] + f", cors: {{allowOrigins: [{APP}]}}}}"
    async with run_gateway(mcp_yaml(stdio_target("alpha"), policies=policies)) as gw, httpx.AsyncClient(timeout=30) as http:
        asked = await http.options(gw.url, headers=preflight(APP, "POST", "authorization, content-type, mcp-session-id"))
        assert asked.status_code == 204  # before authentication: a preflight carries no token
        assert asked.headers["access-control-allow-methods"] == "GET, POST, DELETE"
        allowed = asked.headers["access-control-allow-headers"].split(", ")
        assert {"authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"} <= set(allowed)

        refused = await http.post(gw.url, json=INIT, headers={**HEADERS, "origin": APP})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP
        assert "www-authenticate" in refused.headers["access-control-expose-headers"]  # the browser can start OAuth

        opened = await http.post(gw.url, json=INIT, headers={**bearer(SIGNER.token()), "origin": APP})
        assert opened.status_code == 200, opened.text  # the loopback bind's rebinding guard accepts the allowed origin
        assert opened.headers["access-control-allow-origin"] == APP
        assert "mcp-session-id" in opened.headers["access-control-expose-headers"].split(", ")
        assert opened.headers["mcp-session-id"]

        stranger = await http.post(gw.url, json=INIT, headers={**bearer(SIGNER.token()), "origin": "https://evil.test"})
        assert stranger.status_code == 403 and "access-control-allow-origin" not in stranger.headers


def test_bad_origins_are_config_errors() -> None:
    text = "binds: [{port: 0, listeners: [{routes: [{policies: {cors: {allowOrigins: [app.example.com]}}}]}]}]"
    with pytest.raises(ConfigError, match=r"routes\[0\]\.policies\.cors\.allowOrigins\[0\]: invalid origin"):
        parse_config(text, "x.yaml")
