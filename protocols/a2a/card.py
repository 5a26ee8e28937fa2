"""Agent cards: fetched and validated when an agent is added, rewritten so clients call the gateway.

An A2A 1.0 card lists its endpoints in `supportedInterfaces[].url`; a 0.3 card in `url` and
`additionalInterfaces[].url`. A client follows those URLs, so the copy the gateway serves must
point at the gateway, or clients would bypass it after reading the card. They are re-anchored there
by their path alone, as the reference does (crates/agentgateway/src/a2a/mod.rs, `public_interface_url`):
the host an agent advertises (`localhost`, a container name, a public name) is not how the gateway
reaches it, so it cannot decide which URLs are the agent's.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from a2a.client.card_resolver import parse_agent_card
from a2a.types import AgentCard
from google.protobuf.json_format import ParseDict, ParseError

from protocols.a2a.agent import Agent, AgentSpec

CARD_PATH = "/.well-known/agent-card.json"  # A2A 1.0 (and late 0.3)
LEGACY_CARD_PATH = "/.well-known/agent.json"  # A2A 0.3 and earlier
VERSION_HEADERS = {"A2A-Version": "1.0"}
MAX_CARD_BYTES = 1024 * 1024
FETCH_TIMEOUT = 10.0


async def fetch_card(client: httpx.AsyncClient, spec: AgentSpec) -> Agent:
    """The agent with its card, from `<url>/.well-known/agent-card.json` or, if that is 404, the 0.3 path
    (from `<url>` itself when a full urlRewrite sends every request there).

    Raises ValueError naming the agent when the card cannot be had or is not a usable card."""
    card = await _get_card(client, spec)
    return Agent(
        name=spec.name,
        url=spec.url,
        card=card,
        version=card_version(card),
        source=spec.source,
        headers=dict(spec.headers),
        full_rewrite=spec.full_rewrite,
    )


def card_version(card: dict[str, Any]) -> str:
    """ "1.0" for a card with `supportedInterfaces`, "0.3" for one with only `url`."""
    return "1.0" if card.get("supportedInterfaces") else "0.3"


def rewrite_card(agent: Agent, public_url: str, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `card` (by default the agent's own) whose interface URLs all lead to `public_url`.

    Every http(s) URL in `supportedInterfaces` (1.0), `url` and `additionalInterfaces` (0.3) is
    re-anchored there by its path (public_interface_url); its host is ignored, since an agent behind
    Docker or a load balancer advertises a name the gateway does not use to reach it."""
    out = copy.deepcopy(agent.card if card is None else card)
    path = agent_path(agent)

    def move(holder: Any) -> None:
        if isinstance(holder, dict) and isinstance(holder.get("url"), str):
            holder["url"] = public_interface_url(holder["url"], public_url, path)

    move(out)
    for key in ("supportedInterfaces", "additionalInterfaces"):
        interfaces = out.get(key)
        if isinstance(interfaces, list):
            for interface in interfaces:
                move(interface)
    return out


def agent_path(agent: Agent) -> str:
    """The path the agent sees at the gateway's URL for it (a full urlRewrite's, less the card's path)."""
    path = urlsplit(agent.url).path
    if agent.full_rewrite:
        for suffix in (CARD_PATH, LEGACY_CARD_PATH):
            path = path.removesuffix(suffix)
    return path.rstrip("/")


def public_interface_url(url: str, public_url: str, agent_path: str) -> str:
    """An interface URL of an agent's card as a client of the gateway must see it (the reference's rule).

    Only its path counts: below `agent_path` (on a segment boundary) what follows moves below `public_url`;
    any other path goes below `public_url` whole. A URL that is not http(s) (a gRPC `host:port`) stays."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    path = parts.path or "/"
    rest = _below(path, agent_path) if agent_path else None
    return public_url.rstrip("/") + (path if rest is None else rest) + (f"?{parts.query}" if parts.query else "")


def _below(path: str, base: str) -> str | None:
    """What follows `base` in `path` when `path` is `base` or below it by whole segments, else None."""
    if path == base:
        return ""
    return path[len(base) :] if path.startswith(base + "/") else None


def relocate(url: str, base_url: str, public_url: str) -> str:
    """A URL an agent answered with (a redirect's Location), as the client must see it: below the agent's
    base URL (or a path below its base path) it moves below `public_url`; elsewhere on the agent's own
    origin it moves to the gateway's origin, so the agent's address never shows; other URLs (another host,
    a relative reference) stay as they are. Raises ValueError for a URL that cannot be parsed."""
    parts = urlsplit(url)
    base = _Base(base_url)
    if parts.scheme or parts.netloc:  # absolute, or scheme-relative (`//host/path`)
        absolute = url if parts.scheme else f"{urlsplit(base_url).scheme}:{url}"
        if _origin(absolute) != base.key:
            return url
        rest = base.rest(absolute)
        if rest is not None:
            return public_url.rstrip("/") + rest + (f"#{parts.fragment}" if parts.fragment else "")
        public = urlsplit(public_url)
        return urlunsplit((public.scheme, public.netloc, parts.path, parts.query, parts.fragment))
    if not parts.path.startswith("/") or not (parts.path == base.path or parts.path.startswith(base.path + "/")):
        return url  # relative to the request: it resolves against the gateway's URL as it should
    return public_url.rstrip("/") + url[len(base.path) :]


class _Base:
    """A base URL, compared the way a server would: scheme and host case-insensitively, default ports
    implied, the path by whole segments (`/a` is not a base of `/ab`)."""

    def __init__(self, url: str) -> None:
        self.key = _origin(url)
        self.path = urlsplit(url).path.rstrip("/")

    def rest(self, url: str) -> str | None:
        """What follows the base in `url` (path, query), or None if `url` is not below it."""
        if _origin(url) != self.key:
            return None
        parts = urlsplit(url)
        if parts.path != self.path and not parts.path.startswith(self.path + "/"):
            return None
        rest = parts.path[len(self.path) :]
        return rest + (f"?{parts.query}" if parts.query else "")


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


async def _get_card(client: httpx.AsyncClient, spec: AgentSpec) -> dict[str, Any]:
    base = spec.url.rstrip("/")
    url = spec.url if spec.full_rewrite else base + CARD_PATH
    status, body = await _get(client, spec, url)
    if status == 404 and spec.full_rewrite:
        raise ValueError(f"agent {spec.name!r}: no card at {url} (it answered 404)")
    if status == 404:
        legacy = base + LEGACY_CARD_PATH
        status, body = await _get(client, spec, legacy)
        if status == 404:
            raise ValueError(f"agent {spec.name!r}: no card at {url} or {legacy} (both answered 404)")
        url = legacy
    if status != 200:
        raise ValueError(f"agent {spec.name!r}: card at {url} answered {status}")
    try:
        card = json.loads(body)
    except ValueError:
        raise ValueError(f"agent {spec.name!r}: card at {url} is not JSON") from None
    if not isinstance(card, dict):
        raise ValueError(f"agent {spec.name!r}: card at {url} is not a JSON object")
    _validate(card, f"agent {spec.name!r}: card at {url}")
    return card


async def _get(client: httpx.AsyncClient, spec: AgentSpec, url: str) -> tuple[int, bytes]:
    headers = {**VERSION_HEADERS, "accept": "application/json", **spec.headers}
    try:
        async with client.stream("GET", url, headers=headers, timeout=FETCH_TIMEOUT) as response:
            if response.status_code != 200:
                return response.status_code, b""
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_CARD_BYTES:
                    raise ValueError(f"agent {spec.name!r}: card at {url} is larger than {MAX_CARD_BYTES} bytes")
            return 200, bytes(body)
    except httpx.TimeoutException:
        raise ValueError(f"agent {spec.name!r}: card at {url} did not arrive within {FETCH_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:
        raise ValueError(f"agent {spec.name!r}: cannot fetch the card at {url}: {_reason(exc)}") from None


def _validate(card: dict[str, Any], what: str) -> None:
    if not isinstance(card.get("name"), str) or not card["name"].strip():
        raise ValueError(f"{what} lacks a name")
    if "supportedInterfaces" in card:
        try:
            parsed = ParseDict(card, AgentCard(), ignore_unknown_fields=True)
        except (ParseError, TypeError, ValueError) as exc:
            raise ValueError(f"{what} is not a valid A2A 1.0 card: {_first_line(exc)}") from None
        if not any(interface.url for interface in parsed.supported_interfaces):
            raise ValueError(f"{what} lacks supportedInterfaces (no interface has a url)")
        return
    if not isinstance(card.get("url"), str) or not card["url"]:
        raise ValueError(f"{what} lacks supportedInterfaces (A2A 1.0) and url (A2A 0.3)")
    try:
        parse_agent_card(copy.deepcopy(card))  # the SDK's own reading of a 0.3 card
    except (ParseError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{what} is not a valid A2A 0.3 card: {_first_line(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {_first_line(text)}" if text != type(exc).__name__ else text


def _first_line(value: object) -> str:
    return str(value).strip().splitlines()[0] if str(value).strip() else type(value).__name__
