"""Signing keys and JWTs for tests: real keys (joserfc), so the gateway's checks run for real."""

from __future__ import annotations

import json
import time
from typing import Any

from joserfc import jwk, jwt

ISSUER = "https://idp.test"
AUDIENCE = "agentplex-tests"


class Signer:
    def __init__(self, kid: str = "k1", kind: str = "RSA") -> None:
        self.key = jwk.generate_key(kind, 2048 if kind == "RSA" else "P-256", parameters={"kid": kid})
        self.alg = "RS256" if kind == "RSA" else "ES256"
        self.kid = kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def jwks_json(self) -> str:
        return json.dumps(self.jwks())

    def token(self, sub: str = "alice", *, expires_in: float = 3600, **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + int(expires_in)}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": self.alg, "kid": self.kid}, body, self.key)


def unsigned(sub: str = "alice") -> str:
    """An `alg: none` token: header and claims, no signature."""
    import base64

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now + 300}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
