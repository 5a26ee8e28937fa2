"""Wrong admin tokens per client address: after a few in a minute, that address waits.

Guessing the token through the sign-in page or an `Authorization` header costs a minute per five
tries. Memory is bounded: a fixed number of addresses is remembered, the least recent forgotten first.
An IPv6 client is counted by its /64, which one host usually holds whole.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque


class FailureThrottle:
    def __init__(self, most: int = 5, window: float = 60.0, addresses: int = 10_000) -> None:
        self.most = most  # failures allowed per address within `window` seconds
        self.window = window
        self.addresses = addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again, or None if it may now."""
        failures = self._failures.get(_key(address))
        if failures is None or len(failures) < self.most:
            return None
        wait = failures[0] + self.window - time.monotonic()
        return math.ceil(wait) if wait > 0 else None

    def failed(self, address: str) -> None:
        key = _key(address)
        failures = self._failures.pop(key, None) or deque(maxlen=self.most)
        failures.append(time.monotonic())
        self._failures[key] = failures  # now the most recent
        while len(self._failures) > self.addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(_key(address), None)


def _key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
