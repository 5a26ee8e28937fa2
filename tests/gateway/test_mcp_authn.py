"""`mcpAuthentication` end to end: the gateway as an OAuth-protected MCP resource server.

Everything is real and on 127.0.0.1: the authorization server (tests/oauth_server.py: metadata,
client-credentials token endpoint issuing RS256 JWTs, JWKS with key rotation, counting requests),
the gateway in this event loop, a streamable-HTTP upstream process behind it, and on the client
side either the mcp SDK's own `ClientCredentialsOAuthProvider` (401 -> protected-resource metadata
-> authorization server metadata -> token -> retry) or raw HTTP requests that look at status codes
and challenges.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from joserfc import jws
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken, ProtectedResourceMetadata

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import HEADERS, INIT, RunningGateway, free_port, http_target, run_gateway
from tests.oauth_server import DEFAULT_CLIENTS, OAuthServer, new_key, running_oauth_server

pytestmark = pytest.mark.anyio

WELL_KNOWN = "/.well-known/oauth-protected-resource"
REQUIRED = "mcp:tools"


# -- config and helpers ---------------------------------------------------------------------------


def policy(auth: OAuthServer, **overrides: Any) -> dict[str, Any]:
    """An mcpAuthentication policy trusting `auth` and requiring scope mcp:tools; keys merge over it."""
    base: dict[str, Any] = {"issuer": auth.issuer, "jwks": {"url": auth.jwks_uri}, "scopes": [REQUIRED]}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


@pytest.fixture
def alpha(upstream: Callable[..., str]) -> str:
    """Target YAML for the test upstream `alpha`, a streamable-HTTP server in its own process (one for
    the test: every client session opens an upstream session, and over HTTP that is cheap)."""
    return http_target("alpha", upstream("alpha"))


def short_config(authn: dict[str, Any], target: str, *, port: int = 0, path: str = "/mcp") -> str:
    """The one-endpoint config shape (JSON is YAML)."""
    return (
        f"mcp:\n  port: {port}\n  path: {path}\n"
        f"  policies:\n    mcpAuthentication: {json.dumps(authn)}\n"
        f"  targets:{target}\n"
    )


@contextlib.asynccontextmanager
async def gateway(yaml_text: str) -> AsyncIterator[tuple[RunningGateway, httpx.AsyncClient]]:
    async with run_gateway(yaml_text) as gw, httpx.AsyncClient(timeout=20) as http:
        yield gw, http


async def initialize(
    http: httpx.AsyncClient, url: str, token: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {**HEADERS, **(headers or {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return await http.post(url, json=INIT, headers=sent)


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer k="v", ...` header (values never contain quotes here)."""
    value = response.headers.get("www-authenticate", "")
    assert value.startswith("Bearer "), value
    params: dict[str, str] = {}
    for part in value[len("Bearer ") :].split('", '):
        key, _, raw = part.partition("=")
        params[key.strip()] = raw.strip().strip('"')
    return params


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(header)}.{b64(claims)}."


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(header)}.{b64(claims)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def assert_refused(response: httpx.Response, status: int, error: str, description: str | None = None) -> None:
    detail = f"{response.status_code} {response.headers.get('www-authenticate')} {response.text}"
    assert response.status_code == status, detail
    assert "Traceback" not in response.text and 'File "' not in response.text, detail
    assert response.json()["error"] == error, detail
    if description is not None:
        assert response.json()["error_description"] == description, detail


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def sdk_client(url: str, auth: OAuthServer, client_id: str, method: str = "client_secret_basic") -> httpx2.AsyncClient:
    provider = ClientCredentialsOAuthProvider(
        server_url=url,
        storage=MemoryStorage(),
        client_id=client_id,
        client_secret=DEFAULT_CLIENTS[client_id][0],
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        issuer=auth.issuer,
    )
    return httpx2.AsyncClient(auth=provider, timeout=20)


# -- (1) the protected-resource metadata document ----------------------------------------------------


async def test_protected_resource_metadata_document_and_forwarded_headers(alpha: str) -> None:
    async with running_oauth_server() as auth:
        authn = policy(
            auth,
            resourceMetadata={
                "scopesSupported": [REQUIRED, "mcp:admin"],
                "resourceName": "Team tools",
                "resourcePolicyUri": "https://example.com/policy",  # an extra key, served in snake_case
                "dpop_bound_access_tokens_required": False,
            },
        )
        async with gateway(short_config(authn, alpha, path="/team/mcp")) as (gw, http):
            base = f"http://127.0.0.1:{gw.port}"
            prm_url = f"{base}{WELL_KNOWN}/team/mcp"

            response = await http.get(prm_url)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            doc = response.json()
            assert doc == {  # as agentgateway's ResourceMetadata::to_rfc_json builds it
                "resource": f"{base}/team/mcp",
                "authorization_servers": [auth.issuer],
                "mcp_protocol_version": "2025-06-18",
                "resource_type": "mcp-server",
                "scopes_supported": [REQUIRED, "mcp:admin"],
                "resource_name": "Team tools",
                "resource_policy_uri": "https://example.com/policy",
                "dpop_bound_access_tokens_required": False,
            }
            ProtectedResourceMetadata.model_validate(doc)  # what the SDK's client parses it with

            head = await http.head(prm_url)
            assert head.status_code == 200 and head.content == b""
            post = await http.post(prm_url, json={})
            assert post.status_code == 405 and "GET" in post.headers["allow"]
            assert (await http.get(f"{base}{WELL_KNOWN}/other")).status_code == 404

            # Missing token: 401 without an error code (RFC 6750 §3.1), pointing at the document.
            response = await initialize(http, f"{base}/team/mcp")
            assert_refused(response, 401, "unauthorized")
            params = challenge(response)
            assert "error" not in params
            assert params["resource_metadata"] == prm_url

            # Behind a TLS-terminating proxy: the public scheme and host, in both places.
            forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "mcp.example.com"}
            doc = (await http.get(prm_url, headers=forwarded)).json()
            assert doc["resource"] == "https://mcp.example.com/team/mcp"
            response = await initialize(http, f"{base}/team/mcp", headers=forwarded)
            assert response.status_code == 401
            assert challenge(response)["resource_metadata"] == f"https://mcp.example.com{WELL_KNOWN}/team/mcp"

            # Forwarded values that are not a scheme or a host are ignored, not echoed into the answers.
            bogus = {"x-forwarded-proto": "javascript", "x-forwarded-host": 'evil.example", error="forged'}
            response = await initialize(http, f"{base}/team/mcp", headers=bogus)
            assert response.headers["www-authenticate"].count('"') == 4, response.headers["www-authenticate"]
            assert challenge(response)["resource_metadata"] == prm_url
            assert (await http.get(prm_url, headers=bogus)).json()["resource"] == f"{base}/team/mcp"

        # A configured resource wins over whatever the request says.
        authn = policy(auth, resourceMetadata={"resource": "https://tools.example.com/mcp"})
        async with gateway(short_config(authn, alpha)) as (gw, http):
            prm_url = f"http://127.0.0.1:{gw.port}{WELL_KNOWN}/mcp"
            doc = (await http.get(prm_url, headers={"x-forwarded-host": "evil.example.com"})).json()
            assert doc["resource"] == "https://tools.example.com/mcp"
            assert doc["scopes_supported"] == [REQUIRED]  # default: the required scopes
            # ... and the challenge points at the document on that resource's origin (as in agentgateway).
            response = await initialize(http, f"http://127.0.0.1:{gw.port}/mcp")
            assert challenge(response)["resource_metadata"] == f"https://tools.example.com{WELL_KNOWN}/mcp"


def test_alg_none_is_never_configurable() -> None:
    """joserfc accepts unsigned tokens when "none" is among the allowed algorithms: refused at load."""
    authn = {
        "issuer": "http://127.0.0.1:1",
        "jwks": {"url": "http://127.0.0.1:1/jwks"},
        "algorithms": ["RS256", "None"],
    }
    with pytest.raises(ConfigError) as info:
        Gateway(parse_config(short_config(authn, http_target("alpha", "http://127.0.0.1:1/mcp")), "x.yaml"))
    assert "mcpAuthentication.algorithms" in str(info.value) and "'none' is never allowed" in str(info.value)


# -- (2) the mcp SDK's own OAuth client ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "issuer", "binding"),
    [
        ("client_secret_basic", "root", "resource"),
        ("client_secret_post", "root-with-slash", "audiences"),
        ("client_secret_basic", "path", "resource"),
    ],
)
async def test_sdk_client_credentials_flow_through_the_gateway(
    method: str, issuer: str, binding: str, alpha: str
) -> None:
    """401 -> PRM -> AS metadata -> token (RFC 8707 resource) -> tools listed and called, token reused."""
    as_options: dict[str, Any] = {
        "root": {},
        "root-with-slash": {"trailing_slash": True},
        "path": {"issuer_path": "/tenants/one"},
    }[issuer]
    async with running_oauth_server(**as_options) as auth:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        audience = {"resourceMetadata": {"resource": url}} if binding == "resource" else {"audiences": [url]}
        async with gateway(short_config(policy(auth, **audience), alpha, port=port)) as (gw, _):
            assert gw.url == url
            async with (
                sdk_client(url, auth, "agent", method) as hc,
                Client(streamable_http_client(url, http_client=hc)) as client,
            ):
                tools = {tool.name for tool in (await client.list_tools()).tools}
                assert {"whoami", "echo"} <= tools
                result = await client.call_tool("whoami", {})
                assert result.content[0].text == "alpha"  # type: ignore[union-attr]
                result = await client.call_tool("echo", {"text": "hi"})
                assert not result.is_error

            assert auth.hits[auth.metadata_url.removeprefix(auth.base)] == 1
            assert auth.hits["/jwks"] == 1  # fetched once, cached for every later message
            assert len(auth.token_requests) == 1, auth.token_requests  # one token for the whole session
            request = auth.token_requests[0]
            assert request.status == 200
            assert request.auth_method == method
            assert request.form["grant_type"] == ["client_credentials"]
            assert request.form["resource"] == [url]  # RFC 8707: the PRM resource becomes the token's aud
            assert request.form["scope"] == [REQUIRED]  # from the PRM's scopes_supported


async def test_sdk_client_step_up_on_insufficient_scope(alpha: str) -> None:
    """A token without the required scope: 403 insufficient_scope, which the SDK understands as a
    step-up challenge (asks for the union of scopes), and the flow ends in an error, not a loop."""
    async with running_oauth_server() as auth:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        authn = policy(auth, resourceMetadata={"resource": url, "scopesSupported": ["mcp:read"]})
        async with gateway(short_config(authn, alpha, port=port)):
            with anyio.fail_after(30), pytest.raises(Exception) as info:  # the SDK wraps it in exception groups
                async with (
                    sdk_client(url, auth, "reader") as hc,
                    Client(streamable_http_client(url, http_client=hc)) as client,
                ):
                    await client.list_tools()
            assert "invalid_scope" in repr(info.value) or info.group_contains(Exception, match="invalid_scope")
            scopes = [(r.status, r.form.get("scope")) for r in auth.token_requests]
            # First token: what the PRM offered (granted). Then the 403's scope=mcp:tools is added to it
            # (SEP-2350 union), which this client may not have: the AS says invalid_scope.
            assert scopes == [(200, ["mcp:read"]), (400, ["mcp:read mcp:tools"])], scopes


# -- (3) raw requests: every way a token can be wrong --------------------------------------------------


async def test_rejected_tokens_say_why_without_tracebacks(alpha: str) -> None:
    async with running_oauth_server() as auth:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        prm_url = f"http://127.0.0.1:{port}{WELL_KNOWN}/mcp"
        authn = policy(auth, resourceMetadata={"resource": url})
        async with gateway(short_config(authn, alpha, port=port)) as (_, http):
            now = int(time.time())
            good = auth.mint(audience=url)
            assert (await initialize(http, url, good)).status_code == 200

            impostor = new_key(auth.signing_key.kid)  # same kid, other key material
            stranger = new_key("not-published")
            claims = auth.claims("agent", audience=url, scope=REQUIRED)
            public_pem = auth.signing_key.as_pem(private=False)
            cases: dict[str, tuple[str, str]] = {
                "garbage": ("not-a-jwt", "token is malformed"),
                "three garbage parts": ("a.b.c", "token is malformed"),
                "signed, but the payload is not JSON": (
                    jws.serialize_compact(
                        {"alg": "RS256", "kid": auth.signing_key.kid}, b"[not json", auth.signing_key
                    ),
                    "token is malformed",
                ),
                "expired": (auth.mint(audience=url, exp=now - 3600, iat=now - 7200), "token expired"),
                "not yet valid": (auth.mint(audience=url, nbf=now + 3600), "token is not yet valid"),
                "wrong audience": (auth.mint(audience="http://elsewhere.example/mcp"), "token has the wrong aud"),
                "no audience": (auth.mint(), "token lacks required claim aud"),
                "wrong issuer": (auth.mint(audience=url, iss="http://127.0.0.1:1/"), "token has the wrong iss"),
                "no exp": (auth.mint(audience=url, exp=None), "token lacks required claim exp"),
                "malformed exp": (auth.mint(audience=url, exp="tomorrow"), "token has a malformed exp"),
                "signed by another key, same kid": (
                    auth.mint(audience=url, key=impostor),
                    "token signature is invalid",
                ),
                "tampered claims": (
                    good.split(".")[0] + "." + b64({**claims, "sub": "admin"}) + "." + good.split(".")[2],
                    "token signature is invalid",
                ),
                "signed by an unknown key": (auth.mint(audience=url, key=stranger), "token signed with an unknown key"),
                "alg none": (
                    unsigned({"alg": "none", "typ": "JWT"}, claims),
                    "token signed with an algorithm that is not allowed",
                ),
                "alg none with kid": (
                    unsigned({"alg": "none", "kid": auth.signing_key.kid}, claims),
                    "token signed with an algorithm that is not allowed",
                ),
                "HS256 keyed with the RSA public key": (
                    hs256({"alg": "HS256", "kid": auth.signing_key.kid}, claims, public_pem),
                    "token signed with an algorithm that is not allowed",
                ),
            }
            for name, (token, reason) in cases.items():
                response = await initialize(http, url, token)
                assert_refused(response, 401, "invalid_token", reason)
                params = challenge(response)
                assert params["error"] == "invalid_token", name
                assert params["error_description"] == reason, name
                assert params["resource_metadata"] == prm_url, name

            # Not a bearer credential at all: as if no token was sent.
            response = await http.post(url, json=INIT, headers={**HEADERS, "authorization": "Basic YWdlbnQ6eA=="})
            assert_refused(response, 401, "unauthorized")
            assert "error" not in challenge(response)

            # Valid, but without the required scope: 403 with the scope to ask for.
            response = await initialize(http, url, auth.mint(audience=url, scope="mcp:read mcp:admin"))
            assert_refused(response, 403, "insufficient_scope", f"token lacks scope {REQUIRED}")
            params = challenge(response)
            assert params["error"] == "insufficient_scope"
            assert params["scope"] == REQUIRED
            assert params["resource_metadata"] == prm_url

            # Accepted shapes: an `scp` list instead of `scope`, several audiences, a lower-case scheme.
            scp = auth.mint(audience=[url, "https://other.example"], scope=None, scp=["mcp:read", REQUIRED])
            assert (await initialize(http, url, scp)).status_code == 200
            response = await http.post(url, json=INIT, headers={**HEADERS, "authorization": f"bearer {good}"})
            assert response.status_code == 200

            # The unknown kid above did not refetch the JWKS: it was fetched less than refreshCooldown ago.
            assert auth.hits["/jwks"] == 1


# -- (4) key rotation --------------------------------------------------------------------------------------


async def test_key_rotation_refetches_once_and_the_cooldown_holds_off_garbage(alpha: str) -> None:
    cooldown = 3.0
    k2, k3, stranger = new_key("k2"), new_key("k3"), new_key("stranger")  # RSA keygen is slow: not in timed parts
    async with running_oauth_server() as auth:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        authn = policy(auth, resourceMetadata={"resource": url}, jwks={"refreshCooldown": f"{cooldown}s"})
        async with gateway(short_config(authn, alpha, port=port)) as (_, http):
            first = auth.mint(audience=url)
            assert (await initialize(http, url, first)).status_code == 200
            fetched_at = time.monotonic()
            assert auth.hits["/jwks"] == 1

            old = auth.signing_key
            auth.rotate(k2)  # published next to k1; new tokens are signed with k2
            rotated = auth.mint(audience=url)

            # Within the cooldown after the first fetch, an unknown kid does not refetch.
            response = await initialize(http, url, rotated)
            assert_refused(response, 401, "invalid_token", "token signed with an unknown key")
            assert auth.hits["/jwks"] == 1

            await anyio.sleep(max(0.0, fetched_at + cooldown + 0.1 - time.monotonic()))
            response = await initialize(http, url, rotated)
            assert response.status_code == 200, response.text
            assert auth.hits["/jwks"] == 2  # refetched once, for the new kid

            # A burst of garbage tokens with unknown kids, all at once: no further fetch.
            junk = [
                auth.mint(audience=url, key=stranger, header={"alg": "RS256", "kid": f"junk-{n}"}) for n in range(20)
            ]
            statuses: list[int] = []

            async def send(token: str) -> None:
                statuses.append((await initialize(http, url, token)).status_code)

            async with anyio.create_task_group() as tg:
                for token in junk:
                    tg.start_soon(send, token)
            assert statuses == [401] * 20
            assert auth.hits["/jwks"] == 2

            # The old key is still published: fresh tokens signed with it still pass.
            assert (await initialize(http, url, auth.mint(audience=url, key=old))).status_code == 200

            # Retire everything but a new k3. Once the cooldown has passed, k3 refetches, and then a
            # fresh k1 token is refused (the gateway's copy of the JWKS no longer has k1).
            auth.rotate(k3, retire_old=True)
            await anyio.sleep(cooldown + 0.1)
            assert (await initialize(http, url, auth.mint(audience=url))).status_code == 200
            assert auth.hits["/jwks"] == 3
            response = await initialize(http, url, auth.mint(audience=url, key=old))
            assert_refused(response, 401, "invalid_token", "token signed with an unknown key")
            assert auth.hits["/jwks"] == 3


async def test_cached_keys_outlive_an_idp_outage(alpha: str) -> None:
    """After cacheTtl the JWKS is refetched; if that fails, the keys already held keep working."""
    async with running_oauth_server() as auth:
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        authn = policy(auth, resourceMetadata={"resource": url}, jwks={"cacheTtl": "0.3s", "refreshCooldown": "5s"})
        async with gateway(short_config(authn, alpha, port=port)) as (_, http):
            assert (await initialize(http, url, auth.mint(audience=url))).status_code == 200
            auth.jwks_status = 503
            await anyio.sleep(0.4)
            assert (await initialize(http, url, auth.mint(audience=url))).status_code == 200
            assert auth.hits["/jwks"] == 2  # the refetch was tried, and failed
            # ... and is not retried on every request while it keeps failing.
            assert (await initialize(http, url, auth.mint(audience=url))).status_code == 200
            assert auth.hits["/jwks"] == 2


async def test_concurrent_first_requests_share_one_jwks_fetch(alpha: str) -> None:
    """Requests arriving while the JWKS is being fetched wait for that fetch instead of each
    fetching again in turn; a JWKS URL that redirects is followed."""
    async with running_oauth_server() as auth:
        auth.jwks_delay = 0.5
        authn = policy(auth, jwks={"url": f"{auth.base}/moved/jwks"})
        async with gateway(short_config(authn, alpha)) as (gw, http):
            token = auth.mint(audience=gw.url)  # no audience configured: it must be this route's URL
            statuses: list[int] = []

            async def send() -> None:
                statuses.append((await initialize(http, gw.url, token)).status_code)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(send)
                        await anyio.sleep(0.03)  # arriving one after another while the fetch is under way
            assert statuses == [200] * 8
            assert (auth.hits["/moved/jwks"], auth.hits["/jwks"]) == (1, 1)


# -- (5) JWKS unreachable ----------------------------------------------------------------------------------


def full_config(auth: OAuthServer, dead_port: int, target: str) -> str:
    secure = json.dumps(policy(auth))
    dead = json.dumps(policy(auth, jwks={"url": f"http://127.0.0.1:{dead_port}/jwks"}))
    target = target.replace("\n", "\n" + " " * 16)
    return f"""
binds:
  - port: 0
    listeners:
      - routes:
          - name: secure
            matches: [{{path: {{exact: /mcp}}}}]
            policies: {{mcpAuthentication: {secure}}}
            backends:
              - mcp:
                  targets:{target}
          - name: dead
            matches: [{{path: {{exact: /dead/mcp}}}}]
            policies: {{mcpAuthentication: {dead}}}
            backends:
              - mcp:
                  targets:{target}
          - name: open
            matches: [{{path: {{exact: /open/mcp}}}}]
            backends:
              - mcp:
                  targets:{target}
"""


async def test_jwks_unavailable_is_a_clear_503_and_other_routes_keep_serving(alpha: str) -> None:
    async with running_oauth_server() as auth:
        auth.jwks_status = 503  # down from the start
        async with gateway(full_config(auth, free_port(), alpha)) as (gw, http):
            base = f"http://127.0.0.1:{gw.port}"
            token = auth.mint(audience=f"{base}/mcp")  # no audience configured: this route's URL it must be
            other = auth.mint(audience="http://elsewhere.example/mcp")

            response = await initialize(http, f"{base}/mcp", token)
            assert_refused(response, 503, "temporarily_unavailable", "cannot check tokens right now")
            response = await initialize(http, f"{base}/dead/mcp", token)  # nothing listens there at all
            assert_refused(response, 503, "temporarily_unavailable", "cannot check tokens right now")

            # A JWKS URL answering 200 with something that is not a JWK set: still a 503, not a 500.
            for broken in ({"issuer": auth.issuer}, [1, 2], {"keys": "none"}, "<html>"):
                auth.jwks_status, auth.jwks_override = None, broken
                response = await initialize(http, f"{base}/mcp", token)
                assert_refused(response, 503, "temporarily_unavailable", "cannot check tokens right now")
            auth.jwks_override = None

            # Meanwhile: no token is still a 401, the metadata is served, the unprotected route works.
            assert (await initialize(http, f"{base}/mcp")).status_code == 401
            assert (await http.get(f"{base}{WELL_KNOWN}/mcp")).status_code == 200
            assert (await http.get(f"{base}{WELL_KNOWN}/dead/mcp")).status_code == 200
            assert (await initialize(http, f"{base}/open/mcp")).status_code == 200

            # The identity provider is back: the same token now passes (nothing bad was cached).
            response = await initialize(http, f"{base}/mcp", token)
            assert response.status_code == 200, response.text
            refused = await initialize(http, f"{base}/mcp", other)  # meant for another resource
            assert_refused(refused, 401, "invalid_token", "token has the wrong aud")
            assert (await initialize(http, f"{base}/dead/mcp", token)).status_code == 503
