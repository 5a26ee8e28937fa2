"""jwtAuth, apiKey and basicAuth on a real gateway: who may open a session, and what rules then see."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import HEADERS, INIT, http_target, mcp_yaml, run_gateway, stdio_target
from tests.gateway.tokens import AUDIENCE, ISSUER, Signer, unsigned

pytestmark = pytest.mark.anyio

SIGNER = Signer()


def jwt_policy(mode: str = "strict", extra: str = "") -> str:
    jwks = json.dumps(SIGNER.jwks_json())
    return (
        f"{{jwtAuth: {{mode: {mode}, issuer: '{ISSUER}', audiences: ['{AUDIENCE}'], jwks: {{inline: {jwks}}}{extra}}}}}"
    )


def bearer(token: str) -> dict[str, str]:
    return {**HEADERS, "authorization": f"Bearer {token}"}


async def initialize(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    return await http.post(url, json=INIT, headers=headers)


async def session(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, str]:
    init = await initialize(http, url, headers)
    assert init.status_code == 200, init.text
    out = {**headers, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=out)
    return out


def rpc(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response in a reply, plain JSON (the relay) or an SSE stream (the SDK)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "result" in message or "error" in message:
                    return message
        raise AssertionError(f"no JSON-RPC response in {response.text!r}")
    return response.json()


def call(name: str, request_id: int = 2, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


async def test_jwt_strict_refuses_bad_tokens_with_a_reason(upstream: Any) -> None:
    other = Signer("k1")  # same kid, different key: a forged signature
    cases = {
        "missing": (None, None),
        "garbage": ("not.a.token", "token is malformed"),
        "expired": (SIGNER.token(expires_in=-120), "token expired"),
        "wrong audience": (SIGNER.token(aud="someone-else"), "token has the wrong aud"),
        "wrong issuer": (SIGNER.token(iss="https://evil.test"), "token has the wrong iss"),
        "wrong key": (other.token(), "token signature is invalid"),
        "unknown kid": (Signer("k9").token(), "token signed with an unknown key"),
        "alg none": (unsigned(), "token signed with an algorithm that is not allowed"),
        "no exp": (SIGNER.token(exp=None), "token lacks required claim exp"),
    }
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=jwt_policy())
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        for label, (token, reason) in cases.items():
            response = await initialize(http, gw.url, bearer(token) if token else HEADERS)
            assert response.status_code == 401, label
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("Bearer "), label
            if reason is None:
                assert "error=" not in challenge  # RFC 6750: no error code when no token was sent
            else:
                assert 'error="invalid_token"' in challenge and reason in challenge, (label, challenge)
                assert response.json() == {"error": "invalid_token", "error_description": reason}
            assert "Traceback" not in response.text
        ok = await session(http, gw.url, bearer(SIGNER.token()))
        answer = await http.post(gw.url, json=call("echo", text="hi"), headers=ok)
        assert "web: hi" in answer.text


async def test_jwt_token_from_query_parameter_or_cookie(upstream: Any) -> None:
    location = ", location: {header: null, queryParameter: access_token, cookie: session}"
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=jwt_policy(extra=location))
    token = SIGNER.token()
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        assert (await initialize(http, gw.url, bearer(token))).status_code == 401  # the header is not looked at
        assert (await initialize(http, f"{gw.url}?access_token={token}", HEADERS)).status_code == 200
        assert (await initialize(http, gw.url, {**HEADERS, "cookie": f"a=b; session={token}"})).status_code == 200


async def test_jwt_modes_and_claims_in_rules(upstream: Any) -> None:
    rules = ", mcpAuthorization: {rules: ['jwt.sub == \"alice\"', 'mcp.tool.name == \"add\"']}"
    targets = http_target("web", upstream("web", "mcp"))
    for mode in ("optional", "permissive"):
        yaml = mcp_yaml(targets, policies=jwt_policy(mode)[:-1] + rules + "}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            anonymous = await session(http, gw.url, HEADERS)
            listed = await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=anonymous)
            assert '"add"' in listed.text and '"echo"' not in listed.text
            alice = await session(http, gw.url, bearer(SIGNER.token("alice")))
            listed = await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=alice)
            assert '"add"' in listed.text and '"echo"' in listed.text
            bad = await initialize(http, gw.url, bearer(SIGNER.token(expires_in=-300)))
            # optional: a token that is there must be good; permissive: a bad one counts as none.
            assert bad.status_code == (401 if mode == "optional" else 200)


async def test_a_session_belongs_to_the_caller_who_opened_it(upstream: Any) -> None:
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    yaml = mcp_yaml(targets, policies=jwt_policy())
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        alice = await session(http, gw.url, bearer(SIGNER.token("alice")))
        await http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=alice)
        mallory = {**alice, "authorization": f"Bearer {SIGNER.token('mallory')}"}
        for tool in ("web_echo", "local_echo"):  # the raw relay and the SDK path
            stolen = await http.post(gw.url, json=call(tool, text="x"), headers=mallory)
            assert stolen.status_code == 404, tool
            own = await http.post(gw.url, json=call(tool, text="mine"), headers=alice)
            assert "mine" in own.text


async def test_api_keys_identify_callers_for_rules(upstream: Any) -> None:
    policies = (
        "{apiKey: {keys: [{key: sk-admin, metadata: {name: ops, role: admin}}, {key: sk-user, metadata: {name: ann}}]},"
        " mcpAuthorization: {rules: ['apiKey.role == \"admin\" || mcp.tool.name == \"echo\"']}}"
    )
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies)
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        assert (await initialize(http, gw.url, HEADERS)).status_code == 401
        wrong = await initialize(http, gw.url, bearer("sk-nope"))
        assert wrong.status_code == 401 and "sk-nope" not in wrong.text
        admin = await session(http, gw.url, bearer("sk-admin"))
        user = await session(http, gw.url, bearer("sk-user"))
        added = await http.post(gw.url, json=call("add", a=2, b=3), headers=admin)
        assert rpc(added)["result"]["content"][0]["text"] == "5"
        denied = await http.post(gw.url, json=call("add", a=2, b=3), headers=user)
        assert "Unknown tool: add" in denied.text
        assert "web: hi" in (await http.post(gw.url, json=call("echo", text="hi"), headers=user)).text
        # a key's session cannot be used with another key
        swapped = await http.post(gw.url, json=call("add", a=1, b=1), headers={**user, "authorization": "Bearer sk-admin"})
        assert swapped.status_code == 404


async def test_basic_auth_with_bcrypt_htpasswd(upstream: Any, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "users").write_text(f"# users\nann:{hashed}\n")
    policies = (
        f"{{basicAuth: {{htpasswd: {{file: '{tmp_path / 'users'}'}}, realm: tools}},"
        " mcpAuthorization: {rules: ['basicAuth.username == \"ann\"']}}"
    )
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policies)

    def basic(user: str, password: str) -> dict[str, str]:
        return {**HEADERS, "authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        missing = await initialize(http, gw.url, HEADERS)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Basic realm="tools"'
        assert (await initialize(http, gw.url, basic("ann", "wrong"))).status_code == 401
        assert (await initialize(http, gw.url, basic("bob", "s3cret"))).status_code == 401
        assert (await initialize(http, gw.url, {**HEADERS, "authorization": "Basic !!!"})).status_code == 401
        ann = await session(http, gw.url, basic("ann", "s3cret"))
        assert "web: hi" in (await http.post(gw.url, json=call("echo", text="hi"), headers=ann)).text


def test_auth_config_problems_are_clear(tmp_path: Path) -> None:
    base = "mcp:\n  port: 0\n  targets: [{name: a, stdio: {cmd: x}}]\n  policies: {%s}\n"
    cases = {
        "jwtAuth: {jwks: {file: missing.json}}": f"mcp.policies.jwtAuth.jwks.file: cannot read {Path.cwd() / 'missing.json'}: No such file",
        "jwtAuth: {jwks: {inline: '{\"keys\": 5}'}}": "mcp.policies.jwtAuth.jwks: not a JWK set",
        "basicAuth: {htpasswd: {inline: 'ann:plaintext'}}": "mcp.policies.basicAuth.htpasswd: line 1: expected",
    }
    for policy, expected in cases.items():
        source = tmp_path / "gw.yaml"
        source.write_text(base % policy)
        with pytest.raises(ConfigError) as caught:
            Gateway(parse_config(source.read_text(), str(source)))
        assert f"{source}: {expected}" in str(caught.value), str(caught.value)
