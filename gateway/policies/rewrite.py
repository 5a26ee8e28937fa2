"""`urlRewrite`: the path and the Host a backend is sent, changed before the request leaves.

A `prefix` path replaces the pathPrefix the route matched (gateway/routing.py records it) and keeps
the rest; when the route matched by exact path or regex it replaces the whole path. The authority
becomes the Host header toward the backend only: X-Forwarded-Host still says what the client asked.

compile_policies rejects urlRewrite on MCP routes (the gateway serves them itself; their targets have
their own URLs). On a one-agent A2A route it is not a step: gateway/app.py folds it into the agent's URL
(`a2a_upstream`), since the gateway fetches that agent's card itself and maps the card's URLs back
through the rewrite (protocols/a2a/card.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from starlette.types import ASGIApp, Scope

from gateway.config.policies import Authority, PathReplacement, UrlRewrite
from gateway.policies.http import Identity
from gateway.routing import matched

UPSTREAM_AUTHORITY = "agentplex.upstream_authority"  # scope["state"] key: an Authority for the backend's Host
_SAFE = "/%:@!$&'()*+,;=~"


def replace_path(scope: Scope, cfg: PathReplacement) -> tuple[str, str]:
    """The request's (path, raw path) with `cfg` applied; the raw path keeps the client's encoding of the rest."""
    path: str = scope["path"]
    raw = (scope.get("raw_path") or quote(path, safe=_SAFE).encode()).decode("latin-1")
    match = matched(scope)
    if cfg.full is not None or match is None or match.prefix is None:
        full = cfg.full if cfg.full is not None else cfg.prefix or "/"
        return full, quote(full, safe=_SAFE)
    prefix, new = match.prefix, (cfg.prefix or "/").rstrip("/")
    rest = path[len(prefix) :]
    if raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in ("", "/"):
        raw_rest = raw[len(prefix) :]
    else:  # the client encoded the prefix itself (`/%61pi`): re-encode the decoded rest
        raw_rest = quote(rest, safe=_SAFE)
    return (new + rest) or "/", (quote(new, safe=_SAFE) + raw_rest) or "/"


@dataclass(frozen=True)
class A2aUpstream:
    """Where a one-agent A2A route's prefix leads: the agent's URL, the path the prefix becomes toward it
    (what requestMirror copies go below), whether every request goes to that one path, a Host to send."""

    url: str
    path: str
    full: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def a2a_upstream(host: str, prefix: str, cfg: UrlRewrite | None) -> A2aUpstream:
    """The reference's paths for an A2A route: without a path rewrite the agent sees the path as the client
    sent it (the route's prefix included); a `prefix` rewrite replaces the prefix, a `full` one the whole path."""
    path = cfg.path if cfg is not None else None
    if path is None:
        at = prefix
    elif path.full is not None:
        at = path.full
    else:
        at = (path.prefix or "/").rstrip("/")
    headers = {}
    if cfg is not None and cfg.authority is not None:
        headers["host"] = replace_authority(urlsplit(host).netloc, cfg.authority)
    at = quote(at, safe=_SAFE)
    return A2aUpstream(host.rstrip("/") + at, at, full=path is not None and path.full is not None, headers=headers)


def replace_authority(base: str, cfg: Authority) -> str:
    """`base` (host[:port]) with the whole authority, its host or its port replaced."""
    if cfg.full is not None:
        return cfg.full
    host, port = split_authority(base)
    if cfg.host is not None:
        return f"{cfg.host}:{port}" if port else cfg.host
    return f"{host}:{cfg.port}"


def split_authority(authority: str) -> tuple[str, str]:
    """host[:port] or [v6][:port] -> (host, port or '')."""
    if authority.startswith("["):
        end = authority.find("]") + 1
        return authority[:end], authority[end + 1 :]
    host, _, port = authority.partition(":")
    return host, port


class UrlRewriteStep:
    def __init__(self, cfg: UrlRewrite) -> None:
        self.cfg = cfg

    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        if self.cfg.path is not None:
            path, raw = replace_path(scope, self.cfg.path)
            scope["path"], scope["raw_path"] = path, raw.encode("latin-1")
        if self.cfg.authority is not None:
            scope["state"][UPSTREAM_AUTHORITY] = self.cfg.authority  # PolicyApp made the state
        return None
