"""`jwtAuth`: bearer JWTs checked against an issuer, audiences and a JWKS (joserfc), claims exposed as `jwt.*`.

A JWKS URL is fetched asynchronously and cached for `cacheTtl`; a token signed with a key id the
cache does not know refetches it, at most once per `refreshCooldown` (key rotation without letting
garbage tokens hammer the identity provider). Validated tokens are remembered until they expire,
so a session's every message does not pay for a signature check.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from starlette.types import ASGIApp, Scope

from gateway.config import ConfigError
from gateway.config.policies import Jwks, JwtAuth
from gateway.policies.http import Identity, Refusal, bearer_challenge, find_token
from protocols import redaction

logger = logging.getLogger("agentplex.jwt")

_CACHE_SIZE = 10_000


class InvalidToken(Exception):
    """A token that must be refused; the message is safe to show the caller."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched (and none was cached): not the caller's fault."""


class JwksSource:
    """Signing keys from a URL (cached, refetched on an unknown kid), a file, or inline JSON."""

    def __init__(self, cfg: Jwks, base_dir: Path, where: str) -> None:
        self.cfg = cfg
        self._keys: KeySet | None = None
        self._expires = 0.0
        self._last_fetch = -1e9
        self._lock = anyio.Lock()
        self._client: httpx.AsyncClient | None = None
        if cfg.url is None:
            self._keys = _static_keys(cfg, base_dir, where)

    async def keys(self, kid: str | None) -> KeySet:
        if self.cfg.url is None:
            assert self._keys is not None
            return self._keys
        now = time.monotonic()
        stale = self._keys is None or now >= self._expires
        unknown = kid is not None and self._keys is not None and not _has_kid(self._keys, kid)
        if stale or (unknown and now - self._last_fetch >= self.cfg.refreshCooldown):
            async with self._lock:
                if self._last_fetch < now:  # nobody refreshed while we waited
                    await self._fetch()
        if self._keys is None:
            raise KeysUnavailable(f"signing keys from {redaction.url(self.cfg.url or '')} are unavailable")
        return self._keys

    async def _fetch(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0, follow_redirects=True)  # IdPs move JWKS behind redirects
        try:
            response = await self._client.get(self.cfg.url)  # type: ignore[arg-type]
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
            self._expires = time.monotonic() + self.cfg.cacheTtl
        except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:  # not a JWK set: as if down
            # Keep serving with the keys we had: a flaky IdP should not log everyone out.
            logger.warning("cannot fetch JWKS from %s: %s", redaction.url(self.cfg.url or ""), redaction.text(str(exc)))
            if self._keys is not None:
                self._expires = time.monotonic() + self.cfg.refreshCooldown
        finally:
            # When it ended, not began: requests that queued on the lock during a slow fetch see it as
            # done after they arrived, and use its result instead of fetching again one by one.
            self._last_fetch = time.monotonic()


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def _static_keys(cfg: Jwks, base_dir: Path, where: str) -> KeySet:
    path = base_dir / (cfg.file or "")  # an absolute path stays as it is
    try:
        if cfg.file is not None:
            data: Any = json.loads(path.read_text())
        else:
            data = json.loads(cfg.inline) if isinstance(cfg.inline, str) else cfg.inline
        if isinstance(data, dict) and "keys" not in data:
            data = {"keys": [data]}  # a single JWK
        return KeySet.import_key_set(data)
    except OSError as exc:
        raise ConfigError(f"{where}.jwks.file: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, JoseError) as exc:
        raise ConfigError(f"{where}.jwks: not a JWK set ({exc})") from None


class JwtValidator:
    """Signature (pinned algorithms), issuer, audience, expiry; remembers tokens it accepted."""

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str | None,
        audiences: list[str],
        algorithms: list[str],
        leeway: float,
        required: list[str] | tuple[str, ...] = ("exp",),
    ) -> None:
        self.jwks = jwks
        self.algorithms = algorithms
        # Present or not, exp and nbf are checked whenever a token carries them.
        claims: dict[str, Any] = {name: {"essential": True} for name in required}
        if issuer:
            claims["iss"] = {"essential": True, "value": issuer}
        if audiences:
            claims["aud"] = {"essential": True, "values": audiences}
        self.registry = jwt.JWTClaimsRegistry(leeway=int(leeway), **claims)
        self._accepted: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def validate(self, token: str) -> dict[str, Any]:
        """The token's claims, or InvalidToken saying why not."""
        claims = self._accepted.get(token)
        if claims is not None:
            if claims["exp"] + self.registry.leeway > time.time():
                return claims
            del self._accepted[token]
        kid = _kid(token)
        try:
            decoded = jwt.decode(token, await self.jwks.keys(kid), algorithms=self.algorithms)
        except InvalidKeyIdError:
            raise InvalidToken("token signed with an unknown key") from None
        except JoseError as exc:
            raise InvalidToken(_reason(exc)) from None
        try:
            self.registry.validate(decoded.claims)
        except ExpiredTokenError:
            raise InvalidToken("token expired") from None
        except MissingClaimError as exc:
            raise InvalidToken(f"token lacks required claim {exc.claim}") from None
        except InvalidClaimError as exc:
            raise InvalidToken(_claim_problem(exc)) from None
        except JoseError as exc:
            raise InvalidToken(_reason(exc)) from None
        claims = decoded.claims
        if "exp" not in claims:
            return claims  # never expires: checked afresh each time rather than remembered forever
        if not isinstance(claims["exp"], int | float):
            raise InvalidToken("token has a malformed exp")
        self._accepted[token] = claims
        if len(self._accepted) > _CACHE_SIZE:
            self._accepted.popitem(last=False)
        return claims


def _kid(token: str) -> str | None:
    try:
        header = json.loads(_b64(token.split(".", 1)[0]))
    except (ValueError, IndexError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _claim_problem(exc: InvalidClaimError) -> str:
    """joserfc raises InvalidClaimError for a wrong value, a malformed one, and nbf/iat in the future."""
    text = str(exc.description)
    if "not yet valid" in text:
        return "token is not yet valid"
    if "in the future" in text:
        return "token was issued in the future"
    if "must be" in text:
        return f"token has a malformed {exc.claim}"
    return f"token has the wrong {exc.claim}"


def _reason(exc: JoseError) -> str:
    text = str(exc.description or exc.error)
    if "not allowed" in text:
        return "token signed with an algorithm that is not allowed"
    if exc.error in ("bad_signature",):
        return "token signature is invalid"
    if exc.error in ("decode_error", "invalid_header", "invalid_payload"):
        return "token is malformed"
    return "token is invalid"


def validator_for(
    cfg: Any,
    base_dir: Path,
    where: str,
    default_audiences: list[str] | None = None,
    *,
    jwks: Jwks | None = None,
    required: list[str] | tuple[str, ...] = ("exp",),
) -> JwtValidator:
    if not cfg.algorithms or any(str(a).lower() == "none" for a in cfg.algorithms):
        # joserfc accepts unsigned tokens when told "none" is allowed: never (whatever the config model let by)
        raise ConfigError(
            f"{where}.algorithms: expected signing algorithms such as RS256 or ES256 ('none' is never allowed)"
        )
    return JwtValidator(
        JwksSource(jwks or cfg.jwks, base_dir, where),
        issuer=cfg.issuer,
        audiences=list(cfg.audiences) or list(default_audiences or []),
        algorithms=list(cfg.algorithms),
        leeway=cfg.leeway,
        required=required,
    )


class JwtAuthStep:
    """strict: a valid token is required; optional: checked when present; permissive: a bad one is ignored."""

    def __init__(self, cfg: JwtAuth, base_dir: Path, where: str) -> None:
        self.cfg = cfg
        self.validator = validator_for(cfg, base_dir, where)

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        token = find_token(scope, self.cfg.location)
        identity.consumed.add(self.cfg.location)
        claims, refusal = await authenticate(self.validator, token, self.cfg.mode)
        if claims is not None:
            identity.jwt, identity.token, identity.scopes = claims, token, token_scopes(claims)
        return refusal


async def authenticate(
    validator: JwtValidator, token: str | None, mode: str, **challenge: str
) -> tuple[dict[str, Any] | None, ASGIApp | None]:
    """(claims, None) for a good token, (None, refusal) to refuse, (None, None) to go on anonymously:
    strict needs a good token, optional refuses only a bad one, permissive ignores a bad one."""
    if token is None:
        return None, (unauthorized(None, "authentication required", **challenge) if mode == "strict" else None)
    try:
        return await validator.validate(token), None
    except InvalidToken as exc:
        return None, (None if mode == "permissive" else unauthorized("invalid_token", str(exc), **challenge))
    except KeysUnavailable as exc:
        logger.error("%s", exc)
        return None, Refusal(503, "temporarily_unavailable", "cannot check tokens right now")


def token_scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope, list):
        return [str(s) for s in scope]
    return str(scope).split()


def unauthorized(error: str | None, description: str, **challenge: str) -> Refusal:
    return Refusal(
        401,
        error or "unauthorized",
        description,
        {"www-authenticate": bearer_challenge(error, description if error else None, **challenge)},
    )
