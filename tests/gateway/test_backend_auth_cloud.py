"""backendAuth toward cloud services (gcp, aws) and the reference's credential locations.

Everything is real and on 127.0.0.1: a fake GCP metadata server that google-auth finds through
GCE_METADATA_HOST/GCE_METADATA_IP (it reads them when first imported, so the gateway of the gcp tests
runs as its own process), a server that checks AWS SigV4 signatures by recomputing them with botocore
from the request it received, real MCP upstreams, plain HTTP backends and an A2A agent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import google.auth.jwt
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import parse_config
from gateway.config.redact import REDACTED, redacted_config
from tests.a2a.harness import a2a_yaml
from tests.conftest import HEADERS, INIT, PY, ROOT, free_port, http_route_yaml, mcp_yaml, run_gateway, stop
from tests.fixtures.a2a_agent import serve as serve_agent
from tests.gateway.test_backend_auth import (
    Recorder,
    jwt_auth,
    legacy_session,
    refusal,
    serve,
    target,
    text,
    upstream_app,
)
from tests.gateway.test_consumed_credentials import card_and_echo
from tests.gateway.tokens import Signer

pytestmark = pytest.mark.anyio


def echo_app() -> Starlette:
    """A plain HTTP backend that answers with what it got."""

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {"method": request.method, "path": request.url.path, "query": request.url.query,
             "headers": dict(request.headers), "body": body.decode()}
        )  # fmt: skip

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


# -- gcp: a fake metadata server and a gateway process that uses it ----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class MetadataServer:
    """The parts of the GCE metadata server google-auth uses: ping, service account info, access tokens,
    ID tokens (JWTs whose `aud` is the audience asked for). Counts what it issues."""

    def __init__(self, lifetime: int = 300) -> None:
        self.lifetime = lifetime
        self.tokens: list[str] = []  # access tokens issued
        self.identities: list[str] = []  # audiences ID tokens were issued for

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.answer)])

    async def answer(self, request: Request) -> Response:
        flavor = {"metadata-flavor": "Google"}
        if request.headers.get("metadata-flavor") != "Google":
            return PlainTextResponse("missing Metadata-Flavor", status_code=403)
        path = request.url.path.removeprefix("/computeMetadata/v1")
        account = "/instance/service-accounts/default"
        if path == "/":
            return PlainTextResponse("", headers=flavor)
        if path == f"{account}/":
            info = {"email": "gw@project.iam.gserviceaccount.com", "aliases": ["default"], "scopes": ["cloud-platform"]}
            return JSONResponse(info, headers=flavor)
        if path == f"{account}/token":
            self.tokens.append(f"ya29.access-{len(self.tokens) + 1}")
            body = {"access_token": self.tokens[-1], "expires_in": self.lifetime, "token_type": "Bearer"}
            return JSONResponse(body, headers=flavor)
        if path == f"{account}/identity":
            audience = request.query_params["audience"]
            self.identities.append(audience)
            now = int(time.time())
            claims = {"aud": audience, "iss": "https://accounts.google.com", "sub": "1", "iat": now}
            claims |= {"exp": now + self.lifetime, "n": len(self.identities)}
            header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
            return PlainTextResponse(f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'sig')}", headers=flavor)
        if path == "/project/project-id":
            return PlainTextResponse("project", headers=flavor)
        if path == "/universe/universe-domain":
            return PlainTextResponse("googleapis.com", headers=flavor)
        return PlainTextResponse("not found", status_code=404, headers=flavor)


def claims(authorization: str) -> dict[str, Any]:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@contextlib.asynccontextmanager
async def gateway_process(
    tmp_path: Path, yaml: str, metadata_port: int, env: dict[str, str] | None = None
) -> AsyncIterator[int]:
    """`agentplex run` on `yaml` in its own process, finding Google credentials only at the metadata server
    on `metadata_port` (no gcloud configuration; a credential file only if `env` names one). Yields its port."""
    config = tmp_path / "gateway.yaml"
    config.write_text("config: {adminAddr: null, statsAddr: null}\n" + yaml)  # no fixed ports to collide on
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))} | (env or {})
    env |= {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "GCE_METADATA_HOST": f"127.0.0.1:{metadata_port}"}
    env |= {"GCE_METADATA_IP": f"127.0.0.1:{metadata_port}"}
    port = free_port()
    with (tmp_path / "gateway.log").open("wb") as log:
        command = [PY, "-m", "gateway.cli", "run", "-f", str(config), "--port", str(port)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=log)
        try:
            with anyio.fail_after(30):
                while True:
                    assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                    try:
                        await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await anyio.sleep(0.1)
            yield port
        finally:
            await anyio.to_thread.run_sync(stop, proc)


async def test_gcp_id_token_for_the_backends_host_is_cached_until_near_expiry(tmp_path: Path) -> None:
    metadata = MetadataServer(lifetime=4)
    recorder = Recorder(upstream_app("api"))
    async with serve(metadata.app()) as metadata_port, serve(recorder) as port:
        url = f"http://localhost:{port}/mcp"  # the default audience is https://<host>, as in the reference
        yaml = mcp_yaml(target("api", url), policies="{ backendAuth: { gcp: { type: idToken } } }")
        async with (
            gateway_process(tmp_path, yaml, metadata_port) as gw,
            legacy_session(f"http://127.0.0.1:{gw}/mcp", "Bearer inbound-token") as session,
        ):
            first = await text(session, "authorization")
            assert claims(first)["aud"] == "https://localhost"
            for _ in range(3):
                assert await text(session, "authorization") == first
            assert metadata.identities == ["https://localhost"]  # one token for every request so far
            issued = claims(first)["iat"]
            await anyio.sleep(max(0.0, issued + 3.5 - time.time()))  # past 3/4 of its life: a fresh one
            second = await text(session, "authorization")
            assert second != first and claims(second)["n"] == 2
            assert metadata.identities == ["https://localhost"] * 2
    assert recorder.authorizations == {first, second}  # every upstream request carried one, never the caller's


async def test_gcp_access_token_and_an_explicit_audience_reach_plain_http_backends(tmp_path: Path) -> None:
    metadata = MetadataServer()
    async with serve(metadata.app()) as metadata_port, serve(echo_app()) as port:
        yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: access
      matches: [{{path: {{pathPrefix: /access}}}}]
      policies: {{backendAuth: {{gcp: {{}}}}}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: id
      matches: [{{path: {{pathPrefix: /id}}}}]
      policies: {{backendAuth: {{gcp: {{type: idToken, audience: "https://run.example"}}}}}}
      backends: [{{host: "127.0.0.1:{port}"}}]
"""
        async with gateway_process(tmp_path, yaml, metadata_port) as gw, httpx.AsyncClient(timeout=30) as http:
            for _ in range(2):
                got = (await http.post(f"http://127.0.0.1:{gw}/access/x", json={"a": 1})).json()
                assert got["headers"]["authorization"] == "Bearer ya29.access-1" and got["body"] == '{"a":1}'
                got = (await http.get(f"http://127.0.0.1:{gw}/id/y")).json()
                assert claims(got["headers"]["authorization"])["aud"] == "https://run.example"
    assert metadata.tokens == ["ya29.access-1"] and metadata.identities == ["https://run.example"]


async def test_gcp_without_a_metadata_server_fails_its_target_clearly_and_others_keep_working(tmp_path: Path) -> None:
    recorder = Recorder(upstream_app("cloud"))
    async with serve(recorder) as port, serve(upstream_app("open")) as open_port:
        yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: cloud
      matches: [{{path: {{pathPrefix: /cloud}}}}]
      policies: {{backendAuth: {{gcp: {{type: idToken, audience: "https://cloud.example"}}}}}}
      backends: [{{mcp: {{targets: [{{name: cloud, mcp: {{host: "http://127.0.0.1:{port}/mcp"}}}}]}}}}]
    - name: open
      matches: [{{path: {{pathPrefix: /open}}}}]
      backends: [{{mcp: {{targets: [{{name: open, mcp: {{host: "http://127.0.0.1:{open_port}/mcp"}}}}]}}}}]
"""
        async with gateway_process(tmp_path, yaml, free_port()) as gw, httpx.AsyncClient(timeout=60) as http:
            response = await http.post(f"http://127.0.0.1:{gw}/cloud", json=INIT, headers=HEADERS)
            message = refusal(response)
            assert "target 'cloud'" in message, message
            assert "backendAuth failed: cannot get a Google ID token for https://cloud.example" in message, message
            async with legacy_session(f"http://127.0.0.1:{gw}/open") as session:
                assert await text(session, "echo", {"text": "x"}) == "open: x"
    assert all(method != "POST" for method, _, _ in recorder.seen)  # nothing went out without credentials


GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # what Google expects in the assertion


class GoogleTokenServer:
    """Google's OAuth token endpoint for one service account: checks the JWT assertion's signature with the
    account's public key, then issues an access token, or an ID token when the assertion asks for one."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issued: list[str] = []  # "access" or the audience of an ID token
        self.url = ""

    def account(self) -> dict[str, str]:
        pem = self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
        return {
            "type": "service_account", "project_id": "project", "private_key_id": "k1", "private_key": pem,
            "client_email": "gw@project.iam.gserviceaccount.com", "client_id": "1", "token_uri": self.url,
        }  # fmt: skip

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/token", self.token, methods=["POST"])])

    async def token(self, request: Request) -> JSONResponse:
        form = await request.form()
        public = self.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        try:
            assertion = google.auth.jwt.decode(str(form["assertion"]), certs=public, audience=GOOGLE_TOKEN_AUDIENCE)
        except ValueError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, status_code=400)
        if "target_audience" in assertion:
            self.issued.append(assertion["target_audience"])
            now = int(time.time())
            claims = {"aud": assertion["target_audience"], "iat": now, "exp": now + 3600, "sub": "gw"}
            token = f"{_b64(b'{}')}.{_b64(json.dumps(claims).encode())}.{_b64(b'sig')}"
            return JSONResponse({"id_token": token})
        self.issued.append("access")
        return JSONResponse({"access_token": f"ya29.sa-{len(self.issued)}", "expires_in": 3600})


async def test_gcp_service_account_file_named_by_google_application_credentials(tmp_path: Path) -> None:
    google = GoogleTokenServer()
    async with serve(google.app()) as token_port, serve(echo_app()) as port:
        google.url = f"http://127.0.0.1:{token_port}/token"
        (tmp_path / "sa.json").write_text(json.dumps(google.account()))
        yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: access
      matches: [{{path: {{pathPrefix: /access}}}}]
      policies: {{backendAuth: {{gcp: {{type: accessToken}}}}}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: id
      matches: [{{path: {{pathPrefix: /id}}}}]
      policies: {{backendAuth: {{gcp: {{type: idToken, audience: "https://run.example"}}}}}}
      backends: [{{host: "127.0.0.1:{port}"}}]
"""
        credentials = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "sa.json")}
        async with (
            gateway_process(tmp_path, yaml, free_port(), credentials) as gw,  # no metadata server: the file it is
            httpx.AsyncClient(timeout=30) as http,
        ):
            for _ in range(2):
                got = (await http.get(f"http://127.0.0.1:{gw}/access/x")).json()
                assert got["headers"]["authorization"] == "Bearer ya29.sa-1"
                got = (await http.get(f"http://127.0.0.1:{gw}/id/y")).json()
                assert claims(got["headers"]["authorization"])["aud"] == "https://run.example"
    assert sorted(google.issued) == ["access", "https://run.example"]  # each once, then kept


async def test_gcp_credential_json_in_the_config_inline_or_from_a_file(tmp_path: Path) -> None:
    google = GoogleTokenServer()
    async with serve(google.app()) as token_port, serve(echo_app()) as port:
        google.url = f"http://127.0.0.1:{token_port}/token"
        account = json.dumps(google.account())
        (tmp_path / "sa.json").write_text(account)
        inline = json.dumps(account)  # a YAML (JSON) string holding the credential JSON
        yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: access
      matches: [{{path: {{pathPrefix: /access}}}}]
      policies: {{backendAuth: {{gcp: {{credential: {inline}}}}}}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: id
      matches: [{{path: {{pathPrefix: /id}}}}]
      policies: {{backendAuth: {{gcp: {{type: idToken, credential: {{file: "{tmp_path / "sa.json"}"}}}}}}}}
      backends: [{{host: "localhost:{port}"}}]
"""
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            for _ in range(2):
                got = (await http.get(f"http://127.0.0.1:{gw.port}/access/x")).json()
                assert got["headers"]["authorization"] == "Bearer ya29.sa-1"
                got = (await http.get(f"http://127.0.0.1:{gw.port}/id/y")).json()
                assert claims(got["headers"]["authorization"])["aud"] == "https://localhost"
            shown = (await http.get(f"http://127.0.0.1:{gw.port}/access/x")).text
            assert "PRIVATE KEY" not in shown
    assert sorted(google.issued) == ["access", "https://localhost"]
    assert "PRIVATE KEY" not in json.dumps(redacted_config(parse_config(yaml)))


# -- aws: a server that checks SigV4 signatures ------------------------------------------------------------

KEY_ID, SECRET, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1"


class SigV4Verifier:
    """In front of an app: recomputes each request's SigV4 signature with botocore from the request as it
    arrived (method, path, query, the signed headers, the body) and the secret of its access key, and
    answers 403 when it differs. `checked` has (method, path, problem or None) for every request."""

    def __init__(
        self, app: ASGIApp, service: str, secrets: dict[str, str] | None = None, skip: str = "/.well-known"
    ) -> None:
        self.app = app
        self.service = service
        self.secrets = secrets or {KEY_ID: SECRET}
        self.skip = skip
        self.checked: list[tuple[str, str, str | None]] = []
        self.tokens: set[str | None] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.problem(scope, headers, body)
        self.checked.append((scope["method"], scope["path"], problem))
        self.tokens.add(headers.get("x-amz-security-token"))
        if problem is not None:
            await JSONResponse({"message": problem}, status_code=403)(scope, receive, send)
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def problem(self, scope: Scope, headers: dict[str, str], body: bytes) -> str | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "not signed"
        fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
        key_id, day, region, service, _ = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        if (region, service) != (REGION, self.service) or not {"host", "x-amz-date"} <= set(signed):
            return f"unexpected scope {region}/{service} or signed headers {signed}"
        if not headers["x-amz-date"].startswith(day):
            return "date mismatch"
        query = scope["query_string"].decode("latin-1")
        url = f"http://{headers['host']}{scope['raw_path'].decode('latin-1')}" + (f"?{query}" if query else "")
        request = AWSRequest(method=scope["method"], url=url, headers={h: headers[h] for h in signed}, data=body)
        request.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(Credentials(key_id, self.secrets.get(key_id, "?")), service, region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        return None if expected == fields["Signature"] else "The request signature we calculated does not match"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """botocore's default chain sees only what a test sets (no profile files, no instance metadata)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield monkeypatch


@pytest.mark.parametrize("kind", ["mcp", "sse"])
async def test_aws_signs_every_request_to_an_mcp_target_with_the_default_credentials(
    aws_env: pytest.MonkeyPatch, kind: str
) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    aws_env.setenv("AWS_SESSION_TOKEN", "session-token-1")
    aws_env.setenv("AWS_REGION", REGION)
    verifier = SigV4Verifier(upstream_app("api", kind), "bedrock-agentcore")
    async with serve(verifier) as port:
        policy = "{ backendAuth: { aws: { serviceName: bedrock-agentcore } } }"
        url = f"http://127.0.0.1:{port}/{kind}?qualifier=DEFAULT&a=b%20c"
        yaml = mcp_yaml(target("api", url, kind), policies=policy)
        async with run_gateway(yaml) as gw, legacy_session(gw.url, "Bearer inbound") as session:
            assert await text(session, "echo", {"text": "signed"}) == "api: signed"  # a tools/call, a JSON body
            assert await text(session, "echo", {"text": "again"}) == "api: again"
    posts = [problem for method, _, problem in verifier.checked if method == "POST"]
    assert len(posts) >= 4 and all(problem is None for _, _, problem in verifier.checked), verifier.checked
    assert verifier.tokens == {"session-token-1"}


async def test_aws_signs_the_body_sent_to_a_plain_http_backend_and_a_wrong_secret_is_caught(
    aws_env: pytest.MonkeyPatch,
) -> None:
    verifier = SigV4Verifier(echo_app(), "execute-api")
    async with serve(verifier) as port:
        keys = f"accessKeyId: {KEY_ID}, secretAccessKey: '{SECRET}', region: {REGION}, serviceName: execute-api"
        yaml = http_route_yaml(f"127.0.0.1:{port}", f"{{backendAuth: {{aws: {{{keys}}}}}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": {"é": 1}}}
            chunks = [json.dumps(body).encode()[:10], json.dumps(body).encode()[10:]]

            async def streamed() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            url = f"http://127.0.0.1:{gw.port}/api/items/a%20b?z=1&a=2"
            got = await http.post(url, content=streamed(), headers={"content-type": "application/json"})
            assert got.status_code == 200, got.text
            assert json.loads(got.json()["body"]) == body  # the bytes signed are the bytes sent
            assert (await http.get(f"http://127.0.0.1:{gw.port}/api/list?b=1")).status_code == 200
        wrong = yaml.replace(SECRET, "not-the-secret")
        async with run_gateway(wrong) as gw, httpx.AsyncClient(timeout=20) as http:
            refused = await http.post(f"http://127.0.0.1:{gw.port}/api/items", json={"a": 1})
            assert refused.status_code == 403 and "does not match" in refused.text
    assert [problem for *_, problem in verifier.checked] == [
        None,
        None,
        "The request signature we calculated does not match",
    ]
    assert verifier.tokens == {None}


async def test_aws_signs_calls_to_an_a2a_agent(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    seen: list[dict[str, Any]] = []
    verifier: list[SigV4Verifier] = []

    def agent(base: str) -> ASGIApp:
        verifier.append(SigV4Verifier(card_and_echo(base, seen), "bedrock"))
        return verifier[0]

    async with serve_agent(agent) as running:  # type: ignore[arg-type]
        policies = f"  policies: {{backendAuth: {{aws: {{region: {REGION}}}}}}}\n"  # region without keys: agentplex
        async with run_gateway(a2a_yaml({"raw": running.url}, policies=policies)) as gw, httpx.AsyncClient() as http:
            sent = await http.post(f"http://127.0.0.1:{gw.port}/a2a/raw/message:send", json={"message": {"x": 1}})
            assert sent.status_code == 200, sent.text
    assert [problem for *_, problem in verifier[0].checked] == [None]
    assert seen and seen[0]["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")


async def test_aws_without_credentials_is_a_clear_error(aws_env: pytest.MonkeyPatch) -> None:
    async with serve(echo_app()) as port, serve(Recorder(upstream_app("api"))) as mcp_port:
        yaml = http_route_yaml(f"127.0.0.1:{port}", f"{{backendAuth: {{aws: {{region: {REGION}}}}}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            failed = await http.post(f"http://127.0.0.1:{gw.port}/api/x", json={"a": 1})
            assert failed.status_code == 502
            assert failed.json()["error"].startswith("backend 'api': backendAuth failed: no AWS credentials found")
        yaml = mcp_yaml(target("api", f"http://127.0.0.1:{mcp_port}/mcp"), policies="{backendAuth: {aws: {}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            message = refusal(await http.post(gw.url, json=INIT, headers=HEADERS))
            assert "target 'api'" in message and "backendAuth failed: no AWS credentials found" in message, message


def test_aws_keys_are_not_shown_in_the_config() -> None:
    yaml = mcp_yaml(
        target("api", "http://127.0.0.1:1/mcp"),
        policies=f"{{backendAuth: {{aws: {{accessKeyId: {KEY_ID}, secretAccessKey: '{SECRET}', sessionToken: st-1}}}}}}",
    )
    shown = redacted_config(parse_config(yaml))
    aws = shown["mcp"]["policies"]["backendAuth"]["aws"]
    assert (aws["accessKeyId"], aws["secretAccessKey"], aws["sessionToken"]) == (REDACTED, REDACTED, REDACTED)
    assert KEY_ID not in json.dumps(shown) and SECRET not in json.dumps(shown)


# -- where a key or the caller's token goes ------------------------------------------------------------------


class Queries:
    """In front of an app: records the query string of every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["query_string"].decode())
        await self.app(scope, receive, send)


async def test_key_locations_on_mcp_targets_plain_backends_and_agents() -> None:
    recorder = Recorder(upstream_app("api"))
    queries = Queries(recorder)
    seen: list[dict[str, Any]] = []
    async with serve(queries) as port, serve(echo_app()) as echo_port:
        query = "{backendAuth: {key: {value: k-1, location: {queryParameter: {name: api_key}}}}}"
        yaml = mcp_yaml(target("api", f"http://127.0.0.1:{port}/mcp"), policies=query)
        async with run_gateway(yaml) as gw, legacy_session(gw.url) as session:
            assert await text(session, "echo", {"text": "q"}) == "api: q"
        cookie = "{backendAuth: {key: {value: k-2, location: {cookie: {name: token}}}}}"
        header = "{backendAuth: {key: {value: k-3, location: {header: {name: x-api-key, prefix: 'Key '}}}}}"
        async with httpx.AsyncClient(timeout=20) as http:
            async with run_gateway(http_route_yaml(f"127.0.0.1:{echo_port}", cookie)) as gw:
                got = (
                    await http.get(
                        f"http://127.0.0.1:{gw.port}/api/x?a=1", headers={"cookie": "theme=dark; token=mine"}
                    )
                ).json()
                assert got["headers"]["cookie"] == "theme=dark; token=k-2" and "authorization" not in got["headers"]
            async with run_gateway(http_route_yaml(f"127.0.0.1:{echo_port}", header)) as gw:
                got = (await http.get(f"http://127.0.0.1:{gw.port}/api/x")).json()
                assert got["headers"]["x-api-key"] == "Key k-3"
            async with serve_agent(lambda base: card_and_echo(base, seen)) as agent:  # type: ignore[arg-type,return-value]
                policies = "  policies: {backendAuth: {key: {value: k-4, location: {queryParameter: {name: key}}}}}\n"
                async with run_gateway(a2a_yaml({"raw": agent.url}, policies=policies)) as gw:
                    sent = await http.get(f"http://127.0.0.1:{gw.port}/a2a/raw/tasks/t1?x=1")
                    assert sent.status_code == 200, sent.text
    assert recorder.seen and all(auth is None for _, auth, _ in recorder.seen)
    assert len(queries.seen) >= 3 and set(queries.seen) == {"api_key=k-1"}  # every request of the session
    assert seen[-1]["query"] == "x=1&key=k-4"


async def test_passthrough_to_a_configured_location() -> None:
    signer = Signer()
    alice = signer.token("alice")
    async with serve(echo_app()) as port:
        policies = f"{{{jwt_auth(signer)}, backendAuth: {{passthrough: {{location: {{queryParameter: {{name: access_token}}}}}}}}}}"
        async with (
            run_gateway(http_route_yaml(f"127.0.0.1:{port}", policies)) as gw,
            httpx.AsyncClient(timeout=20) as http,
        ):
            got = (
                await http.get(f"http://127.0.0.1:{gw.port}/api/x?a=1", headers={"authorization": f"Bearer {alice}"})
            ).json()
    assert got["query"] == f"a=1&access_token={alice}" and "authorization" not in got["headers"]
