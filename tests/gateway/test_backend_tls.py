"""backendTLS toward HTTPS MCP targets: private CAs, SNI/hostname override, mTLS, insecure, config errors.

Upstreams are real MCP servers behind uvicorn's TLS (certificates from trustme) on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import trustme

from gateway.app import _backend_policies, _target_spec
from gateway.config import ConfigError, load_config, parse_config
from gateway.config.policies import BackendTLS
from gateway.policies.backend_tls import ssl_context
from tests.conftest import HEADERS, INIT, mcp_yaml, run_gateway, stdio_target
from tests.gateway.test_backend_auth import Recorder, legacy_session, refusal, serve, sse_session, text, upstream_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    """A private CA, a server certificate for 127.0.0.1, one for upstream.test only, and a client certificate."""
    ca = trustme.CA()
    files: dict[str, Any] = {"ca": ca, "dir": tmp_path}
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for name, hosts in {"ip": ["127.0.0.1"], "named": ["upstream.test"], "client": ["gateway.test"]}.items():
        cert = ca.issue_cert(*hosts)
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.crt"))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(tmp_path / f"{name}.crt"), append=True)
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    other = trustme.CA().issue_cert("127.0.0.1")  # signed by a CA nobody trusts
    other.cert_chain_pems[0].write_to_path(str(tmp_path / "stranger.crt"))
    other.private_key_pem.write_to_path(str(tmp_path / "stranger.key"))
    return files


@contextlib.asynccontextmanager
async def tls_upstream(
    pki: dict[str, Any], cert: str = "ip", kind: str = "mcp", require_client_cert: bool = False
) -> AsyncIterator[tuple[str, Recorder, list[str]]]:
    d: Path = pki["dir"]
    options: dict[str, Any] = {"ssl_certfile": str(d / f"{cert}.crt"), "ssl_keyfile": str(d / f"{cert}.key")}
    if require_client_cert:
        options.update(ssl_ca_certs=str(d / "ca.pem"), ssl_cert_reqs=ssl.CERT_REQUIRED)
    recorder = Recorder(upstream_app("secure", kind))
    sni: list[str] = []
    async with serve(recorder, sni=sni, **options) as port:
        yield f"https://127.0.0.1:{port}/{'mcp' if kind == 'mcp' else 'sse'}", recorder, sni


def config(url: str, tls: str | None, kind: str = "mcp") -> str:
    targets = f"""
  - name: secure
    {kind}: {{ host: "{url}" }}"""
    return mcp_yaml(targets, policies=f"{{ backendTLS: {tls} }}") if tls else mcp_yaml(targets)


async def refused_with(gw_url: str) -> str:
    async with httpx.AsyncClient(timeout=30) as http:
        return refusal(await http.post(gw_url, json=INIT, headers=HEADERS))


@pytest.mark.parametrize("kind", ["mcp", "sse"])
async def test_a_private_ca_is_trusted_only_when_configured(pki: dict[str, Any], kind: str) -> None:
    root = pki["dir"] / "ca.pem"
    async with tls_upstream(pki, kind=kind) as (url, recorder, sni):
        async with run_gateway(config(url, f'{{ root: "{root}" }}', kind)) as gw:
            async with legacy_session(gw.url) as session:
                assert await text(session, "whoami") == "secure"
                assert await text(session, "echo", {"text": "x"}) == "secure: x"  # relay path for mcp targets
            async with sse_session(f"http://127.0.0.1:{gw.port}") as session:
                assert await text(session, "whoami") == "secure"
        assert recorder.seen and set(sni) == {None}  # an IP address is never sent as SNI
        async with run_gateway(config(url, None, kind)) as gw:  # the system roots do not know this CA
            message = await refused_with(gw.url)
        assert "target 'secure'" in message and "CERTIFICATE_VERIFY_FAILED" in message and url not in message, message
        assert "CERTIFICATE_VERIFY_FAILED" in message and "unable to get local issuer certificate" in message


async def test_hostname_sets_sni_and_the_name_the_certificate_must_carry(pki: dict[str, Any]) -> None:
    root = pki["dir"] / "ca.pem"
    async with tls_upstream(pki, cert="named") as (url, _, sni):
        tls = f'{{ root: "{root}", hostname: upstream.test }}'
        async with run_gateway(config(url, tls)) as gw, legacy_session(gw.url) as session:
            assert await text(session, "whoami") == "secure"
            assert await text(session, "echo", {"text": "x"}) == "secure: x"
        assert sni and set(sni) == {"upstream.test"}
        async with run_gateway(config(url, f'{{ root: "{root}" }}')) as gw:  # the URL's 127.0.0.1 is not on it
            message = await refused_with(gw.url)
        assert "target 'secure'" in message and "IP address mismatch" in message, message
        async with run_gateway(config(url, f'{{ root: "{root}", hostname: other.test }}')) as gw:
            message = await refused_with(gw.url)
        assert "target 'secure'" in message and "Hostname mismatch" in message, message


@pytest.mark.parametrize("kind", ["mcp", "sse"])
async def test_mtls_presents_the_client_certificate(pki: dict[str, Any], kind: str) -> None:
    d = pki["dir"]
    async with tls_upstream(pki, kind=kind, require_client_cert=True) as (url, recorder, _):
        async with run_gateway(config(url, f'{{ root: "{d / "ca.pem"}" }}', kind)) as gw:
            message = await refused_with(gw.url)
        assert "target 'secure'" in message and url not in message, message
        assert "the TLS server may require a client certificate: backendTLS cert and key" in message, message
        assert recorder.seen == []  # no request got through
        tls = f'{{ root: "{d / "ca.pem"}", cert: "{d / "client.crt"}", key: "{d / "client.key"}" }}'
        async with run_gateway(config(url, tls, kind)) as gw, legacy_session(gw.url) as session:
            assert await text(session, "whoami") == "secure"
            assert await text(session, "echo", {"text": "x"}) == "secure: x"
        stranger = f'{{ root: "{d / "ca.pem"}", cert: "{d / "stranger.crt"}", key: "{d / "stranger.key"}" }}'
        async with run_gateway(config(url, stranger, kind)) as gw:  # a certificate the server's CA did not sign
            message = await refused_with(gw.url)
        assert "target 'secure'" in message and "may have refused the client certificate" in message, message


async def test_insecure_skips_verification(pki: dict[str, Any]) -> None:
    async with (
        tls_upstream(pki, cert="named") as (url, _, _),  # unknown CA *and* the wrong name
        run_gateway(config(url, "{ insecure: true }")) as gw,
        legacy_session(gw.url) as session,
    ):
        assert await text(session, "whoami") == "secure"


# -- compiling the policy --------------------------------------------------------------------------------


def compiled(path: Path) -> Any:
    """The `secure` target's spec as the gateway compiles it from the config file at `path`."""
    cfg = load_config(path)
    assert cfg.mcp is not None and cfg.mcp.policies is not None
    return _target_spec(cfg.mcp.targets[0], _backend_policies([(f"{path}: mcp.policies", cfg.mcp.policies)], Path.cwd()))


def write_config(directory: Path, tls: str) -> Path:
    path = directory / "gateway.yaml"
    path.write_text(config("https://127.0.0.1:1/mcp", tls))
    return path


def test_relative_paths_resolve_against_the_working_directory(
    pki: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the reference, a relative path opens from where the gateway runs, not beside the config."""
    conf = tmp_path / "conf"
    conf.mkdir()
    monkeypatch.chdir(pki["dir"])
    path = write_config(conf, '{ root: ./ca.pem, cert: client.crt, key: client.key, hostname: up.test }')
    spec = compiled(path)
    assert isinstance(spec.tls, ssl.SSLContext)
    assert spec.tls.verify_mode == ssl.CERT_REQUIRED and spec.tls.check_hostname
    assert spec.tls.cert_store_stats()["x509_ca"] == 1  # the private CA only, not the system store


@pytest.mark.parametrize(
    ("tls", "problem"),
    [
        ("{ root: missing.pem }", "mcp.policies.backendTLS.root: cannot read {dir}/missing.pem: No such file"),
        ("{ root: client.key }", "mcp.policies.backendTLS.root: {dir}/client.key holds no PEM certificate"),
        ("{ cert: ca.pem, key: nope.key }", "mcp.policies.backendTLS.key: cannot read {dir}/nope.key"),
        ("{ cert: client.key, key: client.key }", "mcp.policies.backendTLS.cert: {dir}/client.key holds no PEM"),
        ("{ cert: client.crt, key: client.crt }", "mcp.policies.backendTLS.key: {dir}/client.crt holds no PEM"),
        ("{ cert: client.crt, key: ip.key }", "mcp.policies.backendTLS.key: {dir}/ip.key is not the private key"),
    ],
)
def test_unusable_files_are_config_errors_at_their_key_path(
    pki: dict[str, Any], tls: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d: Path = pki["dir"]
    monkeypatch.chdir(d)
    path = write_config(d, tls)
    with pytest.raises(ConfigError) as err:
        compiled(path)
    assert str(err.value).startswith(f"{path}: {problem.format(dir=d)}"), str(err.value)


def test_alpn_must_keep_http11() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config("https://127.0.0.1:1/mcp", "{ alpn: [h2] }"), "x.yaml")
    assert "x.yaml: mcp.policies.backendTLS: alpn: must offer http/1.1 and not h2" in str(err.value)
    cfg = parse_config(config("https://127.0.0.1:1/mcp", "{ alpn: [http/1.1] }"))
    assert cfg.mcp is not None and cfg.mcp.policies is not None
    assert _target_spec(cfg.mcp.targets[0], _backend_policies([("x.yaml: mcp.policies", cfg.mcp.policies)], Path.cwd())).tls is not None


def test_stdio_targets_ignore_backend_tls_and_auth(pki: dict[str, Any]) -> None:
    cfg = parse_config(
        mcp_yaml(
            stdio_target("local"),
            policies=f'{{ backendTLS: {{ root: "{pki["dir"] / "ca.pem"}" }}, backendAuth: {{ key: k }} }}',
        )
    )
    assert cfg.mcp is not None and cfg.mcp.policies is not None
    spec = _target_spec(cfg.mcp.targets[0], _backend_policies([("x.yaml: mcp.policies", cfg.mcp.policies)], Path.cwd()))
    assert spec.transport == "stdio" and spec.tls is None and spec.auth is None


async def test_the_pinned_server_name_survives_the_connection_pool(pki: dict[str, Any]) -> None:
    """httpx2 sets ALPN and the server name per connection: the context keeps the configured ones."""
    ctx = ssl_context(BackendTLS(root=str(pki["dir"] / "ca.pem"), hostname="upstream.test"), pki["dir"])
    async with tls_upstream(pki, cert="named") as (url, _, sni), httpx2.AsyncClient(verify=ctx) as client:
        for _ in range(3):
            response = await client.get(url.replace("/mcp", "/nowhere"), headers={"connection": "close"})
            assert response.status_code == 404
    assert sni == ["upstream.test"] * 3
