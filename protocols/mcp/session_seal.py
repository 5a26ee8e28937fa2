"""Sealed session ids: what a replica needs to resume an MCP session, AES-256-GCM sealed into its Mcp-Session-Id.

Any replica holding the key can open a sealed id, none can forge or read one without it. Keys rotate: the
current key seals, previous keys still open ids sealed before the rotation.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_HEX_CHARS", "SessionSeal", "parse_key"]

KEY_HEX_CHARS = 64  # 32 bytes, as `openssl rand -hex 32` writes them
_NONCE = 12  # bytes: the 96-bit random nonce GCM is made for
_TAG = 16
_PREFIX = "s1."  # the seal's format version; an id without it is not a sealed id


def parse_key(text: str) -> bytes:
    """A 64-hex-character key as bytes; ValueError says what is wrong with it (never the key itself)."""
    text = text.strip()
    if len(text) != KEY_HEX_CHARS:
        raise ValueError(f"expected {KEY_HEX_CHARS} hex characters (openssl rand -hex 32), got {len(text)} characters")
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise ValueError(f"expected {KEY_HEX_CHARS} hex characters (openssl rand -hex 32): not hex") from None


class SessionSeal:
    """Seals a JSON-able mapping into a session id (visible ASCII: URL-safe base64, no padding) and opens it."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        self._sealer = AESGCM(key)
        self._openers = [self._sealer, *(AESGCM(k) for k in previous if k != key)]

    def seal(self, state: Mapping[str, Any]) -> str:
        plain = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._sealer.encrypt(nonce, plain, _PREFIX.encode())
        return _PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, session_id: str) -> dict[str, Any] | None:
        """The state sealed in `session_id`, or None for anything else (not sealed, tampered, another key)."""
        if not session_id.startswith(_PREFIX) or len(session_id) > 16384:
            return None
        body = session_id[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _NONCE + _TAG:
            return None
        nonce, sealed = raw[:_NONCE], raw[_NONCE:]
        for opener in self._openers:
            try:
                plain = opener.decrypt(nonce, sealed, _PREFIX.encode())
            except InvalidTag:
                continue
            try:
                state = json.loads(plain)
            except ValueError:
                return None
            return state if isinstance(state, dict) else None
        return None
