"""The samples work as their comments say: secure.yaml (JWT, per-tool authorization and rate limits),
traffic.yaml (matching, header policies, rewrites, redirects, CORS, retries, mirroring), and one per security
policy of the reference: authorization.yaml, ext-authz-grpc.yaml, ext-authz-http.yaml, rate-limit-service.yaml,
mcp-authentication-keycloak.yaml, backend-auth-aws.yaml, backend-auth-gcp.yaml (tls.yaml:
test_tls_listeners). Each is loaded as shipped, only the addresses of the services a test starts
substituted, and those services are real: the gRPC servers of test_ext_authz_grpc and test_ratelimit_envoy,
tests/idp_server.py, the SigV4 verifier (and, for ext-authz-http.yaml, a stand-in for oauth2-proxy's
/oauth2/auth, for backend-auth-gcp.yaml, one for the GCE metadata server)."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.policies.ratelimit_local import RATE_LIMITED
from gateway.policies.ratelimit_remote import RATE_LIMITER_UNAVAILABLE
from samples.mint_token import mint
from tests.conftest import HEADERS, INIT, ROOT, free_port, http_server, run_gateway
from tests.fixtures.a2a_agent import Recorder, serve
from tests.gateway import test_backend_auth_cloud as cloud
from tests.gateway.test_auth import bearer, call, rpc, session
from tests.gateway.test_backend_auth import Recorder as UpstreamRecorder
from tests.gateway.test_backend_auth import legacy_session, upstream_app
from tests.gateway.test_backend_auth import serve as serve_app
from tests.gateway.test_backend_auth import text as tool_text
from tests.gateway.test_ext_authz import serve as serve_asgi
from tests.gateway.test_ext_authz_grpc import authz_server, by_user
from tests.gateway.test_http_backend import backend
from tests.gateway.test_ratelimit_envoy import rls_server
from tests.idp_server import running_idp

pytestmark = pytest.mark.anyio

aws_env = cloud.aws_env  # botocore sees only what a test sets


async def test_secure_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # its comments run it from the repo root, where its JWKS path starts
    source = ROOT / "samples" / "secure.yaml"
    with http_server("samples.servers.notes") as notes_url:
        text = source.read_text().replace("port: 3000", "port: 0").replace("http://127.0.0.1:9001/mcp", notes_url)
        async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
            url = gw.url
            assert (await http.post(url, json={}, headers={"accept": "application/json"})).status_code == 401
            alice = await session(http, url, bearer(mint("alice")))
            bob = await session(http, url, bearer(mint("bob")))
            intern = await session(http, url, bearer(mint("intern", role="admin")))

            async def tools(headers: dict[str, str]) -> set[str]:
                listed = rpc(await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers))
                return {t["name"] for t in listed["result"]["tools"]}

            assert {"clock_now", "notes_add_note", "notes_list_notes"} <= await tools(alice)
            assert {t.split("_")[0] for t in await tools(bob)} == {"clock"}
            assert "notes_add_note" not in await tools(intern) and "notes_list_notes" in await tools(intern)
            for i in range(5):
                added = rpc(await http.post(url, json=call("notes_add_note", i, title=f"t{i}", text="x"), headers=alice))
                assert "result" in added, added
            limited = rpc(await http.post(url, json=call("notes_add_note", 9, title="t9", text="x"), headers=alice))
            assert limited["error"]["code"] == -32029 and "retryAfter" in limited["error"]["data"]


def _echo(name: str) -> Recorder:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {"backend": name, "path": request.url.path, "query": request.url.query, "headers": dict(request.headers)}
        )

    return Recorder(Starlette(routes=[Route("/{path:path}", echo)]))


async def test_traffic_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """samples/traffic.yaml as shipped (ports and backends substituted): each route does what its comment says."""
    source = ROOT / "samples" / "traffic.yaml"
    async with (
        serve(lambda base: _echo("primary")) as primary,
        serve(lambda base: _echo("canary")) as canary,
        serve(lambda base: _echo("shadow")) as shadow,
    ):
        for var, backend in (("API_BACKEND", primary), ("CANARY_BACKEND", canary), ("SHADOW_BACKEND", shadow)):
            monkeypatch.setenv(var, backend.url.removeprefix("http://"))
        with http_server("samples.servers.notes") as notes_url:
            text = source.read_text().replace("port: 3000", "port: 0").replace("http://127.0.0.1:9001/mcp", notes_url)
            async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
                base = f"http://127.0.0.1:{gw.port}"
                answer = await http.get(f"{base}/api/items?x=1", headers={"x-debug": "1"})
                got = answer.json()
                assert (got["backend"], got["path"], got["query"]) == ("primary", "/items", "x=1")
                assert got["headers"]["x-gateway"] == "agentplex" and "x-debug" not in got["headers"]
                assert answer.headers["x-served-by"] == "primary"

                answer = await http.get(f"{base}/api/items", headers={"x-canary": "1"})
                assert answer.json()["backend"] == "canary" and answer.headers["x-served-by"] == "canary"

                moved = await http.get(f"{base}/v1/items?x=1")
                assert moved.status_code == 301 and moved.headers["location"].endswith("/api/items?x=1")
                health = await http.get(f"{base}/healthz")
                assert (health.status_code, health.text) == (200, "ok")

                origin = "http://localhost:5173"
                preflight = await http.options(
                    f"{base}/mcp",
                    headers={"origin": origin, "access-control-request-method": "POST",
                             "access-control-request-headers": "content-type, mcp-session-id"},
                )
                assert preflight.status_code == 204
                assert preflight.headers["access-control-allow-origin"] == origin
                async with Client(f"{base}/mcp", mode="legacy", cache=None) as client:
                    names = {t.name for t in (await client.list_tools()).tools}
                    assert {"clock_now", "notes_add_note"} <= names

                for _ in range(100):  # a tenth is copied to the shadow backend
                    assert (await http.get(f"{base}/api/mirrored")).status_code == 200
                with anyio.fail_after(10):
                    while not [s for s in shadow.seen if s[1] == "/mirrored"]:
                        await anyio.sleep(0.05)
                await anyio.sleep(0.5)
                copies = len([s for s in shadow.seen if s[1] == "/mirrored"])
                assert 1 <= copies <= 40


async def test_authorization_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """samples/authorization.yaml as shipped (its port made free): the plain route's rules see the request and
    the caller's address, the MCP route's rule the caller's token, and a refusal never reaches the backend."""
    monkeypatch.chdir(ROOT)  # its JWKS path starts at the repo root
    source = ROOT / "samples" / "authorization.yaml"
    text = source.read_text().replace("port: 3000", "port: 0")
    async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
        base = f"http://127.0.0.1:{gw.port}"
        status = await http.get(f"{base}/status")
        assert (status.status_code, status.text) == (200, "ok")
        posted = await http.post(f"{base}/status", content=b"x")
        assert (posted.status_code, posted.text) == (403, "authorization failed")

        url = f"{base}/mcp"
        assert (await http.post(url, json={}, headers={"accept": "application/json"})).status_code == 401
        for caller in (bearer(mint("alice")), bearer(mint("carol", role="admin"))):
            headers = await session(http, url, caller)
            answer = rpc(await http.post(url, json=call("now", 2, timezone="UTC"), headers=headers))
            assert "result" in answer and not answer["result"].get("isError"), answer
        refused = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=bearer(mint("bob")))
        assert (refused.status_code, refused.text) == (403, "authorization failed")


async def test_ext_authz_grpc_sample() -> None:
    """samples/ext-authz-grpc.yaml as shipped (its port and the service's address substituted), in front of
    a real Envoy ext_authz gRPC service: allowed, refused with the service's own answer, and, once the
    service is gone, the failureMode's 403 while the gateway keeps serving."""
    source = ROOT / "samples" / "ext-authz-grpc.yaml"
    async with authz_server(by_user) as (port, authz):
        text = source.read_text().replace("port: 3000", "port: 0").replace("127.0.0.1:9191", f"127.0.0.1:{port}")
        async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
            url = f"http://127.0.0.1:{gw.port}/mcp"
            alice = await session(http, url, {**HEADERS, "x-user": "alice"})
            answer = rpc(await http.post(url, json=call("now", 2, timezone="UTC"), headers=alice))
            assert "result" in answer and not answer["result"].get("isError"), answer
            asked = authz.seen[-1].attributes
            assert dict(asked.context_extensions) == {"gateway": "agentplex", "mcp.method": "tools/call", "mcp.name": "now"}
            assert set(asked.request.http.headers) == {"x-user", ":path"}  # only the listed headers

            refused = await http.post(url, json=call("now", 3), headers={**alice, "x-user": "mallory"})
            assert (refused.status_code, refused.text) == (401, "who are you?")
            assert refused.headers["www-authenticate"] == 'Bearer realm="corp"'
            seen = len(authz.seen)
    # the service is gone: its checks answer as failureMode says, nothing else changes
    async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
        with anyio.fail_after(10):
            down = await http.post(f"http://127.0.0.1:{gw.port}/mcp", json={}, headers={**HEADERS, "x-user": "alice"})
        assert (down.status_code, down.text) == (403, "external authorization failed")
        assert (await http.get(f"http://127.0.0.1:{gw.port}/elsewhere")).status_code == 404
    assert len(authz.seen) == seen


async def test_rate_limit_service_sample() -> None:
    """samples/rate-limit-service.yaml as shipped (its port and the service's address substituted), against a
    real RateLimitService allowing 2 hits per descriptor: each caller's third clock read is refused with the
    service's reset time; with the service gone, failClosed refuses calls and listing still works."""
    source = ROOT / "samples" / "rate-limit-service.yaml"
    async with rls_server(2) as (port, rls):
        text = source.read_text().replace("port: 3000", "port: 0").replace("127.0.0.1:8081", f"127.0.0.1:{port}")
        async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
            url = f"http://127.0.0.1:{gw.port}/mcp"
            alice = await session(http, url, {**HEADERS, "x-user": "alice"})
            bob = await session(http, url, {**HEADERS, "x-user": "bob"})
            for i in range(2):
                assert "result" in rpc(await http.post(url, json=call("now", i), headers=alice))
            limited = rpc(await http.post(url, json=call("now", 5), headers=alice))
            assert limited["error"]["code"] == RATE_LIMITED and limited["error"]["data"]["retryAfter"] == 30
            assert "result" in rpc(await http.post(url, json=call("now", 6), headers=bob))  # bob's own count
            assert {r.domain for r in rls.seen} == {"agentplex"}
            entries = [[(e.key, e.value) for e in d.entries] for r in rls.seen for d in r.descriptors]
            assert entries[0] == [("tool", "now"), ("caller", "alice")] and entries[-1][1] == ("caller", "bob")
    async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{gw.port}/mcp"
        alice = await session(http, url, {**HEADERS, "x-user": "alice"})
        with anyio.fail_after(10):
            down = rpc(await http.post(url, json=call("now", 7), headers=alice))
        assert down["error"]["code"] == RATE_LIMITER_UNAVAILABLE
        listed = rpc(await http.post(url, json={"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, headers=alice))
        assert "now" in {t["name"] for t in listed["result"]["tools"]}


async def test_mcp_authentication_keycloak_sample() -> None:
    """samples/mcp-authentication-keycloak.yaml as shipped (its port and Keycloak's address substituted), in
    front of the tests' identity provider serving Keycloak's paths: the challenge, both documents, the
    proxied registration and a real MCP client's tool call with the realm's token."""
    source = ROOT / "samples" / "mcp-authentication-keycloak.yaml"
    async with running_idp() as idp:
        realm = idp.tenants["keycloak"]
        port = free_port()
        gw = f"http://localhost:{port}"
        text = (
            source.read_text()
            .replace("port: 3000", f"port: {port}")
            .replace("http://localhost:7080/realms/mcp", realm.issuer)
            .replace("http://localhost:3000", gw)
        )
        async with run_gateway(text, str(source)), httpx.AsyncClient(timeout=30) as http:
            url = f"{gw}/mcp"
            challenge = await http.post(url, json=INIT, headers=HEADERS)
            assert challenge.status_code == 401
            prm = f"{gw}/.well-known/oauth-protected-resource/mcp"
            assert f'resource_metadata="{prm}"' in challenge.headers["www-authenticate"]
            resource = (await http.get(prm)).json()
            assert resource["resource"] == url and resource["authorization_servers"] == [url]
            assert resource["scopes_supported"] == ["openid", "profile", "offline_access"]
            server = (await http.get(f"{gw}/.well-known/oauth-authorization-server/mcp")).json()
            assert server["issuer"] == url and server["token_endpoint"] == idp.base + realm.token_path
            assert server["registration_endpoint"] == f"{gw}/.well-known/oauth-authorization-server/mcp/client-registration"
            registered = await http.post(server["registration_endpoint"], json={"redirect_uris": ["http://localhost:1/cb"]})
            assert registered.status_code == 201 and registered.json()["client_id"] == "registered-at-keycloak"
            assert idp.requests[-1].path == realm.registration_path

            token = idp.mint("keycloak", audience="mcp_proxy")
            async with (
                httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30) as hc,
                Client(streamable_http_client(url, http_client=hc)) as client,
            ):
                result = await client.call_tool("now", {"timezone": "UTC"})
                assert not result.is_error, result.content
            wrong = idp.mint("keycloak", audience="someone-else")
            refused = await http.post(url, json=INIT, headers={**HEADERS, "authorization": f"Bearer {wrong}"})
            assert refused.status_code == 401


async def test_backend_auth_aws_sample(aws_env: pytest.MonkeyPatch) -> None:
    """samples/backend-auth-aws.yaml as shipped (the target's URL from AWS_MCP_URL, as its comment says), in
    front of an MCP server that recomputes every request's SigV4 signature with botocore: the default
    chain's credentials and region sign each request, the client's own Authorization never reaches it."""
    aws_env.setenv("AWS_ACCESS_KEY_ID", cloud.KEY_ID)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", cloud.SECRET)
    aws_env.setenv("AWS_REGION", cloud.REGION)
    source = ROOT / "samples" / "backend-auth-aws.yaml"
    verifier = cloud.SigV4Verifier(upstream_app("agent", "mcp"), "bedrock-agentcore")
    async with serve_app(verifier) as port:
        aws_env.setenv("AWS_MCP_URL", f"http://127.0.0.1:{port}/mcp?qualifier=DEFAULT")
        text = source.read_text().replace("port: 3000", "port: 0")
        async with (
            run_gateway(text, str(source)) as gw,
            legacy_session(f"http://127.0.0.1:{gw.port}/mcp", "Bearer from-the-client") as mcp_session,
        ):
            assert await tool_text(mcp_session, "echo", {"text": "signed"}) == "agent: signed"
            assert (await tool_text(mcp_session, "authorization")).startswith("AWS4-HMAC-SHA256 Credential=")
    assert verifier.checked and all(problem is None for *_, problem in verifier.checked), verifier.checked
    assert len([method for method, *_ in verifier.checked if method == "POST"]) >= 3


async def test_backend_auth_gcp_sample(tmp_path: Path) -> None:
    """samples/backend-auth-gcp.yaml as shipped (the target's URL from CLOUD_RUN_MCP_URL, as its comment
    says), run as its own process (google-auth reads GCE_METADATA_HOST when first imported) whose default
    credentials are a fake metadata server: every request to the MCP server carries the ID token that
    server issued for https://<the target's host>, fetched once; the client's own Authorization never
    reaches it."""
    source = ROOT / "samples" / "backend-auth-gcp.yaml"
    metadata = cloud.MetadataServer()
    recorder = UpstreamRecorder(upstream_app("agent", "mcp"))
    async with serve_app(metadata.app()) as metadata_port, serve_app(recorder) as port:
        env = {"CLOUD_RUN_MCP_URL": f"http://localhost:{port}/mcp"}  # a hostname: the default audience needs one
        async with (
            cloud.gateway_process(tmp_path, source.read_text(), metadata_port, env) as gw,  # --port for 3000
            legacy_session(f"http://127.0.0.1:{gw}/mcp", "Bearer from-the-client") as mcp_session,
        ):
            assert await tool_text(mcp_session, "echo", {"text": "authenticated"}) == "agent: authenticated"
            authorization = await tool_text(mcp_session, "authorization")
    token = cloud.claims(authorization)
    assert token["aud"] == "https://localhost" and token["iss"] == "https://accounts.google.com"
    assert token["n"] == 1 and metadata.identities == ["https://localhost"]  # the one ID token it issued
    assert metadata.tokens == []  # an ID token, not an access token
    assert recorder.authorizations == {authorization}  # on every request, never "Bearer from-the-client"
    assert len([method for method, *_ in recorder.seen if method == "POST"]) >= 3


def _oauth2_proxy(seen: list[tuple[str, str]]) -> Starlette:
    """What the sample uses of oauth2-proxy: /oauth2/auth answers 202 with the user for a signed-in
    session cookie, 401 otherwise; its other /oauth2 pages answer as themselves."""

    async def auth(request: Request) -> Response:
        seen.append((request.url.path, request.headers.get("cookie", "")))
        if request.cookies.get("_oauth2_proxy") == "alice-session":
            return Response(status_code=202, headers={"x-auth-request-user": "alice", "x-auth-request-email": "a@x"})
        return Response(status_code=401)

    async def page(request: Request) -> Response:
        return PlainTextResponse(f"oauth2-proxy {request.url.path}")

    return Starlette(routes=[Route("/oauth2/auth", auth), Route("/{path:path}", page)])


async def test_ext_authz_http_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """samples/ext-authz-http.yaml as shipped (its port and oauth2-proxy's address substituted, the
    application from APP_BACKEND): a signed-in session reaches the application with the user's headers,
    anyone else is sent to sign in, the sign-in pages are not checked, and a proxy that is down is 403."""
    source = ROOT / "samples" / "ext-authz-http.yaml"
    seen: list[tuple[str, str]] = []
    async with serve_asgi(_oauth2_proxy(seen)) as proxy, backend() as (app, _):
        monkeypatch.setenv("APP_BACKEND", app.removeprefix("http://"))
        proxy_host = proxy.removeprefix("http://")
        text = source.read_text().replace("port: 3000", "port: 0").replace("127.0.0.1:4180", proxy_host)
        async with run_gateway(text, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
            base = f"http://127.0.0.1:{gw.port}"
            forged = {"x-auth-request-user": "mallory"}
            signed_in = await http.get(f"{base}/dashboard", headers={"cookie": "_oauth2_proxy=alice-session", **forged})
            assert signed_in.status_code == 200, signed_in.text
            got = signed_in.json()
            assert got["path"] == "/dashboard" and got["headers"]["x-auth-request-user"] == "alice"
            assert seen[-1] == ("/oauth2/auth", "_oauth2_proxy=alice-session")

            anonymous = await http.get(f"{base}/dashboard", headers=forged)
            assert anonymous.status_code == 302 and anonymous.headers["location"] == "/oauth2/start?rd=/dashboard"
            checks = len(seen)
            start = await http.get(f"{base}/oauth2/start?rd=/dashboard")
            assert (start.status_code, start.text) == (200, "oauth2-proxy /oauth2/start")
            assert len(seen) == checks  # its own pages are not checked
        down = text.replace(f"host: {proxy_host}\n          protocol", f"host: 127.0.0.1:{free_port()}\n          protocol")
        assert down != text
        async with run_gateway(down, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
            with anyio.fail_after(10):
                refused = await http.get(f"http://127.0.0.1:{gw.port}/dashboard")
            assert (refused.status_code, refused.text) == (403, "external authorization failed")
