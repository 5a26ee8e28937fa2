"""HTTPS listeners (`protocol: HTTPS` + `tls:`): MCP (both eras, legacy SSE) and A2A over TLS, mTLS with
CEL rules on the client certificate, TLS versions, SNI, reload of certificates, and config errors.

Certificates come from trustme; clients are the real SDKs (mcp over httpx2, a2a-sdk over httpx).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import httpx2
import pytest
import trustme
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text
from a2a.types import Message, Part, Role, SendMessageRequest
from mcp import ClientSession
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.config import ConfigError, load_config, parse_config
from gateway.runtime import Runtime
from tests.conftest import ROOT, run_gateway, started, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    """A CA; the gateway's certificate for 127.0.0.1 (and a second one, for reloads and SNI); client
    certificates for alice and bob from that CA, and one for alice from a CA nobody trusts."""
    ca, stranger = trustme.CA(), trustme.CA()
    files: dict[str, Any] = {"dir": tmp_path, "ca": ca}
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    issued = {
        "server": ca.issue_cert("127.0.0.1", "localhost", "a.test"),
        "server2": ca.issue_cert("127.0.0.1", "localhost", "b.test"),
        "alice": ca.issue_cert("alice.clients.test", common_name="alice"),
        "bob": ca.issue_cert("bob.clients.test", common_name="bob"),
        "mallory": stranger.issue_cert("alice.clients.test", common_name="alice"),
    }
    for name, cert in issued.items():
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{name}.both.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.crt"))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(tmp_path / f"{name}.crt"), append=True)
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    return files


def client_context(pki: dict[str, Any], who: str | None = None, **options: Any) -> ssl.SSLContext:
    """What a client trusts (the CA) and presents (`who`'s certificate, if any)."""
    ctx = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    if who is not None:
        ctx.load_cert_chain(str(pki["dir"] / f"{who}.crt"), str(pki["dir"] / f"{who}.key"))
    for key, value in options.items():
        setattr(ctx, key, value)
    return ctx


def https_yaml(pki: dict[str, Any], *, tls: str = "", policies: str = "{}", cert: str = "server") -> str:
    d = pki["dir"]
    return f"""
binds:
- port: 0
  listeners:
  - name: secure
    protocol: HTTPS
    tls: {{ cert: "{d / f"{cert}.crt"}", key: "{d / f"{cert}.key"}" {tls} }}
    routes:
    - name: tools
      matches: [{{path: {{pathPrefix: /mcp}}}}, {{path: {{exact: /sse}}}}, {{path: {{pathPrefix: /messages}}}}]
      policies: {policies}
      backends:
      - mcp:
          prefixMode: always
          targets:{textwrap.indent(stdio_target("local"), " " * 8)}
"""


@contextlib.asynccontextmanager
async def handshake_session(url: str, ctx: ssl.SSLContext) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(verify=ctx, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(30):
            await session.initialize()
        yield session


async def call(session: Any, tool: str, arguments: dict[str, Any] | None = None) -> str:
    with anyio.fail_after(30):
        result = await session.call_tool(tool, arguments or {})
    assert not result.is_error, result.content
    return result.content[0].text


def peer_certificate(port: int, ctx: ssl.SSLContext, server_name: str = "127.0.0.1") -> bytes:
    """The DER certificate a new connection to the gateway is served."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def der_of(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(
        path.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )


async def test_mcp_over_https_both_eras_and_legacy_sse(pki: dict[str, Any]) -> None:
    ctx = client_context(pki)
    async with run_gateway(https_yaml(pki), "tls.yaml") as gw:
        base = f"https://127.0.0.1:{gw.port}"
        assert any(line.startswith("listening on https://") for line in gw.gateway.summary())
        async with handshake_session(f"{base}/mcp", ctx) as session:
            assert await call(session, "local_echo", {"text": "hi"}) == "local: hi"
        async with (
            httpx2.AsyncClient(verify=ctx, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as modern,
        ):
            assert modern.protocol_version == "2026-07-28"
            assert await call(modern, "local_whoami") == "local"

        def factory(headers: Any = None, timeout: Any = None, auth: Any = None) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(verify=ctx, headers=headers, timeout=timeout, auth=auth)

        async with (
            sse_client(f"{base}/sse", httpx_client_factory=factory) as (read, write),
            ClientSession(read, write) as legacy,
        ):
            with anyio.fail_after(30):
                await legacy.initialize()
            assert await call(legacy, "local_add", {"a": 2, "b": 3}) == "5"
        async with httpx.AsyncClient(timeout=10) as plain:  # plain HTTP on the TLS port gets no answer
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{gw.port}/mcp")


async def test_a2a_over_https_card_urls_are_https(pki: dict[str, Any]) -> None:
    d = pki["dir"]
    async with serve(echo_agent) as agent:
        yaml = f"""
binds:
- port: 0
  listeners:
  - protocol: HTTPS
    tls: {{ cert: "{d / "server.crt"}", key: "{d / "server.key"}" }}
    routes:
    - name: echo
      matches: [{{path: {{pathPrefix: /agents/echo}}}}]
      policies: {{ a2a: {{}}, urlRewrite: {{path: {{prefix: /}}}} }}
      backends: [{{host: "{agent.url}"}}]
"""
        async with run_gateway(yaml) as gw, httpx.AsyncClient(verify=client_context(pki), timeout=30) as http:
            base = f"https://127.0.0.1:{gw.port}/agents/echo"
            card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
            urls = [i["url"] for i in card["supportedInterfaces"]]
            assert urls and all(u.startswith(f"{base}") for u in urls), urls
            config = ClientConfig(httpx_client=http, streaming=False)
            async with await create_client(base, client_config=config) as client:
                msg = Message(role=Role.ROLE_USER, message_id="m1", parts=[Part(text="hello")])
                (event,) = [ev async for ev in client.send_message(SendMessageRequest(message=msg))]
                assert [get_artifact_text(a) for a in event.task.artifacts] == ["echo: hello"]


async def test_mcp_authentication_metadata_names_the_https_resource(pki: dict[str, Any]) -> None:
    jwks = ROOT / "samples" / "keys" / "demo-jwks.json"
    authn = f'{{ mcpAuthentication: {{ issuer: "https://idp.example", jwks: {{ file: "{jwks}" }} }} }}'
    async with (
        run_gateway(https_yaml(pki, policies=authn)) as gw,
        httpx.AsyncClient(verify=client_context(pki), timeout=30) as http,
    ):
        base = f"https://127.0.0.1:{gw.port}"
        refused = await http.post(f"{base}/mcp", json={}, headers={"accept": "application/json, text/event-stream"})
        assert refused.status_code == 401
        metadata = f"{base}/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{metadata}"' in refused.headers["www-authenticate"]
        assert (await http.get(metadata)).json()["resource"] == f"{base}/mcp"


async def test_mtls_requires_a_client_certificate_from_root(pki: dict[str, Any]) -> None:
    root = pki["dir"] / "ca.pem"
    async with run_gateway(https_yaml(pki, tls=f', root: "{root}"')) as gw:
        url = f"https://127.0.0.1:{gw.port}/mcp"
        for who in (None, "mallory"):  # no certificate; alice's name from another CA
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                await anyio.to_thread.run_sync(_request, gw.port, client_context(pki, who))
            async with httpx2.AsyncClient(verify=client_context(pki, who), timeout=10) as http:
                with pytest.raises(httpx2.HTTPError):
                    await http.post(url, json={})
        async with handshake_session(url, client_context(pki, "alice")) as session:
            assert await call(session, "local_whoami") == "local"


def _request(port: int, ctx: ssl.SSLContext) -> None:
    """Handshake and one request (TLS 1.3 reports a refused client certificate only on first read)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /mcp HTTP/1.1\r\nhost: x\r\n\r\n")
        if not tls.recv(1):
            raise ConnectionError("closed")


async def test_cel_rules_read_the_client_certificate(pki: dict[str, Any]) -> None:
    root = pki["dir"] / "ca.pem"
    rules = (
        '["source.subjectCn == \\"alice\\" && mcp.tool.name == \\"echo\\"",'
        ' "\\"bob.clients.test\\" in source.subjectAltNames && mcp.tool.name == \\"whoami\\"",'
        ' "source.issuer.contains(\\"Testing CA\\") && source.certificate.startsWith(\\"-----BEGIN\\")'
        ' && mcp.tool.name == \\"add\\""]'
    )
    policies = f"{{ mcpAuthorization: {{ rules: {rules} }} }}"
    async with run_gateway(https_yaml(pki, tls=f', root: "{root}"', policies=policies)) as gw:
        url = f"https://127.0.0.1:{gw.port}/mcp"
        seen = {}
        for who in ("alice", "bob"):
            async with handshake_session(url, client_context(pki, who)) as session:
                with anyio.fail_after(30):
                    seen[who] = sorted(t.name for t in (await session.list_tools()).tools)
                if who == "alice":
                    assert await call(session, "local_echo", {"text": "x"}) == "local: x"
                    with pytest.raises(MCPError, match="Unknown tool"):  # denied: as if it did not exist
                        await session.call_tool("local_whoami", {})
        assert seen == {"alice": ["local_add", "local_echo"], "bob": ["local_add", "local_whoami"]}


async def test_without_a_client_certificate_certificate_rules_allow_nothing(pki: dict[str, Any]) -> None:
    rules = '["source.subjectCn == \\"alice\\"", "size(source.subjectAltNames) > 0"]'
    policies = f"{{ mcpAuthorization: {{ rules: {rules} }} }}"
    async with (
        run_gateway(https_yaml(pki, policies=policies)) as gw,  # no root: no client certificate asked
        handshake_session(f"https://127.0.0.1:{gw.port}/mcp", client_context(pki, "alice")) as session,
    ):
        with anyio.fail_after(30):
            assert (await session.list_tools()).tools == []


async def test_min_tls_version_refuses_older_clients(pki: dict[str, Any]) -> None:
    async with run_gateway(https_yaml(pki, tls=", minTLSVersion: TLS_V1_3")) as gw:
        old = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError):
            await anyio.to_thread.run_sync(peer_certificate, gw.port, old)
        await anyio.to_thread.run_sync(peer_certificate, gw.port, client_context(pki))
    # a TLS 1.2-only suite list serves TLS 1.2 with that suite only
    suites = ", cipherSuites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]"
    async with run_gateway(https_yaml(pki, tls=suites)) as gw:

        def negotiated() -> tuple[str | None, str | None]:
            with (
                socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw,
                client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                cipher = tls.cipher()
                return tls.version(), cipher[0] if cipher else None

        assert await anyio.to_thread.run_sync(negotiated) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


async def test_sni_chooses_the_listener_certificate(pki: dict[str, Any]) -> None:
    d = pki["dir"]
    listeners = "".join(
        f"""
  - hostname: {host}
    protocol: HTTPS
    tls: {{ cert: "{d / f"{cert}.crt"}", key: "{d / f"{cert}.key"}" }}
    routes: [{{ name: {cert}, policies: {{directResponse: {{body: {cert}, status: 200}}}} }}]"""
        for host, cert in (("a.test", "server"), ("'*.b.test'", "server2"))
    )
    async with run_gateway(f"binds:\n- port: 0\n  listeners:{listeners}\n") as gw:
        ctx = client_context(pki)
        ctx.check_hostname = False
        got_a = await anyio.to_thread.run_sync(peer_certificate, gw.port, ctx, "a.test")
        got_b = await anyio.to_thread.run_sync(peer_certificate, gw.port, ctx, "x.b.test")
        assert got_a == der_of(d / "server.crt")
        assert got_b == der_of(d / "server2.crt")
        with pytest.raises(ssl.SSLError):  # no listener serves this name: refused, as in the reference
            await anyio.to_thread.run_sync(peer_certificate, gw.port, ctx, "c.test")


async def test_reload_serves_new_certificates_on_the_same_port(pki: dict[str, Any], tmp_path: Path) -> None:
    d = pki["dir"]
    live = tmp_path / "live"
    live.mkdir()
    for suffix in ("crt", "key"):
        (live / f"gw.{suffix}").write_bytes((d / f"server.{suffix}").read_bytes())
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""
config: {{ adminAddr: null, statsAddr: null }}
binds:
- port: 0
  listeners:
  - protocol: HTTPS
    tls: {{ cert: "{live / "gw.crt"}", key: "{live / "gw.key"}" }}
    routes: [{{ name: hello, policies: {{directResponse: {{body: hello, status: 200}}}} }}]
"""
    )
    runtime = Runtime(load_config(path), lambda: load_config(path), poll=3600)
    async with started(runtime):
        port = next(iter(runtime.sockets.values())).bind.bound_port
        ctx = client_context(pki)
        assert await anyio.to_thread.run_sync(peer_certificate, port, ctx) == der_of(d / "server.crt")
        async with httpx.AsyncClient(verify=ctx, timeout=10) as http:
            kept = await http.get(f"https://127.0.0.1:{port}/")  # a connection opened before the reload
            assert kept.text == "hello"
            for suffix in ("crt", "key"):  # same paths, new content
                (live / f"gw.{suffix}").write_bytes((d / f"server2.{suffix}").read_bytes())
            assert await runtime.reload()
            assert await anyio.to_thread.run_sync(peer_certificate, port, ctx) == der_of(d / "server2.crt")
            assert (await http.get(f"https://127.0.0.1:{port}/")).text == "hello"
        # a reload whose certificate cannot be read keeps serving the previous one
        (live / "gw.key").write_bytes((d / "alice.key").read_bytes())
        problems = await runtime.apply()
        assert problems and "listeners[0].tls.key" in problems[0] and "not the private key" in problems[0]
        assert await anyio.to_thread.run_sync(peer_certificate, port, ctx) == der_of(d / "server2.crt")
        # the socket is kept across reloads: it cannot switch to plain HTTP
        path.write_text(path.read_text().replace("protocol: HTTPS", "protocol: HTTP").replace("    tls:", "    # tls:"))
        problems = await runtime.apply()
        assert problems and "switching it to HTTP needs a restart" in problems[0]


@pytest.mark.parametrize(
    ("tls", "protocol", "expected"),
    [
        ('{cert: "missing.crt", key: "server.key"}', "HTTPS", "binds[0].listeners[0].tls.cert: cannot read"),
        ('{cert: "server.crt", key: "alice.key"}', "HTTPS", "binds[0].listeners[0].tls.key: "),
        ('{cert: "server.key", key: "server.key"}', "HTTPS", "binds[0].listeners[0].tls.cert: "),
        ('{cert: "server.crt", key: "server.key", root: "nope.pem"}', "HTTPS", "binds[0].listeners[0].tls.root"),
        ('{cert: "server.crt", key: "server.key"}', "HTTP", "binds[0].listeners[0].protocol: a listener with a tls"),
        (None, "HTTPS", "binds[0].listeners[0].tls: an HTTPS listener needs a tls block"),
        ("{cert: a, key: b, cipherSuites: [TLS_RSA_WITH_RC4]}", "HTTPS", "tls.cipherSuites[0]: unknown cipher suite"),
        ("{cert: a, key: b, minTLSVersion: TLS_V1_1}", "HTTPS", "tls.minTLSVersion: unsupported TLS version"),
        ("{cert: a, key: b, mode: dynamicCa}", "HTTPS", "tls.mode: dynamicCa"),
        (
            "{cert: a, key: b, keyExchangeGroups: [X25519]}",
            "HTTPS",
            "tls.keyExchangeGroups: not supported by agentplex",
        ),
        ("{cert: a, key: b, spiffe: {}}", "HTTPS", "tls.spiffe: SPIFFE identities are not supported by agentplex"),
        ("{cert: a, key: b, sni: x}", "HTTPS", "tls.sni: unknown key"),
    ],
)
def test_config_errors_name_the_key(pki: dict[str, Any], tls: str | None, protocol: str, expected: str) -> None:
    block = f"\n    tls: {tls}" if tls is not None else ""
    yaml = f"""
binds:
- port: 0
  listeners:
  - protocol: {protocol}{block}
    routes: [{{ policies: {{directResponse: {{body: x, status: 200}}}} }}]
"""
    from gateway.app import Gateway

    with chdir(pki["dir"]), pytest.raises(ConfigError) as caught:
        Gateway(parse_config(yaml, "tls.yaml"))
    assert f"tls.yaml: {expected}" in str(caught.value) or expected in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("tls.yaml: binds[0].listeners[0]"), str(caught.value)


def test_a_bind_is_all_http_or_all_https(pki: dict[str, Any]) -> None:
    yaml = """
binds:
- port: 0
  listeners:
  - {protocol: HTTPS, tls: {cert: a, key: b}, routes: [{policies: {directResponse: {body: x}}}]}
  - {protocol: HTTP, routes: [{policies: {directResponse: {body: x}}}]}
"""
    with pytest.raises(ConfigError, match=r"tls.yaml: binds\[0\].listeners\[1\].protocol: one bind is one socket"):
        parse_config(yaml, "tls.yaml")
    other_root = yaml.replace(
        "{protocol: HTTP,", "{protocol: HTTPS, hostname: b.test, tls: {cert: a, key: b, root: c},"
    )
    with pytest.raises(ConfigError, match=r"listeners\[1\].tls: HTTPS listeners on one bind may differ only"):
        parse_config(other_root, "tls.yaml")


async def test_the_sample_runs_as_shipped(pki: dict[str, Any], tmp_path: Path) -> None:
    """samples/tls.yaml names certs/*.pem relative to the working directory: made here as its comment says."""
    work = tmp_path / "work"
    (work / "certs").mkdir(parents=True)
    d = pki["dir"]
    for src, dst in (("server.crt", "cert.pem"), ("server.key", "key.pem"), ("ca.pem", "ca-cert.pem")):
        (work / "certs" / dst).write_bytes((d / src).read_bytes())
    text = (ROOT / "samples" / "tls.yaml").read_text().replace("port: 3443", "port: 0")
    with chdir(work):
        async with run_gateway(text, str(ROOT / "samples" / "tls.yaml")) as gw:
            async with handshake_session(f"https://127.0.0.1:{gw.port}/mcp", client_context(pki, "alice")) as s:
                assert "now" in [t.name for t in (await s.list_tools()).tools]
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                await anyio.to_thread.run_sync(_request, gw.port, client_context(pki))


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
