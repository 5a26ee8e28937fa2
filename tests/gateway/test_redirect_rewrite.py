"""requestRedirect and urlRewrite, over real sockets: what the client is told, what the backend gets."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import run_gateway
from tests.gateway.test_http_backend import backend

pytestmark = pytest.mark.anyio

REDIRECTS = """
binds:
- port: 0
  listeners:
  - routes:
    - name: moved
      matches: [{path: {pathPrefix: /old}}]
      policies: {requestRedirect: {path: {prefix: /new}, status: 301}}
    - name: secure
      matches: [{path: {pathPrefix: /login}}]
      policies: {requestRedirect: {scheme: https}}
    - name: elsewhere
      matches: [{path: {exact: /docs}}]
      policies: {requestRedirect: {authority: {full: "docs.example.com:8443"}, path: {full: /index.html}, status: 308}}
    - name: port
      matches: [{path: {pathPrefix: /admin}}]
      policies: {requestRedirect: {authority: {port: 9443}, status: 307}}
    - name: host
      matches: [{path: {pathPrefix: /help}}]
      policies: {requestRedirect: {authority: {host: help.example.com}, status: 303}}
"""


async def test_redirects_are_built_from_the_request() -> None:
    async with run_gateway(REDIRECTS) as gw, httpx.AsyncClient(timeout=20, follow_redirects=False) as http:
        base = f"http://127.0.0.1:{gw.port}"

        async def redirect(path: str, **kwargs: str) -> tuple[int, str]:
            response = await http.get(f"{base}{path}", headers=kwargs)
            return response.status_code, response.headers["location"]

        here = f"127.0.0.1:{gw.port}"
        assert await redirect("/old/a/b?x=1&y=2") == (301, f"http://{here}/new/a/b?x=1&y=2")
        assert await redirect("/old") == (301, f"http://{here}/new")
        assert await redirect("/old/sp%20ace") == (301, f"http://{here}/new/sp%20ace")  # the client's encoding kept
        assert await redirect("/login?next=/x") == (302, "https://127.0.0.1/login?next=/x")  # a new scheme drops the port
        assert await redirect("/docs") == (308, "http://docs.example.com:8443/index.html")
        assert await redirect("/admin/x") == (307, "http://127.0.0.1:9443/admin/x")
        assert await redirect("/help", host="gw.example.com:8080") == (303, "http://help.example.com:8080/help")
        forwarded = await redirect("/old/z", **{"x-forwarded-proto": "https", "x-forwarded-host": "api.example.com"})
        assert forwarded == (301, "https://api.example.com/new/z")


def rewrite_config(host: str, policies: str, match: str = "{path: {pathPrefix: /api}}") -> str:
    return f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: api
      matches: [{match}]
      policies: {policies}
      backends: [{{host: "{host}"}}]
"""


async def test_url_rewrite_changes_the_path_and_host_sent_to_the_backend() -> None:
    async with backend() as (url, _), httpx.AsyncClient(timeout=20) as http:
        policies = "{urlRewrite: {path: {prefix: /v2}, authority: {full: internal.test:8080}}}"
        async with run_gateway(rewrite_config(url, policies)) as gw:
            got = (await http.get(f"http://127.0.0.1:{gw.port}/api/items/7?q=a%20b")).json()
            assert (got["path"], got["query"]) == ("/v2/items/7", "q=a%20b")
            assert got["headers"]["host"] == "internal.test:8080"
            assert got["headers"]["x-forwarded-host"] == f"127.0.0.1:{gw.port}"  # what the client asked for
            assert (await http.get(f"http://127.0.0.1:{gw.port}/api")).json()["path"] == "/v2"
        policies = "{urlRewrite: {path: {prefix: /}, authority: {host: renamed.test}}}"
        async with run_gateway(rewrite_config(url, policies)) as gw:
            got = (await http.get(f"http://127.0.0.1:{gw.port}/api/items")).json()
            port = url.rsplit(":", 1)[1].rstrip("/")
            assert (got["path"], got["headers"]["host"]) == ("/items", f"renamed.test:{port}")  # the backend's port kept
        policies = "{urlRewrite: {path: {full: /fixed}}}"
        async with run_gateway(rewrite_config(url, policies, "{path: {regex: '/api/.*'}}")) as gw:
            got = (await http.get(f"http://127.0.0.1:{gw.port}/api/anything?k=v")).json()
            assert (got["path"], got["query"]) == ("/fixed", "k=v")


@pytest.mark.parametrize(
    ("policies", "error"),
    [
        ("{requestRedirect: {status: 200}}", r"routes\[0\]\.policies\.requestRedirect\.status: invalid redirect status 200"),
        ("{requestRedirect: {path: {full: /a, prefix: /b}}}", r"requestRedirect\.path: expected exactly one of: full, prefix"),
        ("{requestRedirect: {authority: {full: 'a b'}}}", r"requestRedirect\.authority\.full: invalid authority 'a b'"),
        ("{urlRewrite: {path: {prefix: nope}}}", r"urlRewrite\.path\.prefix: invalid path 'nope'"),
    ],
)
def test_bad_redirects_and_rewrites_are_config_errors(policies: str, error: str) -> None:
    text = f"binds: [{{port: 0, listeners: [{{routes: [{{policies: {policies}, backends: [{{host: 127.0.0.1:1}}]}}]}}]}}]"
    with pytest.raises(ConfigError, match=error):
        parse_config(text, "x.yaml")


def test_url_rewrite_is_refused_on_mcp_routes_and_redirect_needs_no_backend() -> None:
    text = "mcp: {port: 0, policies: {urlRewrite: {path: {full: /x}}}, targets: [{name: a, mcp: {host: 'http://127.0.0.1:1/mcp'}}]}"
    with pytest.raises(ConfigError, match=r"x\.yaml: mcp\.policies\.urlRewrite: applies to plain HTTP and A2A routes"):
        Gateway(parse_config(text, "x.yaml"))
    text = "binds: [{port: 0, listeners: [{routes: [{policies: {requestRedirect: {scheme: https}}}]}]}]"
    Gateway(parse_config(text, "x.yaml"))  # no backend needed
    text = "binds: [{port: 0, listeners: [{routes: [{policies: {requestRedirect: {}, directResponse: {}}}]}]}]"
    with pytest.raises(ConfigError, match=r"routes\[0\]\.policies: directResponse and requestRedirect both answer"):
        Gateway(parse_config(text, "x.yaml"))
