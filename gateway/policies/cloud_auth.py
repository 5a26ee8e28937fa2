"""backendAuth toward cloud services: `gcp` (Google ID and access tokens) and `aws` (SigV4 signing).

Both libraries are optional extras (`pip install 'agentplex[gcp]'`, `'agentplex[aws]'`); the config
refuses a policy whose library is missing (gateway/config/policies.py), so they are imported here only
when such a policy is built. Their calls block (files, the metadata server, IMDS), so they run in a
worker thread, bounded by CLOUD_AUTH_TIMEOUT; what they find is kept (tokens until shortly before they
expire, AWS credentials for good: botocore refreshes temporary ones itself).

Both are UpstreamAuth implementations that work on the request itself (`apply`): a Google ID token's
default audience comes from the request's host, and a SigV4 signature covers the method, path, query,
host and body of the request exactly as it is sent.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio

from gateway.config.policies import AwsAuth, GcpAuth
from gateway.policies.backend_auth import RETRY_AFTER, BackendAuthError, _TokenCache

CLOUD_AUTH_TIMEOUT = 15.0  # one credential lookup, however many requests the library makes for it
GCP_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
AUDIENCES = 64  # ID tokens kept, one per audience
DEFAULT_AWS_SERVICE = "bedrock"  # as in the reference
# What SigV4 covers, as in the reference: headers a proxy on the way leaves alone.
_SIGNED = ("host", "content-type", "date")
_SIGNED_PREFIXES = ("x-amz-", "x-amzn-")

T = TypeVar("T")


async def _blocking(fn: Callable[[], T]) -> T:
    """Run a cloud library's blocking call in a worker thread, giving up on it after CLOUD_AUTH_TIMEOUT."""
    with anyio.fail_after(CLOUD_AUTH_TIMEOUT):
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- gcp ---------------------------------------------------------------------------------------------------


class GcpTokenAuth:
    """`authorization: Bearer <token>` from Google's default credentials, or the configured credential JSON
    (google-auth).

    An access token is one for everything; ID tokens are kept per audience (the configured one, or
    `https://<host>` of each request as in the reference; a bare IP address has no such audience)."""

    def __init__(self, cfg: GcpAuth) -> None:
        self.id_token = cfg.type == "idToken"
        self.audience = cfg.audience
        self.credential = cfg.credential_info if cfg.credential is not None else None
        self.cache = _TokenCache(AUDIENCES)

    async def headers(self, caller: Any) -> dict[str, str]:
        return {}  # set by apply(), which sees the request's host

    async def apply(self, caller: Any, request: Any) -> None:
        audience = self._audience(str(request.url)) if self.id_token else None
        token = await self.cache.get(audience, lambda: self._fetch(audience))
        request.headers["authorization"] = f"Bearer {token}"

    def forget(self, caller: Any) -> None:
        self.cache.entries.clear()  # the backend refused a token: fetch fresh ones

    def _audience(self, url: str) -> str:
        if self.audience is not None:
            return self.audience
        host = urlsplit(url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return f"https://{host}"
        raise BackendAuthError(
            f"an ID token for {host} needs an explicit gcp.audience (the default is https://<hostname>)"
        )

    async def _fetch(self, audience: str | None) -> tuple[str, float]:
        what = f"a Google ID token for {audience}" if audience is not None else "a Google access token"
        try:
            token, expires = await _blocking(lambda: _google_token(audience, self.credential))
        except TimeoutError:
            raise BackendAuthError(f"cannot get {what}: no answer within {CLOUD_AUTH_TIMEOUT:g} s") from None
        except Exception as exc:  # google.auth.exceptions.*, and whatever its transport raised
            raise BackendAuthError(f"cannot get {what}: {_describe(exc)}") from None
        return token, max(1.0, expires - time.time())


def _google_token(audience: str | None, credential: dict[str, Any] | None) -> tuple[str, float]:
    """(token, expiry as a Unix time): an ID token for `audience`, or an access token when it is None;
    from the `credential` JSON if given, else from the default credentials."""
    import google.auth
    import google.auth.jwt
    import google.auth.transport.requests
    import google.oauth2.id_token

    request = google.auth.transport.requests.Request()
    if audience is None:
        if credential is None:
            credentials, _ = google.auth.default(scopes=list(GCP_SCOPES))
        else:
            credentials, _ = google.auth.load_credentials_from_dict(credential, scopes=list(GCP_SCOPES))
        credentials.refresh(request)
        if credentials.expiry is None:
            return credentials.token, time.time() + 300.0
        return credentials.token, credentials.expiry.replace(tzinfo=datetime.UTC).timestamp()  # naive UTC
    if credential is None:
        token = google.oauth2.id_token.fetch_id_token(request, audience)
    else:
        token = _id_token_from(credential, audience, request)
    return token, float(google.auth.jwt.decode(token, verify=False)["exp"])


def _id_token_from(credential: dict[str, Any], audience: str, request: Any) -> str:
    """An ID token from credential JSON (the kinds the config allows: gateway/config/policies.py)."""
    import google.auth
    import google.auth.impersonated_credentials
    import google.oauth2.credentials
    import google.oauth2.service_account

    kind = credential["type"]
    credentials: Any
    if kind == "service_account":
        credentials = google.oauth2.service_account.IDTokenCredentials.from_service_account_info(
            credential, target_audience=audience
        )
    elif kind == "impersonated_service_account":
        source, _ = google.auth.load_credentials_from_dict(credential, scopes=list(GCP_SCOPES))
        credentials = google.auth.impersonated_credentials.IDTokenCredentials(
            source, target_audience=audience, include_email=True
        )
    else:  # authorized_user: the refresh answer carries an ID token
        credentials = google.oauth2.credentials.Credentials.from_authorized_user_info(credential)
        credentials.refresh(request)
        if not credentials.id_token:
            raise BackendAuthError("the authorized_user credential's refresh gave no ID token")
        return credentials.id_token
    credentials.refresh(request)
    return credentials.token


# -- aws ---------------------------------------------------------------------------------------------------


class AwsSigV4Auth:
    """Signs each request with AWS Signature Version 4 (botocore), over the bytes actually sent."""

    signs_body = True

    def __init__(self, cfg: AwsAuth) -> None:
        self.cfg = cfg
        self.service = cfg.serviceName or DEFAULT_AWS_SERVICE
        self.found: tuple[Any, str] | None = None  # (botocore credentials, region), once found
        self.problem: tuple[str, float] | None = None  # why not, and until when that answer stands
        self.lock = anyio.Lock()

    async def headers(self, caller: Any) -> dict[str, str]:
        return {}  # the signature is made in apply(), over the final request

    async def apply(self, caller: Any, request: Any) -> None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials, region = await self._credentials()
        if getattr(credentials, "refresh_needed", lambda: False)():
            frozen = await _blocking(credentials.get_frozen_credentials)  # temporary ones: STS, IMDS...
        else:
            frozen = credentials.get_frozen_credentials()
        now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        for name in ("authorization", "x-amz-date", "x-amz-security-token"):
            request.headers.pop(name, None)
        request.headers["x-amz-date"] = now
        if frozen.token:
            request.headers["x-amz-security-token"] = frozen.token
        signed = {
            k: v for k, v in request.headers.items() if k.lower() in _SIGNED or k.lower().startswith(_SIGNED_PREFIXES)
        }
        aws = AWSRequest(method=request.method, url=str(request.url), headers=signed, data=request.content or b"")
        aws.context["timestamp"] = now
        # The steps of SigV4Auth.add_auth, without its debug log (the canonical request shows the session token).
        signer = SigV4Auth(frozen, self.service, region)
        canonical = signer.canonical_request(aws)
        signature = signer.signature(signer.string_to_sign(aws, canonical), aws)
        names = signer.signed_headers(signer.headers_to_sign(aws))
        request.headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={signer.scope(aws)}, SignedHeaders={names}, Signature={signature}"
        )

    async def _credentials(self) -> tuple[Any, str]:
        if self.found is not None:
            return self.found
        async with self.lock:
            if self.found is None:
                if self.problem is not None and time.monotonic() < self.problem[1]:
                    raise BackendAuthError(self.problem[0])
                try:
                    self.found = await _blocking(self._find)
                except TimeoutError:
                    self._failed(f"no AWS credentials within {CLOUD_AUTH_TIMEOUT:g} s")
                except BackendAuthError as exc:
                    self._failed(str(exc))
                except Exception as exc:  # botocore's errors: a broken profile, an unreachable role endpoint...
                    self._failed(f"cannot load AWS credentials: {_describe(exc)}")
            assert self.found is not None
            return self.found

    def _failed(self, problem: str) -> None:
        self.problem = (problem, time.monotonic() + RETRY_AFTER)
        raise BackendAuthError(problem)

    def _find(self) -> tuple[Any, str]:
        """The configured keys or botocore's default chain, and the region (blocking)."""
        import botocore.credentials
        import botocore.session

        cfg = self.cfg
        session = botocore.session.Session()
        if cfg.accessKeyId is not None and cfg.secretAccessKey is not None:
            credentials = botocore.credentials.Credentials(cfg.accessKeyId, cfg.secretAccessKey, cfg.sessionToken)
        else:
            credentials = session.get_credentials()
            if credentials is None:
                raise BackendAuthError(
                    "no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or a role; "
                    "or aws.accessKeyId and aws.secretAccessKey)"
                )
        # AWS_REGION as the AWS SDKs (the reference's among them) read it; botocore knows only the older name
        region = cfg.region or os.environ.get("AWS_REGION") or session.get_config_variable("region")
        if not region:
            raise BackendAuthError("no AWS region (set aws.region, or AWS_REGION)")
        return credentials, region
