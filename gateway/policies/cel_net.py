"""The IP and CIDR functions of the reference's CEL (Kubernetes' `net` library, which agentgateway's CEL
carries), for rules such as its traffic example's `cidr("127.0.0.1/8").containsIP(source.address)`.

The CEL library agentplex uses has no custom types, so an IP or a CIDR is its canonical string:
`cidr(s)` and `ip(s)` check and normalise one, and `<cidr>.containsIP(<ip or string>)`,
`<cidr>.containsCIDR(<cidr or string>)`, `isIP(s)` and `isCIDR(s)` answer as the reference's do. A
bad address is an evaluation error, so the rule that reads it does not match. An expression gets these
functions only when it calls one of them (the others are evaluated exactly as before).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: str) -> _IPAddress:
    if "%" in value:  # Kubernetes' ip() refuses zones
        raise ValueError(f"IP address with zone value is not allowed: {value!r}")
    return ipaddress.ip_address(value)


def _network(value: str) -> _IPNetwork:
    return ipaddress.ip_network(value, strict=False)


def cidr(value: str) -> str:
    """`cidr("10.0.0.0/8")`: the CIDR as written, checked (an address with host bits is kept as is)."""
    address, _, prefix = value.partition("/")
    if not prefix:
        raise ValueError(f"network address parse error during conversion from string: {value!r}")
    _network(value)
    return f"{_address(address)}/{int(prefix)}"


def ip(value: str) -> str:
    return str(_address(value))


def is_ip(value: str) -> bool:
    try:
        _address(value)
    except ValueError:
        return False
    return True


def is_cidr(value: str) -> bool:
    try:
        cidr(value)
    except ValueError:
        return False
    return True


def contains_ip(network: str, address: str) -> bool:
    net, addr = _network(network), _address(address)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None and net.version == 4:
        addr = addr.ipv4_mapped  # a dual-stack socket reports IPv4 callers as ::ffff:a.b.c.d
    return addr.version == net.version and addr in net


def contains_cidr(network: str, other: str) -> bool:
    outer, inner = _network(network), _network(other)
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "cidr": cidr,
    "ip": ip,
    "isIP": is_ip,
    "isCIDR": is_cidr,
    "containsIP": contains_ip,
    "containsCIDR": contains_cidr,
}
_CALL = re.compile(r"\b(" + "|".join(FUNCTIONS) + r")\s*\(")


def called(source: str) -> tuple[str, ...]:
    """The names of these functions an expression calls (a cheap scan; a name in a string literal only
    costs the expression a context with the function in it)."""
    return tuple(sorted(set(_CALL.findall(source))))
