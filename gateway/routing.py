"""Which route of a bind gets a request: matches compiled once, ranked once, checked in rank order.

A request goes to the *best* matching route, not the first listed (like the reference and the
Gateway API's HTTPRoute): an exact hostname beats a wildcard (the longer suffix first), which beats
no hostname; then an exact path beats a path prefix (the longer first), which beats a regex, which
beats a match without a path; then a match with a method beats one without; then more header
matches, then more query matches; then config order. A CORS preflight (OPTIONS) matches a method
condition by the method it asks about, so it reaches the route (and its cors policy) that would serve
the request it announces. Every (route, match, hostname) is ranked when
the config is compiled, so a request walks one sorted list and stops at the first that holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import parse_qsl

from starlette.types import Scope

from gateway.config.models import Match, StringMatch

MATCH = "agentplex.match"  # scope["state"] key of the MatchedRoute

T = TypeVar("T")


@dataclass(frozen=True)
class MatchedRoute:
    """Which of a route's matches selected a request: redirects and rewrites replace its `prefix`."""

    route: str
    index: int  # position in the route's `matches` (0 for a route without matches)
    prefix: str | None  # the pathPrefix that matched, without its trailing '/' ('' for '/'); None otherwise


def matched(scope: Scope) -> MatchedRoute | None:
    """The match the router recorded for this request (None outside a routed request)."""
    state = scope.get("state")
    return state.get(MATCH) if isinstance(state, dict) else None


class RequestView:
    """The parts of a request that matches look at, each worked out at most once and only if asked."""

    __slots__ = ("_headers", "_host", "_query", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._host: str | None = None
        self._headers: dict[str, list[str]] | None = None
        self._query: dict[str, list[str]] | None = None

    @property
    def host(self) -> str:
        """The Host header, lower-cased, without its port."""
        if self._host is None:
            self._host = host_of(self.scope)
        return self._host

    @property
    def headers(self) -> dict[str, list[str]]:
        if self._headers is None:
            self._headers = {}
            for key, value in self.scope.get("headers", ()):
                self._headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        return self._headers

    def preflight_for(self) -> str | None:
        """The method a CORS preflight asks about: it goes where that method's request would go."""
        if self.scope.get("method") != "OPTIONS" or "origin" not in self.headers:
            return None
        return next(iter(self.headers.get("access-control-request-method", ())), None)

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = {}
            for key, value in parse_qsl(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
                self._query.setdefault(key, []).append(value)
        return self._query


def host_of(scope: Scope) -> str:
    raw = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    if raw.startswith("["):  # [::1]:3000
        return raw[: raw.find("]") + 1].lower()
    return raw.rsplit(":", 1)[0].lower().rstrip(".")


Test = Callable[[Scope, RequestView], bool]


@dataclass(frozen=True)
class Condition:
    """One way into a route: a match under one hostname, with its rank (smaller is more specific)."""

    rank: tuple[int, ...]
    test: Test
    matched: MatchedRoute


class RouteMatcher:
    """A route's matches, compiled. Calling it says whether any holds (the order-free question)."""

    def __init__(
        self, name: str, matches: Sequence[Match], hostnames: Sequence[str] = (), listener_hostname: str | None = None
    ) -> None:
        self.name = name
        self.conditions: list[Condition] = []
        listener = _host_test(listener_hostname) if listener_hostname else None
        hosts: list[str | None] = list(hostnames) or [listener_hostname]
        for host in hosts:
            host_test = _host_test(host) if host else None
            for index, match in enumerate(matches or [Match()]):
                test = _compile_match(match, [t for t in (listener, host_test) if t is not None])
                rank = (*_host_rank(host), *_match_rank(match))
                self.conditions.append(Condition(rank, test, MatchedRoute(name, index, _prefix(match))))

    def __call__(self, scope: Scope) -> bool:
        view = RequestView(scope)
        return any(c.test(scope, view) for c in self.conditions)


class RouteTable(Generic[T]):
    """A bind's routes in rank order; `select` finds a request's route and records which match it was."""

    def __init__(self, routes: Sequence[tuple[RouteMatcher, T]]) -> None:
        ranked = [
            (condition.rank, order, condition.matched.index, condition, target)
            for order, (matcher, target) in enumerate(routes)
            for condition in matcher.conditions
        ]
        ranked.sort(key=lambda entry: entry[:3])
        self.entries: list[tuple[Condition, T]] = [(entry[3], entry[4]) for entry in ranked]

    def select(self, scope: Scope) -> T | None:
        view = RequestView(scope)
        for condition, target in self.entries:
            if condition.test(scope, view):
                state = scope.get("state")
                if not isinstance(state, dict):
                    state = scope["state"] = {}
                state[MATCH] = condition.matched
                return target
        return None


# -- compiling one match -----------------------------------------------------------------------


def _compile_match(match: Match, hosts: list[Callable[[str], bool]]) -> Test:
    path = _path_test(match)
    method = match.method.upper() if match.method else None
    headers = [(h.name.lower(), _value_test(h.value)) for h in match.headers]
    query = [(q.name, _value_test(q.value)) for q in match.query]

    def test(scope: Scope, view: RequestView) -> bool:
        if method is not None and scope.get("method") != method and view.preflight_for() != method:
            return False
        if path is not None and not path(scope["path"]):
            return False
        if any(not host(view.host) for host in hosts):
            return False
        if any(not any(ok(v) for v in view.headers.get(name, ())) for name, ok in headers):
            return False
        return all(any(ok(v) for v in view.query.get(name, ())) for name, ok in query)

    return test


def _path_test(match: Match) -> Callable[[str], bool] | None:
    p = match.path
    if p is None:
        return None
    if p.exact is not None:
        exact = p.exact
        return lambda path: path == exact
    if p.pathPrefix is not None:
        prefix = p.pathPrefix.rstrip("/")
        if not prefix:
            return None  # '/' is every path
        return lambda path: path == prefix or path.startswith(prefix + "/")
    pattern = re.compile(p.regex or "")
    return lambda path: pattern.fullmatch(path) is not None


def _value_test(value: StringMatch) -> Callable[[str], bool]:
    if value.exact is not None:
        exact = value.exact
        return lambda v: v == exact
    pattern = re.compile(value.regex or "")
    return lambda v: pattern.fullmatch(v) is not None


def _host_test(hostname: str) -> Callable[[str], bool]:
    if hostname.startswith("*."):
        suffix = hostname[1:]  # '.example.com': one or more labels before it, not the domain itself
        return lambda host: host.endswith(suffix) and len(host) > len(suffix)
    return lambda host: host == hostname


def _host_rank(hostname: str | None) -> tuple[int, int]:
    if hostname is None:
        return (2, 0)
    if hostname.startswith("*."):
        return (1, -len(hostname))
    return (0, 0)


def _match_rank(match: Match) -> tuple[int, ...]:
    p = match.path
    if p is None:
        path = (3, 0)
    elif p.exact is not None:
        path = (0, 0)
    elif p.pathPrefix is not None:
        path = (1, -len(p.pathPrefix.rstrip("/")))
    else:
        path = (2, 0)
    return (*path, 0 if match.method else 1, -len(match.headers), -len(match.query))


def _prefix(match: Match) -> str | None:
    if match.path is not None and match.path.pathPrefix is not None:
        return match.path.pathPrefix.rstrip("/")
    return None


# -- describing ---------------------------------------------------------------------------------


def describe(matches: Sequence[Match], hostnames: Sequence[str] = ()) -> str:
    """A route's matches in a few words, for the startup summary."""
    text = "every path" if not matches else ", ".join(_describe_one(m) for m in matches)
    return f"{text} on {', '.join(hostnames)}" if hostnames else text


def _describe_one(m: Match) -> str:
    p = m.path
    if p is None:
        text = "any path"
    else:
        text = f"path {p.exact}" if p.exact else f"prefix {p.pathPrefix}" if p.pathPrefix else f"regex {p.regex}"
    if m.method:
        text = f"{m.method} {text}"
    conditions = [f"header {h.name}" for h in m.headers] + [f"query {q.name}" for q in m.query]
    return f"{text} ({', '.join(conditions)})" if conditions else text
