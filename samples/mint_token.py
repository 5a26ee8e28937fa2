"""Mint a demo JWT for samples/secure.yaml: `python -m samples.mint_token alice [--claim tier=gold]`.

Signed with samples/keys/demo-private.jwk.json, a key published in this repository: for trying the
sample only. Never trust that key (or its JWKS) anywhere real.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from joserfc import jwk, jwt

KEY = Path(__file__).parent / "keys" / "demo-private.jwk.json"
ISSUER = "https://idp.agentplex.example"
AUDIENCE = "agentplex-demo"


def mint(subject: str, ttl: int = 3600, **claims: str) -> str:
    key = jwk.import_key(json.loads(KEY.read_text()))
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subject")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    parser.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.claim)
    print(mint(args.subject, args.ttl, **extra))


if __name__ == "__main__":
    main()
