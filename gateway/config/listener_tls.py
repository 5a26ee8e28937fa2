"""A listener's `tls:` block (the reference's LocalTLSServerConfig): what an HTTPS listener serves.

Key names, values and defaults are the reference's. Keys agentplex cannot honour with Python's `ssl`
(a dynamic CA, SPIFFE, key exchange groups) are refused by name, never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, model_validator

from .base import _CI, _Model, _non_empty, _problem_at

TLSVersion = Literal["TLS_V1_0", "TLS_V1_1", "TLS_V1_2", "TLS_V1_3"]
_RANK = {"TLS_V1_2": 12, "TLS_V1_3": 13}  # the reference serves only these two (rustls)

# The reference's names (rustls) and its aliases (the TLS13_* names, OpenSSL's names) -> OpenSSL's name.
# TLS 1.3 suites have no OpenSSL cipher-list name: they map to themselves.
TLS13_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")
TLS12_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_ALIASES = {
    **{f"TLS13_{name[4:]}": name for name in TLS13_SUITES},
    **{openssl: name for name, openssl in TLS12_SUITES.items()},
}
# The reference's TLS 1.2 defaults (its DEFAULT_CIPHER_SUITES: no CHACHA20 unless listed).
DEFAULT_TLS12 = [TLS12_SUITES[n] for n in TLS12_SUITES if "CHACHA20" not in n]


def _suite(value: str) -> str:
    """A cipher suite as the reference names it (its aliases accepted), in its canonical spelling."""
    name = _ALIASES.get(value, value)
    if name not in TLS13_SUITES and name not in TLS12_SUITES:
        known = ", ".join([*TLS13_SUITES, *TLS12_SUITES])
        raise ValueError(f"unknown cipher suite {value!r} (expected one of: {known})")
    return name


CipherSuite = Annotated[str, AfterValidator(_suite)]


class ListenerTLS(_Model):
    """cert/key: the listener's certificate chain and key (PEM); root: a CA bundle that client
    certificates must chain to (mTLS: a client without one is refused)."""

    mode: Annotated[Literal["static", "dynamicCa"], _CI] = "static"
    cert: Annotated[str, AfterValidator(_non_empty)]
    key: Annotated[str, AfterValidator(_non_empty)]
    root: str | None = None
    cipherSuites: list[CipherSuite] | None = None  # an allowlist; None: the reference's defaults
    minTLSVersion: TLSVersion | None = None  # None: TLS_V1_2
    maxTLSVersion: TLSVersion | None = None  # None: TLS_V1_3
    keyExchangeGroups: list[str] | None = None
    spiffe: Any = None  # named so that setting it is refused clearly

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        # The reference also accepts minTlsVersion / maxTlsVersion.
        if isinstance(data, dict):
            for short, canonical in (("minTlsVersion", "minTLSVersion"), ("maxTlsVersion", "maxTLSVersion")):
                if short in data and canonical not in data:
                    data = {**data, canonical: data[short]}
                    del data[short]
        return data

    @model_validator(mode="after")
    def _supported(self) -> ListenerTLS:
        if self.mode == "dynamicCa":
            raise _problem_at(
                ("mode",), "dynamicCa (leaf certificates minted per SNI name) is not supported by agentplex"
            )
        if self.spiffe is not None:
            raise _problem_at(("spiffe",), "SPIFFE identities are not supported by agentplex")
        if self.keyExchangeGroups is not None:
            raise _problem_at(
                ("keyExchangeGroups",),
                "not supported by agentplex (Python's ssl cannot set a list of groups); remove it to use OpenSSL's",
            )
        for key in ("minTLSVersion", "maxTLSVersion"):
            value = getattr(self, key)
            if value is not None and value not in _RANK:
                raise _problem_at((key,), f"unsupported TLS version {value} (only TLS_V1_2 and TLS_V1_3 are served)")
        low, high = self.versions
        if low > high:
            raise _problem_at(
                ("minTLSVersion",), f"minTLSVersion {self.minTLSVersion} is above maxTLSVersion {self.maxTLSVersion}"
            )
        if self.cipherSuites is not None:
            self._check_suites(low, high)
        return self

    @property
    def versions(self) -> tuple[int, int]:
        """(lowest, highest) TLS version served: 12 or 13."""
        low = _RANK[self.minTLSVersion] if self.minTLSVersion else 12
        high = _RANK[self.maxTLSVersion] if self.maxTLSVersion else 13
        return low, high

    def _check_suites(self, low: int, high: int) -> None:
        suites = self.cipherSuites or []
        if not suites:
            raise _problem_at(("cipherSuites",), "must not be empty (omit it for the defaults)")
        tls13 = [s for s in suites if s in TLS13_SUITES]
        if tls13 and len(set(tls13)) != len(TLS13_SUITES):
            raise _problem_at(
                ("cipherSuites",),
                "agentplex cannot choose among TLS 1.3 suites (Python's ssl has no setting for them): list all of "
                f"{', '.join(TLS13_SUITES)} or none (none: TLS 1.3 is off)",
            )
        tls12 = [s for s in suites if s in TLS12_SUITES]
        offered = {v for v, found in ((12, tls12), (13, tls13)) if found and low <= v <= high}
        if not offered:
            raise _problem_at(("cipherSuites",), "none of these suites belongs to a TLS version this listener serves")
