"""The agent registry over HTTP: discovery for every caller, registration for the callers a rule admits.

    GET    <path>/agents            the agents this caller may use, with their rewritten cards
                                    (?skill=<id>, ?tag=<tag>, ?name=<substring>; repeat a key to accept any)
    GET    <path>/agents/<name>     one of them (404 if unknown or hidden from this caller)
    POST   <path>/agents            {name, url, headers?}: fetch and check the card, store, serve (201; 200 replaced)
    DELETE <path>/agents/<name>     forget a runtime registration (config agents: 409)

Authentication is the route's (PolicyApp runs before these handlers and fills in the caller's identity).
Discovery hides what the route's authorization rules hide: an agent is listed only if the guard lets the
caller see `GetAgentCard` on it, the same question the card endpoint asks, so a list never shows an agent
whose card the caller cannot fetch. Registration and deletion are allowed only when `registration.allow`
(CEL; "false" by default) holds, with `a2a.method` = "RegisterAgent" / "UnregisterAgent" and `a2a.agent`
the name. Every error is a small JSON body naming the agent and the reason; never a traceback. A registered
agent may not live at the gateway itself or on non-public networks (gateway/agent_addresses.py), and why a URL
gave no card is logged, not told: the registry must not become a probe of whatever the gateway can reach.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.agent_store import RedisStore, SqliteStore
from federation.agents import Agent, AgentConflict, AgentRegistry, AgentSpec, AgentStore, CardFetcher, StoreError
from federation.guard import Access, Guard, OpenGuard
from gateway.agent_addresses import AddressPolicy, RefusedAddress
from gateway.config.a2a import A2aShort, AgentConfig, RegistryConfig
from gateway.config.errors import ConfigError
from gateway.policies.cel_context import EvalError, Expr
from gateway.policies.http import Refusal
from gateway.policies.mcp_authn import public_base
from protocols import redaction

logger = logging.getLogger("agentplex.a2a.registry")

MAX_BODY = 64 * 1024
RESERVED = frozenset({"agents", ".", ".."})  # `agents` is this API's own path segment under <path>
Rewrite = Callable[[Agent, str], dict[str, Any]]  # protocols.a2a.card.rewrite_card(agent, public_url)


# -- building ---------------------------------------------------------------------------------


def registry_store(cfg: RegistryConfig, base_dir: Path, where: str = "a2a.registry") -> AgentStore | None:
    """The configured store: Redis when set, else the SQLite file (relative to the working directory), else none."""
    if cfg.redis is not None:
        try:
            return RedisStore(cfg.redis.url, prefix=cfg.prefix, timeout=cfg.redis.timeout)
        except ValueError as exc:
            raise ConfigError(f"{where}.redis.url: {exc}") from None
    if cfg.sqlite:
        store = SqliteStore(base_dir / cfg.sqlite)
        try:
            store.check()
        except StoreError as exc:
            raise ConfigError(f"{where}.sqlite: {exc}") from None
        return store
    return None


def build_registry(a2a: A2aShort, base_dir: Path, fetch: CardFetcher, where: str = "a2a") -> AgentRegistry:
    """The registry an `a2a:` block describes: its config agents, its store, its health interval."""
    specs = [AgentSpec(a.name, a.url, dict(a.headers), "config") for a in a2a.agents]
    store = registry_store(a2a.registry, base_dir, f"{where}.registry")
    return AgentRegistry(specs, fetch, store=store, health_interval=a2a.registry.healthInterval)


# -- serving ----------------------------------------------------------------------------------


class RegistryApi:
    """ASGI app for `<path>/agents` and `<path>/agents/<name>`; `handles(scope)` says whether a request is its."""

    def __init__(
        self,
        registry: AgentRegistry,
        *,
        path: str,
        rewrite: Rewrite,
        guard: Guard | None = None,
        allow: str = "false",
        addresses: AddressPolicy | None = None,
    ) -> None:
        self.registry = registry
        self.addresses = addresses or AddressPolicy()
        self.path = path.rstrip("/")
        self.base = f"{self.path}/agents"
        self.rewrite = rewrite
        self.guard = guard or OpenGuard()
        self.allow = Expr(allow)

    def handles(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        return scope["type"] == "http" and (path == self.base or path.startswith(self.base + "/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._dispatch(scope, receive)
        except Exception:  # a bug here must answer cleanly, not with a traceback
            logger.exception("agent registry API: %s %s failed", scope.get("method"), scope.get("path"))
            response = _error(500, "internal_error", "the agent registry could not answer this request")
        await response(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive) -> ASGIApp:
        method = scope["method"]
        rest = scope["path"][len(self.base) :].strip("/")
        if not rest:
            if method in ("GET", "HEAD"):
                return self._list(scope)
            if method == "POST":
                return await self._register(scope, receive)
            return _error(405, "method_not_allowed", f"{method} {self.base}: use GET or POST", {"allow": "GET, POST"})
        if "/" in rest:
            return _error(404, "not_found", f"no such registry resource: {scope['path']}")
        name = rest  # the server decoded the path once; decoding again would let `go%256fd` name `good`
        if method in ("GET", "HEAD"):
            return await self._show(scope, name)
        if method == "DELETE":
            return await self._unregister(scope, name)
        return _error(
            405, "method_not_allowed", f"{method} {self.base}/<name>: use GET or DELETE", {"allow": "GET, DELETE"}
        )

    # -- discovery ------------------------------------------------------------------------

    def _list(self, scope: Scope) -> ASGIApp:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        skills, tags = set(query.get("skill", [])), {t.lower() for t in query.get("tag", [])}
        names = [n.lower() for n in query.get("name", [])]
        found = []
        for agent in self.registry.all():
            if names and not any(n in agent.name.lower() for n in names):
                continue
            if skills and not any(s.get("id") in skills for s in agent.skills()):
                continue
            if tags and not any(str(t).lower() in tags for s in agent.skills() for t in _list_of(s.get("tags"))):
                continue
            if self._visible(scope, agent.name):
                found.append(self._record(scope, agent))
        return JSONResponse({"agents": found})

    async def _show(self, scope: Scope, name: str) -> ASGIApp:
        agent = await self.registry.resolve(name)
        if agent is None or not self._visible(scope, name):
            return _unknown(name)
        return JSONResponse(self._record(scope, agent))

    def _visible(self, scope: Scope, name: str) -> bool:
        try:
            return self.guard.visible(scope, Access("GetAgentCard", "agent", name, name))
        except Exception:  # a failing guard hides, it does not break the list
            logger.exception("agent registry: the authorization check for agent %r failed; hidden", name)
            return False

    def _record(self, scope: Scope, agent: Agent) -> dict[str, Any]:
        url = f"{public_base(scope)}{self.path}/{quote(agent.name, safe='')}"
        card: dict[str, Any] | None = None
        if agent.card:
            try:
                card = self.rewrite(agent, url)
            except Exception as exc:
                logger.warning("agent %r: its card could not be rewritten for discovery: %s", agent.name, exc)
        return {
            "name": agent.name,
            "url": url,
            "healthy": agent.healthy,
            "lastError": agent.last_error,
            "source": agent.source,
            "card": card,
        }

    # -- administration -------------------------------------------------------------------

    async def _register(self, scope: Scope, receive: Receive) -> ASGIApp:
        raw = await _read_body(receive, MAX_BODY)
        if raw is None:
            return _error(413, "body_too_large", f"a registration is at most {MAX_BODY} bytes of JSON")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        name = name if isinstance(name, str) else ""
        denied = self._refused(scope, "RegisterAgent", name)
        if denied is not None:
            return denied
        if not isinstance(body, dict):
            return _error(400, "invalid_request", 'expected a JSON object: {"name": ..., "url": ..., "headers": {...}}')
        try:
            cfg = AgentConfig.model_validate(body)
        except ValidationError as exc:
            return _error(422, "invalid_agent", f"agent {name!r}: {_problems(exc)}")
        if cfg.name.lower() in RESERVED:
            return _error(422, "invalid_agent", f"agent {cfg.name!r}: the name is reserved")
        header = next((h for h in cfg.headers if _forbidden_header(h, cfg.headers[h])), None)
        if header is not None:
            why = "a hop-by-hop, Host, credential, cookie or proxy header, or not a valid header"
            return _error(422, "invalid_agent", f"agent {cfg.name!r}: headers: {header!r} may not be set ({why})")
        parts = urlsplit(cfg.url)
        if "@" in parts.netloc or parts.query or parts.fragment or "?" in cfg.url or "#" in cfg.url:
            # credentials in the URL become an Authorization header; a query would swallow the paths appended
            why = "a base URL without user:password@, query or fragment (paths are appended to it)"
            return _error(422, "invalid_agent", f"agent {cfg.name!r}: url: expected {why}")
        existed = self.registry.get(cfg.name) is not None
        try:
            await self.addresses.check(cfg.url)
            agent = await self.registry.register(AgentSpec(cfg.name, cfg.url, dict(cfg.headers), "runtime"))
        except AgentConflict as exc:
            return _error(409, "conflict", str(exc))
        except RefusedAddress as exc:
            logger.warning("agent %r: registration at %s refused: %s", cfg.name, cfg.url, exc)
            why = "the gateway itself or a network registrations may not reach"
            return _error(422, "forbidden_address", f"agent {cfg.name!r}: its URL leads to {why}")
        except ValueError as exc:  # unreachable, no card, not a valid one: which, the registrant is not told
            logger.warning("agent %r: registration at %s failed: %s", cfg.name, cfg.url, exc)
            why = "no usable agent card could be fetched from its URL"
            return _error(502, "bad_agent_card", f"agent {cfg.name!r}: {why}")
        except StoreError as exc:
            return _error(503, "registry_unavailable", f"agent {cfg.name!r} was not registered: {exc}")
        logger.info("agent %r registered at %s", cfg.name, redaction.url(cfg.url))
        location = f"{self.base}/{quote(cfg.name, safe='')}"
        return JSONResponse(
            self._record(scope, agent), status_code=200 if existed else 201, headers={"location": location}
        )

    async def _unregister(self, scope: Scope, name: str) -> ASGIApp:
        denied = self._refused(scope, "UnregisterAgent", name)
        if denied is not None:
            return denied
        try:
            found = await self.registry.unregister(name)
        except AgentConflict as exc:
            return _error(409, "conflict", str(exc))
        except StoreError as exc:
            return _error(503, "registry_unavailable", f"agent {name!r} was not deleted: {exc}")
        if not found:
            return _unknown(name)
        logger.info("agent %r unregistered", name)
        return JSONResponse({"deleted": name})

    def _refused(self, scope: Scope, method: str, name: str) -> ASGIApp | None:
        """403 unless `registration.allow` holds for this caller (a rule that cannot be evaluated refuses)."""
        try:
            allowed = self.allow.evaluate(scope, Access(method, "agent", name, name)) is True
        except EvalError as exc:
            logger.debug("registration rule does not apply: %s", exc)
            allowed = False
        if allowed:
            return None
        verb = "register" if method == "RegisterAgent" else "delete"
        return _error(403, "forbidden", f"the caller may not {verb} agents (registration.allow does not admit it)")


# -- helpers ------------------------------------------------------------------------------------


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> ASGIApp:
    return Refusal(status, error, description, headers)


def _unknown(name: str) -> ASGIApp:
    return _error(404, "not_found", f"no agent named {name!r}")


# Headers a registrant may not set for its agent: they belong to the hop, the gateway or the caller
# (RFC 9110 §7.6.1, framing, Host, credentials, cookies, proxies and forwarding).
_FORBIDDEN_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "content-length", "expect", "host", "authorization", "proxy-authorization", "proxy-authenticate",
        "cookie", "forwarded", "x-real-ip", "via",
    }
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _forbidden_header(name: str, value: str) -> bool:
    lower = name.lower()
    return (
        lower in _FORBIDDEN_HEADERS
        or lower.startswith(("x-forwarded-", "proxy-"))
        or not _TOKEN.fullmatch(name)
        or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
    )


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


def _list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None past `limit` bytes (or if the client left)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
