"""HTTPS listeners: the SSL contexts a bind serves, and the client certificate as rules see it.

A bind's contexts are built when its config is compiled, from the files its listeners' `tls` blocks
name, so a reload reads the certificates again. uvicorn is given one `ServingContext` per socket for
the socket's life; it wraps each new connection with the context of the config serving now, so a
reload's certificates reach new connections without closing the port (open connections keep theirs).
Several HTTPS listeners on one bind are chosen by SNI against their `hostname`, as in the reference
(an exact name first, then the longest `*.` wildcard, then a listener without one; no match: refused).
Only HTTP/1.1 is offered over ALPN: uvicorn does not speak HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.config.listener_tls import DEFAULT_TLS12, TLS12_SUITES, TLS13_SUITES, ListenerTLS
from gateway.http_limits import ReadDeadlines
from gateway.policies.backend_tls import load_cert_chain, load_roots, readable

_VERSION = {12: ssl.TLSVersion.TLSv1_2, 13: ssl.TLSVersion.TLSv1_3}


def server_context(cfg: ListenerTLS, base_dir: Path, where: str) -> ssl.SSLContext:
    """The server context `cfg` describes; ConfigError naming `<where>.<key>` for a missing file, a file
    that is not PEM, or a key that is not the certificate's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    low, high = cfg.versions
    tls12 = [TLS12_SUITES[s] for s in cfg.cipherSuites or () if s in TLS12_SUITES]
    if cfg.cipherSuites is not None:  # an allowlist: a version none of whose suites is listed is off
        low = low if tls12 else 13
        high = high if any(s in TLS13_SUITES for s in cfg.cipherSuites) else 12
    ctx.minimum_version, ctx.maximum_version = _VERSION[low], _VERSION[high]
    if low == 12:
        ctx.set_ciphers(":".join(tls12 or DEFAULT_TLS12))
    load_cert_chain(ctx, base_dir, cfg.cert, cfg.key, where)
    if cfg.root is not None:
        load_roots(ctx, readable(base_dir, cfg.root, f"{where}.root"), f"{where}.root")
        ctx.verify_mode = ssl.CERT_REQUIRED  # mTLS: no certificate from that CA, no connection
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ListenerContexts:
    """One bind's HTTPS listeners: (hostname or None, context), chosen per connection by SNI."""

    def __init__(self, listeners: list[tuple[str | None, ssl.SSLContext]]) -> None:
        self.listeners = listeners
        self.default = listeners[0][1]
        if len(listeners) > 1 or listeners[0][0] is not None:
            self.default.sni_callback = self._by_name

    def select(self, name: str | None) -> ssl.SSLContext | None:
        """The context for SNI `name`, as the reference picks the listener; None: no listener serves it."""
        name = (name or "").lower().rstrip(".")
        best: tuple[int, ssl.SSLContext] | None = None
        for hostname, ctx in self.listeners:
            if hostname is None:
                rank = 0
            elif hostname == name:
                return ctx
            elif hostname.startswith("*.") and name.endswith(hostname[1:]):
                rank = len(hostname)
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, ctx)
        return best[1] if best is not None else None

    def _by_name(self, sslobj: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
        chosen = self.select(name)
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        if chosen is not ctx:
            sslobj.context = chosen
        return None


class ServingContext(ssl.SSLContext):
    """What uvicorn holds for a socket: each connection is wrapped by the contexts serving now."""

    current: ListenerContexts

    def wrap_bio(  # type: ignore[override]
        self, incoming: Any, outgoing: Any, server_side: bool = False, server_hostname: Any = None, session: Any = None
    ) -> ssl.SSLObject:
        return self.current.default.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def serving_context(contexts: ListenerContexts) -> ServingContext:
    front = ServingContext(ssl.PROTOCOL_TLS_SERVER)
    front.current = contexts
    return front


class PeerCertificates(ReadDeadlines):
    """ReadDeadlines that puts the connection's TLS facts in every request's scope, as the ASGI TLS
    extension: `scope["extensions"]["tls"]` (with `source`: the client certificate's CEL variables)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sslobj = transport.get_extra_info("ssl_object")
        self._tls = connection_tls(sslobj) if sslobj is not None else None
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()  # a new request's scope: no task has seen it yet
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}


def connection_tls(sslobj: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension's keys for one connection, and `source`: what CEL rules read."""
    der = sslobj.getpeercert(binary_form=True)
    cipher = sslobj.cipher()
    info: dict[str, Any] = {
        "tls_version": sslobj.version(),
        "cipher_suite": cipher[0] if cipher else None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "source": {"subjectAltNames": []},
    }
    if der:
        pem = ssl.DER_cert_to_PEM_cert(der)
        cert = x509.load_der_x509_certificate(der)
        subject = _name(cert.subject)
        info.update(client_cert_chain=[pem], client_cert_name=subject)
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        info["source"] = {
            "subjectAltNames": _alt_names(cert),
            "issuer": _name(cert.issuer),
            "subject": subject,
            "subjectCn": str(common[0].value) if common else None,
            "certificate": pem,
        }
    return info


def _name(name: x509.Name) -> str:
    """`C=US, O=Acme, CN=client`: attributes in the certificate's order, as the reference prints them."""
    return ", ".join("+".join(f"{attr.rfc4514_attribute_name}={attr.value}" for attr in rdn) for rdn in name.rdns)


def _alt_names(cert: x509.Certificate) -> list[str]:
    """DNS names, URIs (SPIFFE IDs among them), IP addresses and e-mail addresses, in the certificate's order."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    kinds = (x509.DNSName, x509.UniformResourceIdentifier, x509.IPAddress, x509.RFC822Name)
    return [str(entry.value) for entry in names if isinstance(entry, kinds)]
