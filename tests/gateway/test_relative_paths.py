"""Relative file paths in a config open from the working directory, as in the reference (which runs
its examples from its repository root: `jwks: {file: ./manifests/jwt/pub-key}`), not beside the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse_config
from tests.conftest import http_target, mcp_yaml, run_gateway
from tests.gateway.test_auth import SIGNER, bearer, initialize
from tests.gateway.tokens import AUDIENCE, ISSUER

pytestmark = pytest.mark.anyio


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """A config in conf/ and the files it names in run/, where the gateway is started."""
    conf, run = tmp_path / "conf", tmp_path / "run"
    (run / "keys").mkdir(parents=True)
    conf.mkdir()
    jwks = SIGNER.jwks_json()
    (run / "keys" / "jwks.json").write_text(jwks if isinstance(jwks, str) else json.dumps(jwks))
    (run / "users.htpasswd").write_text(f"ann:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n")
    return conf / "gateway.yaml", run


def _jwt(file: str) -> str:
    return f"{{jwtAuth: {{issuer: '{ISSUER}', audiences: ['{AUDIENCE}'], jwks: {{file: {file}}}}}}}"


async def test_jwks_file_opens_from_the_working_directory(
    upstream: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, run = _layout(tmp_path)
    monkeypatch.chdir(run)
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies=_jwt("./keys/jwks.json"))
    source.write_text(yaml)
    async with run_gateway(yaml, str(source)) as gw, httpx.AsyncClient(timeout=30) as http:
        assert (await initialize(http, gw.url, bearer(SIGNER.token()))).status_code == 200


def test_paths_beside_the_config_are_not_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is only beside the config is a config error naming the path it looked for."""
    source, run = _layout(tmp_path)
    (source.parent / "beside.htpasswd").write_text((run / "users.htpasswd").read_text())
    monkeypatch.chdir(run)
    policies = "{basicAuth: {htpasswd: {file: beside.htpasswd}}}"
    yaml = mcp_yaml("\n  - {name: a, stdio: {cmd: 'true'}}", policies=policies)
    with pytest.raises(ConfigError) as err:
        Gateway(parse_config(yaml, str(source)))
    assert str(run / "beside.htpasswd") in str(err.value), err.value


def test_sqlite_registry_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, run = _layout(tmp_path)
    monkeypatch.chdir(run)
    gateway = Gateway(parse_config("a2a:\n  port: 0\n", str(source)))
    assert gateway.agent_registry is not None
    assert gateway.agent_registry.store.describe == f"SQLite file {run / 'agentplex-agents.db'}"
