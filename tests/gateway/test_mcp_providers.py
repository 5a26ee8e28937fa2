"""`mcpAuthentication` with agentgateway's identity-provider adapters, end to end.

A real identity provider (tests/idp_server.py) publishes every provider's paths on 127.0.0.1; the
gateway runs in this event loop with configs in the shape of agentgateway's
examples/mcp-authentication/config.yaml, in front of a real streamable-HTTP upstream; a real MCP
client (the mcp SDK) calls tools with the IdP's tokens. What the gateway must derive and serve for
each provider is written out here from agentgateway's code (types/agent.rs derived_jwks_url,
mcp/auth.rs, http/oauth.rs), field by field.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import HEADERS, INIT, free_port, http_target, run_gateway
from tests.idp_server import PROVIDERS, Idp, running_idp

pytestmark = pytest.mark.anyio

AUDIENCE = "mcp_proxy"
PRM = "/.well-known/oauth-protected-resource"
ASM = "/.well-known/oauth-authorization-server"
IDS = [p or "none" for p in PROVIDERS]


@pytest.fixture
def alpha(upstream: Callable[..., str]) -> str:
    return http_target("alpha", upstream("alpha"))


def example_shape(port: int, route: str, authn: dict[str, Any], targets: str) -> str:
    """A route as agentgateway's examples/mcp-authentication/config.yaml writes one."""
    return f"""
binds:
- port: {port}
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:{targets.replace(chr(10), chr(10) + "        ")}
      matches:
      - path:
          exact: {route}
      - path:
          exact: {PRM}{route}
      - path:
          pathPrefix: {ASM}{route}
      policies:
        cors:
          allowHeaders: [mcp-protocol-version, content-type]
          allowOrigins: ['*']
          exposeHeaders: ["Mcp-Session-Id"]
        mcpAuthentication: {json.dumps(authn)}
"""


def authentication(idp: Idp, provider: str | None, **more: Any) -> dict[str, Any]:
    """Issuer, audiences and provider; no jwks: the gateway derives where the keys are."""
    authn: dict[str, Any] = {"issuer": idp.tenants[provider].issuer, "audiences": [AUDIENCE], **more}
    if provider is not None:
        authn["provider"] = {provider: {}}
    return authn


@contextlib.asynccontextmanager
async def gateway_for(
    idp: Idp, provider: str | None, targets: str, **more: Any
) -> AsyncIterator[tuple[str, str, httpx.AsyncClient]]:
    """(gateway base URL, route path, HTTP client) with mcpAuthentication trusting `provider`'s tenant."""
    port = free_port()
    route = f"/{provider or 'plain'}/mcp"
    yaml = example_shape(port, route, authentication(idp, provider, **more), targets)
    async with run_gateway(yaml, "providers.yaml"), httpx.AsyncClient(timeout=20) as http:
        yield f"http://127.0.0.1:{port}", route, http


async def initialize(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    return await http.post(url, json=INIT, headers={**HEADERS, **headers})


async def whoami(url: str, headers: dict[str, str]) -> str:
    """One session of the mcp SDK's client through the gateway: the tools and a call to one."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=20) as hc,
        Client(streamable_http_client(url, http_client=hc)) as client,
    ):
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "whoami" in tools, tools
        result = await client.call_tool("whoami", {})
        return result.content[0].text  # type: ignore[union-attr]


def expected_authorization_server(idp: Idp, provider: str | None, gateway: str, route: str) -> dict[str, Any]:
    """agentgateway's authorization_server_metadata for the IdP's document, per provider."""
    doc = idp.metadata(idp.tenants[provider])
    here = f"{gateway}{ASM}{route}"
    if provider in ("auth0", "okta"):  # no RFC 8707: the first audience on the authorize URL
        doc["authorization_endpoint"] += f"?audience={AUDIENCE}"
    if provider in ("okta", "descope", "keycloak", "authentik", "entra"):  # registration proxied or answered
        doc["registration_endpoint"] = f"{here}/client-registration"
    if provider == "entra":  # `resource` rejected by Entra: both endpoints through the gateway
        doc["authorization_endpoint"] = f"{here}/authorize"
        doc["token_endpoint"] = f"{here}/token"
        doc["code_challenge_methods_supported"] = ["S256"]
    if provider is not None:  # RFC 8414 §3.3: the gateway is the issuer of what it serves
        doc["issuer"] = gateway + route
    return doc


# -- each provider: keys, documents, registration -----------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS, ids=IDS)
async def test_provider_derives_keys_and_adapts_metadata(provider: str | None, alpha: str) -> None:
    async with running_idp() as idp:
        tenant = idp.tenants[provider]
        meta = {
            "scopesSupported": ["openid", "profile"],
            "bearerMethodsSupported": ["header"],
            "resourceDocumentation": "https://docs.example.com/mcp",
            "resourcePolicyUri": "https://docs.example.com/policy",
        }
        async with gateway_for(idp, provider, alpha, resourceMetadata=meta) as (gw, route, http):
            url = gw + route

            # No token: 401, pointing at the protected-resource document; no key fetched yet.
            response = await initialize(http, url)
            assert response.status_code == 401, response.text
            assert f'resource_metadata="{gw}{PRM}{route}"' in response.headers["www-authenticate"]

            # The IdP's token through a real MCP client; the keys come from the derived URL, once.
            token = idp.mint(provider, audience=AUDIENCE)
            assert await whoami(url, {"authorization": f"Bearer {token}"}) == "alpha"
            assert [r.path for r in idp.requests] == [tenant.jwks_path]

            # A token from another provider's issuer is not this route's.
            other = idp.mint("keycloak" if provider != "keycloak" else "okta", audience=AUDIENCE)
            response = await initialize(http, url, authorization=f"Bearer {other}")
            assert response.status_code == 401 and response.json()["error_description"] == "token has the wrong iss"

            # RFC 9728 document, as agentgateway's ResourceMetadata::to_rfc_json builds it.
            response = await http.get(f"{gw}{PRM}{route}")
            assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
            assert response.json() == {
                "resource": url,
                "authorization_servers": [url if provider else tenant.issuer],
                "mcp_protocol_version": "2025-06-18",
                "resource_type": "mcp-server",
                "scopes_supported": ["openid", "profile"],
                "bearer_methods_supported": ["header"],
                "resource_documentation": "https://docs.example.com/mcp",
                "resource_policy_uri": "https://docs.example.com/policy",
            }

            # RFC 8414 document: the IdP's, fetched where the provider serves it, adapted.
            response = await http.get(f"{gw}{ASM}{route}")
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == "*"
            assert response.json() == expected_authorization_server(idp, provider, gw, route)
            assert idp.requests[-1].path == tenant.metadata_path

            # Client registration without a clientId: proxied where the provider registers clients.
            asked = {"redirect_uris": ["http://localhost:33418/callback"], "client_name": "test"}
            response = await http.post(f"{gw}{ASM}{route}/client-registration", json=asked)
            if tenant.registration_path is None:  # authentik and Entra have no RFC 7591
                assert response.status_code == 500
                assert "does not support Dynamic Client Registration" in response.json()["error_description"]
                assert "clientId" in response.json()["error_description"]
            else:
                assert response.status_code == 201, response.text
                assert response.json() == {**asked, "client_id": f"registered-at-{provider}"}
                assert response.headers["access-control-allow-origin"] == "*"
                sent = idp.requests[-1]
                assert sent.path == tenant.registration_path and json.loads(sent.body) == asked


@pytest.mark.parametrize("provider", PROVIDERS, ids=IDS)
async def test_client_id_answers_registration_itself(provider: str | None, alpha: str) -> None:
    """With a pre-registered clientId every provider's registration is answered by the gateway."""
    async with running_idp() as idp, gateway_for(idp, provider, alpha, clientId="pre-registered") as (gw, route, http):
        asked = {"redirect_uris": ["http://localhost:1234/cb"], "client_id": "client-supplied"}
        response = await http.post(f"{gw}{ASM}{route}/client-registration", json=asked)
        assert response.status_code == 201
        assert response.json() == {
            "client_id": "pre-registered",
            "client_id_issued_at": 0,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "redirect_uris": ["http://localhost:1234/cb"],
        }
        response = await http.post(f"{gw}{ASM}{route}/client-registration", content=b"not json {{")
        assert response.status_code == 201 and response.json()["redirect_uris"] == []
        assert idp.requests == []  # the IdP never heard of it


async def test_entra_authorize_and_token_proxies(alpha: str) -> None:
    """Entra rejects RFC 8707 `resource`: the gateway's endpoints drop it; clientSecret is added only to
    clientId's user-delegated grants that carry no credential of their own."""
    async with running_idp() as idp:
        tenant = idp.tenants["entra"]
        more = {"clientId": "app-1", "clientSecret": "s3cret"}
        async with gateway_for(idp, "entra", alpha, **more) as (gw, route, http):
            here = f"{gw}{ASM}{route}"
            query = "client_id=app-1&resource=http%3A%2F%2Fgw%2Fmcp&scope=api%3A%2F%2Fapp-1%2F.default&state=x"
            response = await http.get(f"{here}/authorize?{query}")
            assert response.status_code == 302
            location = urlsplit(response.headers["location"])
            assert f"{location.scheme}://{location.netloc}{location.path}" == idp.base + tenant.authorize_path
            assert parse_qs(location.query) == {
                "client_id": ["app-1"],
                "scope": ["api://app-1/.default"],
                "state": ["x"],
            }

            async def token(form: dict[str, str], **headers: str) -> dict[str, list[str]]:
                response = await http.post(f"{here}/token", data=form, headers=headers)
                assert response.status_code == 200 and response.json()["access_token"] == "from-the-idp"
                sent = idp.requests[-1]
                assert sent.path == tenant.token_path
                assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
                return parse_qs(sent.body.decode())

            code = {"grant_type": "authorization_code", "code": "c", "client_id": "app-1", "resource": "http://gw"}
            assert await token(code) == {
                "grant_type": ["authorization_code"],
                "code": ["c"],
                "client_id": ["app-1"],
                "client_secret": ["s3cret"],
            }
            refresh = {"grant_type": "refresh_token", "refresh_token": "r", "client_id": "app-1"}
            assert (await token(refresh))["client_secret"] == ["s3cret"]
            # Never for app-level grants, other clients, or clients that bring their own credential.
            assert "client_secret" not in await token({"grant_type": "client_credentials", "client_id": "app-1"})
            assert "client_secret" not in await token({**code, "client_id": "someone-else"})
            assert (await token({**code, "client_secret": "theirs"}))["client_secret"] == ["theirs"]
            assert "client_secret" not in await token(code, authorization="Basic YXBwLTE6eA==")
            assert idp.requests[-1].headers["authorization"] == "Basic YXBwLTE6eA=="

            response = await http.get(f"{here}/token")
            assert response.status_code == 405 and "POST" in response.headers["allow"]


# -- where the token is, and what it must carry ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "place"),
    [
        ({"header": {"name": "x-mcp-token"}}, lambda t: {"headers": {"x-mcp-token": t}}),
        ({"header": {"name": "x-mcp-token", "prefix": "Token "}}, lambda t: {"headers": {"x-mcp-token": f"Token {t}"}}),
        ({"queryParameter": {"name": "access_token"}}, lambda t: {"params": {"access_token": t}}),
        ({"cookie": {"name": "mcp_token"}}, lambda t: {"headers": {"cookie": f"mcp_token={t}"}}),
    ],
    ids=["header", "header-prefix", "query", "cookie"],
)
async def test_authorization_location(location: dict[str, Any], place: Callable[[str], Any], alpha: str) -> None:
    async with running_idp() as idp, gateway_for(idp, None, alpha, authorizationLocation=location) as (gw, route, http):
        url = gw + route
        token = idp.mint(None, audience=AUDIENCE)
        where = place(token)
        response = await http.post(
            url, json=INIT, params=where.get("params"), headers={**HEADERS, **where.get("headers", {})}
        )
        assert response.status_code == 200, response.text
        # The default place is not looked at any more.
        response = await initialize(http, url, authorization=f"Bearer {token}")
        assert response.status_code == 401
        if "headers" in where:
            assert await whoami(url, where["headers"]) == "alpha"
        if "params" in where:
            assert await whoami(f"{url}?access_token={token}", {}) == "alpha"


async def test_jwt_validation_options_required_claims(alpha: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running_idp() as idp:
        # Default: exp must be there (agentgateway's default requiredClaims is [exp]).
        async with gateway_for(idp, "keycloak", alpha) as (gw, route, http):
            no_exp = idp.mint("keycloak", audience=AUDIENCE, exp=None)
            response = await initialize(http, gw + route, authorization=f"Bearer {no_exp}")
            assert response.status_code == 401
            assert response.json()["error_description"] == "token lacks required claim exp"

        # requiredClaims replaces the default: sub required, exp not (checked only when present).
        options = {"requiredClaims": ["sub", "jti", "iat"]}
        caplog.set_level(logging.WARNING, "agentplex.mcp_authn")
        async with gateway_for(idp, "keycloak", alpha, jwtValidationOptions=options) as (gw, route, http):
            url = gw + route
            assert "requiredClaims: jti, iat not enforced" in caplog.text
            no_sub = idp.mint("keycloak", audience=AUDIENCE, sub=None)
            response = await initialize(http, url, authorization=f"Bearer {no_sub}")
            assert response.status_code == 401
            assert response.json()["error_description"] == "token lacks required claim sub"
            no_exp = idp.mint("keycloak", audience=AUDIENCE, exp=None, jti=None)
            assert await whoami(url, {"authorization": f"Bearer {no_exp}"}) == "alpha"
            expired = idp.mint("keycloak", audience=AUDIENCE, exp=1)
            response = await initialize(http, url, authorization=f"Bearer {expired}")
            assert response.status_code == 401 and response.json()["error_description"] == "token expired"


# -- errors ---------------------------------------------------------------------------------------------------


def _load(authn: dict[str, Any]) -> None:
    Gateway(parse_config(example_shape(0, "/x/mcp", authn, http_target("a", "http://127.0.0.1:1/mcp")), "idp.yaml"))


@pytest.mark.parametrize(
    ("authn", "expected"),
    [
        (
            {"issuer": "http://idp", "provider": {"gitlab": {}}},
            "idp.yaml: binds[0].listeners[0].routes[0].policies.mcpAuthentication.provider: unknown provider "
            "'gitlab' (expected one of: auth0, keycloak, okta, descope, authentik, entra)",
        ),
        (
            {"issuer": "http://idp", "provider": {"keycloak": {}, "okta": {}}},
            "mcpAuthentication.provider: expected exactly one of auth0, keycloak, okta, descope, authentik, entra",
        ),
        (
            {"issuer": "https://login.microsoftonline.com", "provider": {"entra": {}}},
            "mcpAuthentication.jwks: not set, and cannot be derived from the issuer: Entra issuer "
            "'https://login.microsoftonline.com' has no tenant path segment",
        ),
        (
            {"issuer": "my-idp", "provider": {"keycloak": {}}},
            "mcpAuthentication.jwks: not set, and cannot be derived from the issuer: issuer 'my-idp' is not an "
            "http:// or https:// URL",
        ),
        (
            {"issuer": "http://idp", "authorizationLocation": {"expression": 'request.headers["x-token"]'}},
            "mcpAuthentication.authorizationLocation: expression: not supported by agentplex yet",
        ),
        (
            {"issuer": "http://idp", "relaySigningKey": "00" * 32},
            "mcpAuthentication: relaySigningKey: the gateway-managed authorization flow is not supported by "
            "agentplex yet",
        ),
    ],
    ids=["unknown-provider", "two-providers", "entra-without-tenant", "issuer-not-a-url", "expression", "relay"],
)
def test_bad_config_is_a_clear_error(authn: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(authn)
    assert expected in str(info.value)
    assert "idp.yaml" in str(info.value)


async def test_unreachable_derived_jwks_is_a_clear_503(alpha: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running_idp() as idp, gateway_for(idp, "keycloak", alpha) as (gw, route, http):
        idp.status = 503
        caplog.set_level(logging.WARNING)
        token = idp.mint("keycloak", audience=AUDIENCE)
        response = await initialize(http, gw + route, authorization=f"Bearer {token}")
        assert response.status_code == 503
        assert response.json() == {
            "error": "temporarily_unavailable",
            "error_description": "cannot check tokens right now",
        }
        derived = idp.base + idp.tenants["keycloak"].jwks_path
        assert f"cannot fetch JWKS from {derived}" in caplog.text
        response = await http.get(f"{gw}{ASM}{route}")
        assert response.status_code == 500
        source = idp.base + idp.tenants["keycloak"].metadata_path
        assert f"cannot fetch the authorization server metadata from {source}" in response.json()["error_description"]


async def test_jwks_at_an_address_nobody_listens_on(alpha: str, caplog: pytest.LogCaptureFixture) -> None:
    """An issuer whose derived JWKS URL cannot even be connected to: 503 for tokens, the URL in the log."""
    issuer = f"http://127.0.0.1:{free_port()}/realms/gone"
    authn = {"issuer": issuer, "audiences": [AUDIENCE], "provider": {"keycloak": {}}}
    port = free_port()
    caplog.set_level(logging.WARNING)
    async with run_gateway(example_shape(port, "/k/mcp", authn, alpha)), httpx.AsyncClient(timeout=20) as http:
        response = await initialize(http, f"http://127.0.0.1:{port}/k/mcp", authorization="Bearer a.b.c")
        assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
        assert f"cannot fetch JWKS from {issuer}/protocol/openid-connect/certs" in caplog.text
        response = await http.get(f"http://127.0.0.1:{port}{ASM}/k/mcp")
        assert response.status_code == 500
        assert f"from {issuer}/.well-known/openid-configuration" in response.json()["error_description"]


async def test_issuer_that_is_not_a_url_still_validates_but_has_no_metadata(alpha: str) -> None:
    """With jwks configured an issuer may be any string (it is matched against `iss`); there is then no
    authorization server metadata to serve, and the gateway says so instead of failing obscurely."""
    async with running_idp() as idp:
        jwks = {"inline": {"keys": [idp.key.as_dict(private=False)]}}
        authn = {"issuer": "my-idp", "audiences": [AUDIENCE], "jwks": jwks}
        port = free_port()
        async with run_gateway(example_shape(port, "/k/mcp", authn, alpha)), httpx.AsyncClient(timeout=20) as http:
            token = idp.mint(None, audience=AUDIENCE, iss="my-idp")
            assert await whoami(f"http://127.0.0.1:{port}/k/mcp", {"authorization": f"Bearer {token}"}) == "alpha"
            response = await http.get(f"http://127.0.0.1:{port}{ASM}/k/mcp")
            assert response.status_code == 500
            assert "issuer 'my-idp' is not an http:// or https:// URL" in response.json()["error_description"]


def test_reference_example_shape_validates() -> None:
    """Routes written as agentgateway's examples/mcp-authentication/config.yaml writes them, one per provider."""
    stdio = """
  - name: everything
    stdio:
      args:
      - '@modelcontextprotocol/server-everything'
      cmd: npx"""
    for provider, issuer in [
        (None, "http://localhost:9000"),
        ("keycloak", "http://localhost:7080/realms/mcp"),
        ("auth0", "https://dev-y6sikgx3n3shy7ci.eu.auth0.com"),
        ("okta", "https://dev-123456.okta.com/oauth2/default"),
        ("descope", "https://api.descope.com/v1/apps/agentic/P2abc/MS2def"),
        ("authentik", "https://authentik.example.com/application/o/tools/"),
        ("entra", "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0"),
    ]:
        authn: dict[str, Any] = {
            "mode": "strict",
            "issuer": issuer,
            "audiences": ["mcp_proxy"],
            "resourceMetadata": {
                "resource": "http://localhost:3000/stdio/mcp",
                "scopesSupported": ["read:all"],
                "bearerMethodsSupported": ["header", "body", "query"],
                "resourceDocumentation": "http://localhost:3000/stdio/docs",
                "resourcePolicyUri": "http://localhost:3000/stdio/policies",
            },
        }
        if provider is None:
            authn["jwks"] = {"url": "http://localhost:9000/.well-known/jwks.json"}
        else:
            authn["provider"] = {provider: {}}
            authn["clientId"] = "pre-registered"
        if provider == "entra":
            authn["clientSecret"] = "secret"
        config = parse_config(example_shape(3000, "/stdio/mcp", authn, stdio), "example.yaml")
        policy = config.binds[0].listeners[0].routes[0].policies.mcpAuthentication  # type: ignore[union-attr]
        assert policy is not None and policy.provider == provider
        Gateway(config)  # the policy builds: keys derivable, provider known
