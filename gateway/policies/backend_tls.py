"""backendTLS: how the gateway verifies (and authenticates to) an HTTPS MCP target.

One `ssl.SSLContext` per target, built when the config is compiled (building one costs tens of
milliseconds, so never per call). `root` replaces the system trust store with a PEM bundle;
`cert` + `key` are presented to servers that ask for a client certificate (mTLS); `hostname` is
sent as SNI and is the name the server's certificate must carry, whatever host the URL names;
`insecure` turns verification off. Relative file paths open from the working directory, as in the reference.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from gateway.config import ConfigError
from gateway.config.policies import BackendTLS


class _ClientContext(ssl.SSLContext):
    """An SSL context that can pin the TLS server name and the ALPN protocols.

    httpx2 sends the URL's host as the server name unless each request carries an `sni_hostname`
    extension, and its connection pool sets ALPN on the context before every handshake; pinning
    both here makes them hold for every request and connection made with this context.
    """

    server_name: str | None = None
    alpn: list[str] | None = None
    client_certificate: bool = False  # whether one is loaded (the upstream layer's error hints read it)

    def wrap_bio(  # type: ignore[override]
        self, incoming: Any, outgoing: Any, server_side: bool = False, server_hostname: Any = None, session: Any = None
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name or server_hostname, session)

    def wrap_socket(  # type: ignore[override]
        self,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: Any = None,
        session: Any = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side,
            do_handshake_on_connect,
            suppress_ragged_eofs,
            self.server_name or server_hostname,
            session,
        )

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        super().set_alpn_protocols(self.alpn or alpn_protocols)


def ssl_context(cfg: BackendTLS, base_dir: Path, *, where: str = "backendTLS") -> ssl.SSLContext:
    """The client SSL context `cfg` describes. `where` prefixes error messages: "<file>: <key.path>".

    Raises ConfigError when a file is missing, unreadable, not PEM, or the key does not fit the cert.
    """
    ctx = _ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # TLS 1.2+, hostname checking, certificates required
    if cfg.root is not None:
        root = readable(base_dir, cfg.root, f"{where}.root")
        try:
            ctx.load_verify_locations(cafile=str(root))
        except ssl.SSLError:
            raise ConfigError(f"{where}.root: {root} holds no PEM certificate") from None
    else:
        _system_roots(ctx)
    if cfg.cert is not None and cfg.key is not None:
        load_cert_chain(ctx, base_dir, cfg.cert, cfg.key, where)
        ctx.client_certificate = True
    if cfg.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.server_name = cfg.hostname
    ctx.alpn = list(cfg.alpn) if cfg.alpn else None
    return ctx


def load_roots(ctx: ssl.SSLContext, root: Path, where: str) -> None:
    """Trust the PEM bundle `root`; ConfigError naming `where` when it holds no certificate."""
    try:
        ctx.load_verify_locations(cafile=str(root))
    except ssl.SSLError:
        raise ConfigError(f"{where}: {root} holds no PEM certificate") from None


_CA_FILES = (  # where Linux distributions keep the system bundle (as httpcore2 looks for it)
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)


def _system_roots(ctx: ssl.SSLContext) -> None:
    """What httpx2 trusts by default: SSL_CERT_FILE / SSL_CERT_DIR, else the system store."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        ctx.load_verify_locations(cafile=cafile, capath=capath)
        return
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if not cafile and not capath:
        cafile = next(filter(os.path.isfile, _CA_FILES), None)
    if cafile or capath:
        ctx.load_verify_locations(cafile=cafile, capath=capath)


def load_cert_chain(ctx: ssl.SSLContext, base_dir: Path, cert_name: str, key_name: str, where: str) -> None:
    """Load a PEM certificate chain and its key into `ctx`; ConfigError at `<where>.cert`/`.key` otherwise."""
    cert = readable(base_dir, cert_name, f"{where}.cert")
    key = readable(base_dir, key_name, f"{where}.key")
    if b"-----BEGIN CERTIFICATE-----" not in cert.read_bytes():
        raise ConfigError(f"{where}.cert: {cert} holds no PEM certificate")
    key_text = key.read_bytes()
    if b"-----BEGIN" not in key_text or b"PRIVATE KEY-----" not in key_text:
        raise ConfigError(f"{where}.key: {key} holds no PEM private key")
    if b"ENCRYPTED" in key_text:
        raise ConfigError(f"{where}.key: {key} is encrypted (a passphrase-protected key is not supported)")
    try:
        ctx.load_cert_chain(str(cert), str(key), password=lambda: b"")  # never an interactive prompt
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"{where}.key: {key} is not the private key of {cert}") from None
        raise ConfigError(f"{where}.cert: cannot use {cert} with {key}: {exc.reason or exc}") from None


def readable(base_dir: Path, name: str, where: str) -> Path:
    """`name` (relative: to `base_dir`) if it can be opened; ConfigError naming `where` otherwise."""
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    return path
