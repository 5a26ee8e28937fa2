"""stdio targets' environment, as the reference gives it: the gateway's own with the target's `env` over
it; with `clearEnv: true` only `env`. The inherited part is never shown (GET /config, logs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.config.redact import redacted_config
from tests.conftest import PY, ROOT, mcp_yaml, run_gateway, sdk_session
from tests.gateway.test_mcp_resilience import text

pytestmark = pytest.mark.anyio

INHERITED = "inherited-secret-5e1f"  # in the gateway's environment only
ARGS = '["-m", "tests.fixtures.upstream", "--transport", "stdio", "--name", "t"]'


def target(name: str, extra: str = "", cmd: str = PY) -> str:
    return f"""
  - name: {name}
    stdio: {{ cmd: "{cmd}", args: {ARGS}, cwd: "{ROOT}"{extra} }}"""


TARGETS = (
    target("plain")
    + target("over", ", env: {AGENTPLEX_ENV_TEST: from-config}")
    + target("clean", ", clearEnv: true, env: {AGENTPLEX_ONLY: mine}")
)


async def test_a_stdio_target_inherits_the_gateway_environment_under_its_env_and_clear_env_clears_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentplex")
    monkeypatch.setenv("AGENTPLEX_ENV_TEST", INHERITED)
    monkeypatch.setenv("npm_config_registry", "http://registry.invalid/")  # what npx needs from us
    async with run_gateway(mcp_yaml(TARGETS)) as gw, sdk_session(gw.url) as s:
        assert await text(s, "plain_getenv", {"name": "AGENTPLEX_ENV_TEST"}) == INHERITED
        assert await text(s, "plain_getenv", {"name": "npm_config_registry"}) == "http://registry.invalid/"
        assert await text(s, "over_getenv", {"name": "AGENTPLEX_ENV_TEST"}) == "from-config"
        assert await text(s, "clean_getenv", {"name": "AGENTPLEX_ENV_TEST"}) == ""
        assert await text(s, "clean_getenv", {"name": "PATH"}) == ""  # not even the SDK's default subset
        assert await text(s, "clean_getenv", {"name": "AGENTPLEX_ONLY"}) == "mine"
        summary = "\n".join(gw.gateway.summary())
    assert INHERITED not in summary
    assert INHERITED not in "\n".join(r.getMessage() for r in caplog.records)


def test_the_config_view_shows_the_configured_env_and_clear_env_never_the_inherited_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTPLEX_ENV_TEST", INHERITED)
    shown = redacted_config(parse_config(mcp_yaml(TARGETS)))
    assert INHERITED not in json.dumps(shown)
    plain, over, clean = (t["stdio"] for t in shown["mcp"]["targets"])
    assert plain["env"] == {} and plain["clearEnv"] is False
    assert set(over["env"]) == {"AGENTPLEX_ENV_TEST"} and INHERITED not in json.dumps(over)
    assert set(clean["env"]) == {"AGENTPLEX_ONLY"} and clean["clearEnv"] is True


async def test_with_clear_env_a_bare_command_is_looked_up_in_the_env_path(tmp_path: Path) -> None:
    """As the reference's `Command` after `env_clear()`: the child's `PATH` finds it (one target: names unprefixed)."""
    launcher = tmp_path / "agentplex-env-test-server"
    launcher.write_text(f'#!/bin/sh\nexec "{PY}" "$@"\n')
    launcher.chmod(0o755)
    extra = f', clearEnv: true, env: {{PATH: "{tmp_path}"}}'
    async with run_gateway(mcp_yaml(target("found", extra, cmd=launcher.name))) as gw, sdk_session(gw.url) as s:
        assert await text(s, "getenv", {"name": "PATH"}) == str(tmp_path)
