"""`basicAuth`: users from an htpasswd file (bcrypt hashes only); rules see `basicAuth.username`."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

import anyio
import bcrypt
from starlette.types import ASGIApp, Scope

from gateway.config import ConfigError
from gateway.config.policies import BasicAuth, TokenLocation
from gateway.policies.http import Identity, Refusal, header

_BASIC = TokenLocation(prefix="Basic ")  # where the credentials are (consumed: never proxied on)
# A hash of a random password, checked for unknown users so timing does not reveal who exists.
_DECOY = bcrypt.hashpw(b"agentplex-decoy", bcrypt.gensalt(rounds=10))


class BasicAuthStep:
    def __init__(self, cfg: BasicAuth, base_dir: Path, where: str) -> None:
        self.cfg = cfg
        self.users = load_htpasswd(cfg, base_dir, where)
        self._verified: dict[bytes, bool] = {}  # bcrypt is slow on purpose; remember answers (by digest)

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        credentials = _credentials(header(scope, "authorization"))
        identity.consumed.add(_BASIC)
        if credentials is None:
            return self._challenge("credentials required") if self.cfg.mode == "strict" else None
        user, password = credentials
        if not await self._check(user, password):
            return None if self.cfg.mode == "permissive" else self._challenge("invalid username or password")
        identity.basic = {"username": user}
        return None

    async def _check(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if key in self._verified:
            return self._verified[key]
        ok = await anyio.to_thread.run_sync(bcrypt.checkpw, password.encode(), hashed or _DECOY)
        ok = ok and hashed is not None
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key] = ok
        return ok

    def _challenge(self, reason: str) -> Refusal:
        return Refusal(401, "unauthorized", reason, {"www-authenticate": f'Basic realm="{self.cfg.realm}"'})


def _credentials(value: str | None) -> tuple[str, str] | None:
    if not value or value[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def load_htpasswd(cfg: BasicAuth, base_dir: Path, where: str) -> dict[str, bytes]:
    """`user:$2y$...` lines; anything but bcrypt is refused at load (MD5/crypt/plain are not safe)."""
    if cfg.htpasswd.file is not None:
        path = base_dir / cfg.htpasswd.file  # an absolute path stays as it is
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{where}.htpasswd.file: cannot read {path}: {exc.strerror}") from None
    else:
        text = cfg.htpasswd.inline or ""
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        if not colon or not hashed.startswith(("$2y$", "$2b$", "$2a$")):
            raise ConfigError(f"{where}.htpasswd: line {number}: expected 'user:<bcrypt hash>' (htpasswd -B)")
        users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
    return users
