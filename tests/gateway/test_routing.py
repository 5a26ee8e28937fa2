"""Routes: binds -> listeners -> routes, matched by host, path, method, headers and query, most specific first."""

from __future__ import annotations

import textwrap
from typing import Any

import httpx
import pytest
from mcp import Client

from gateway.config import ConfigError, parse_config
from tests.conftest import PY, ROOT, run_gateway

pytestmark = pytest.mark.anyio


def target(name: str) -> str:
    return (
        f'{{ name: {name}, stdio: {{ cmd: "${{TEST_PY}}", '
        f'args: ["-m", "tests.fixtures.upstream", "--name", "{name}", "--transport", "stdio"], cwd: "{ROOT}" }} }}'
    )


CONFIG = textwrap.dedent(
    f"""
    binds:
    - port: 0
      listeners:
      - name: main
        routes:
        - name: team-a
          matches: [{{ path: {{ pathPrefix: /a }} }}]
          backends: [{{ mcp: {{ targets: [{target("alpha")}] }} }}]
        - name: team-b
          matches: [{{ path: {{ exact: /b/mcp }} }}]
          backends: [{{ mcp: {{ targets: [{target("beta")}, {target("gamma")}] }} }}]
        - name: by-regex
          matches: [{{ path: {{ regex: "/v[0-9]+/mcp" }}, method: POST }}, {{ path: {{ regex: "/v[0-9]+/mcp" }}, method: GET }}]
          backends: [{{ mcp: {{ prefixMode: always, targets: [{target("delta")}] }} }}]
    """
)


async def tools(url: str) -> set[str]:
    async with Client(url, mode="legacy", cache=None) as client:
        return {t.name for t in (await client.list_tools()).tools}


async def test_each_route_serves_its_own_federation(monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_PY", PY)
    async with run_gateway(CONFIG) as gw:
        base = f"http://127.0.0.1:{gw.port}"
        assert "echo" in await tools(f"{base}/a")
        assert "echo" in await tools(f"{base}/a/mcp")  # under the prefix
        assert {"beta_echo", "gamma_echo"} <= await tools(f"{base}/b/mcp")
        assert "delta_echo" in await tools(f"{base}/v2/mcp")
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(f"{base}/b/mcp/extra")).status_code == 404  # exact means exact
            assert (await http.get(f"{base}/ab")).status_code == 404  # a prefix matches whole segments
            assert (await http.delete(f"{base}/v2/mcp")).status_code == 404  # DELETE is not in the matches


def answer(name: str) -> str:
    return f"policies: {{directResponse: {{body: {name}}}}}"


PRECEDENCE = f"""
binds:
- port: 0
  listeners:
  - routes:
    - {{name: root, {answer("root")}}}
    - {{name: regex, matches: [{{path: {{regex: "/api/v[0-9]+/items"}}}}], {answer("regex")}}}
    - {{name: api, matches: [{{path: {{pathPrefix: /api}}}}], {answer("api")}}}
    - {{name: v1, matches: [{{path: {{pathPrefix: /api/v1}}}}], {answer("v1")}}}
    - {{name: health, matches: [{{path: {{exact: /api/v1/health}}}}], {answer("health")}}}
    - name: v2-header
      matches: [{{path: {{pathPrefix: /api}}, headers: [{{name: X-Version, value: {{exact: "2"}}}}]}}]
      {answer("v2-header")}
    - name: beta
      matches: [{{path: {{pathPrefix: /api}}, headers: [{{name: x-tier, value: {{regex: "beta|canary"}}}}]}}]
      {answer("beta")}
    - {{name: post, matches: [{{path: {{pathPrefix: /api}}, method: POST}}], {answer("post")}}}
    - name: debug
      matches: [{{path: {{pathPrefix: /api}}, query: [{{name: debug, value: {{exact: "1"}}}}]}}]
      {answer("debug")}
    - {{name: first, matches: [{{path: {{exact: /same}}}}], {answer("first")}}}
    - {{name: second, matches: [{{path: {{exact: /same}}}}], {answer("second")}}}
"""


async def test_the_most_specific_route_wins_whatever_the_order() -> None:
    async with run_gateway(PRECEDENCE) as gw, httpx.AsyncClient(timeout=20) as http:
        base = f"http://127.0.0.1:{gw.port}"

        async def route(path: str, method: str = "GET", **kwargs: Any) -> str:
            response = await http.request(method, f"{base}{path}", **kwargs)
            assert response.status_code == 200, response.text
            return response.text

        assert await route("/elsewhere") == "root"  # no matches: every path, but last
        assert await route("/api/x") == "api"
        assert await route("/api/v1/x") == "v1"  # the longer prefix, although listed later
        assert await route("/api/v1/health") == "health"  # exact over any prefix
        assert await route("/api/v1/health/more") == "v1"
        assert await route("/api/v7/items") == "api"  # a prefix over a regex
        assert await route("/api/x", headers={"x-version": "2"}) == "v2-header"  # names are case-insensitive
        assert await route("/api/x", headers={"x-version": "3"}) == "api"
        assert await route("/api/x", headers={"x-tier": "canary"}) == "beta"
        assert await route("/api/x", headers={"x-tier": "canary-2"}) == "api"  # a regex must match the whole value
        assert await route("/api/x", "POST") == "post"
        assert await route("/api/x", "POST", headers={"x-version": "2"}) == "post"  # a method over headers
        assert await route("/api/x?debug=1") == "debug"
        assert await route("/api/x?debug=1", headers={"x-version": "2"}) == "v2-header"  # headers over query
        assert await route("/api/x?debug=0") == "api"
        assert await route("/same") == "first"  # a tie: config order


async def test_regex_paths_and_the_catch_all() -> None:
    text = f"""
binds:
- port: 0
  listeners:
  - routes:
    - {{name: root, {answer("root")}}}
    - {{name: regex, matches: [{{path: {{regex: "/v[0-9]+/items"}}}}], {answer("regex")}}}
"""
    async with run_gateway(text) as gw, httpx.AsyncClient(timeout=20) as http:
        base = f"http://127.0.0.1:{gw.port}"
        assert (await http.get(f"{base}/v2/items")).text == "regex"  # a regex over a match without a path
        assert (await http.get(f"{base}/v2/items/x")).text == "root"


HOSTS = f"""
binds:
- port: 0
  listeners:
  - routes:
    - {{name: any-host, {answer("any-host")}}}
    - {{name: wildcard, hostnames: ["*.example.com"], {answer("wildcard")}}}
    - {{name: deeper, hostnames: ["*.eu.example.com"], {answer("deeper")}}}
    - {{name: exact, hostnames: [API.example.com, other.test], {answer("exact")}}}
    - name: exact-admin
      hostnames: [api.example.com]
      matches: [{{path: {{pathPrefix: /admin}}}}]
      {answer("exact-admin")}
"""


async def test_route_hostnames_exact_and_wildcard() -> None:
    async with run_gateway(HOSTS) as gw, httpx.AsyncClient(timeout=20) as http:
        base = f"http://127.0.0.1:{gw.port}"

        async def route(host: str, path: str = "/") -> str:
            return (await http.get(f"{base}{path}", headers={"host": host})).text

        assert await route("api.example.com:8443") == "exact"  # the port does not count
        assert await route("Other.Test") == "exact"  # neither does case
        assert await route("api.example.com", "/admin/users") == "exact-admin"
        assert await route("www.example.com") == "wildcard"
        assert await route("a.b.example.com") == "wildcard"
        assert await route("x.eu.example.com") == "deeper"  # the longer wildcard first
        assert await route("example.com") == "any-host"  # a wildcard needs a subdomain
        assert await route("localhost") == "any-host"


async def test_listener_hostname_still_applies() -> None:
    text = f"""
binds:
- port: 0
  listeners:
  - hostname: "*.internal.test"
    routes:
    - {{name: inner, {answer("inner")}}}
    - {{name: one, hostnames: [one.internal.test], {answer("one")}}}
"""
    async with run_gateway(text) as gw, httpx.AsyncClient(timeout=20) as http:
        base = f"http://127.0.0.1:{gw.port}"
        assert (await http.get(base, headers={"host": "one.internal.test"})).text == "one"
        assert (await http.get(base, headers={"host": "two.internal.test"})).text == "inner"
        assert (await http.get(base, headers={"host": "one.elsewhere.test"})).status_code == 404


@pytest.mark.parametrize(
    ("match", "error"),
    [
        (
            '{headers: [{name: x-a, value: {regex: "("}}]}',
            r"x\.yaml: binds\[0\]\.listeners\[0\]\.routes\[0\]\.matches\[0\]\.headers\[0\]\.value\.regex: invalid regular",
        ),
        (
            "{query: [{name: q, value: {exact: a, regex: b}}]}",
            r"routes\[0\]\.matches\[0\]\.query\[0\]\.value: expected exactly one of: exact, regex",
        ),
        ("{headers: [{name: x-a}]}", r"matches\[0\]\.headers\[0\]\.value: missing required key"),
    ],
)
def test_bad_matches_are_config_errors(match: str, error: str) -> None:
    text = f"binds: [{{port: 0, listeners: [{{routes: [{{matches: [{match}], {answer('x')}}}]}}]}}]"
    with pytest.raises(ConfigError, match=error):
        parse_config(text, "x.yaml")


def test_bad_hostnames_are_config_errors() -> None:
    text = f"binds: [{{port: 0, listeners: [{{routes: [{{hostnames: ['a.*.com'], {answer('x')}}}]}}]}}]"
    with pytest.raises(ConfigError, match=r"routes\[0\]\.hostnames\[0\]: invalid hostname 'a\.\*\.com'"):
        parse_config(text, "x.yaml")
