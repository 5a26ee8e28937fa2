"""`apiKey`: static keys as caller identities; a key's metadata is what rules see as `apiKey.*`."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.types import ASGIApp, Scope

from gateway.config.policies import ApiKey
from gateway.policies.http import Identity, Refusal, find_token


class ApiKeyStep:
    """Keys are compared by digest in constant time; the key itself never reaches rules or logs."""

    def __init__(self, cfg: ApiKey) -> None:
        self.cfg = cfg
        self._keys: dict[bytes, dict[str, Any]] = {}
        for entry in cfg.keys:
            digest = _digest(entry.key)
            self._keys[digest] = {**entry.metadata, "_fingerprint": digest.hex()[:12]}

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        key = find_token(scope, self.cfg.location)
        identity.consumed.add(self.cfg.location)
        if key is None:
            return _refuse("API key required") if self.cfg.mode == "strict" else None
        digest = _digest(key)
        found = next((meta for known, meta in self._keys.items() if hmac.compare_digest(known, digest)), None)
        if found is None:
            return None if self.cfg.mode == "permissive" else _refuse("invalid API key")
        identity.api_key = {k: v for k, v in found.items() if not k.startswith("_")} | {
            "_fingerprint": found["_fingerprint"]
        }
        return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _refuse(reason: str) -> Refusal:
    return Refusal(401, "unauthorized", reason, {"www-authenticate": 'Bearer realm="agentplex"'})
