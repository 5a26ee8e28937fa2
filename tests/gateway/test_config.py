import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    Config,
    ConfigError,
    McpShort,
    load_config,
    parse_config,
    parse_duration,
)
from gateway.config.policies import BackendAuth
from gateway.config.units import parse_byte_size

SHORT = """
mcp:
  port: 3001
  targets:
    - name: everything
      stdio:
        cmd: npx
        args: ["-y", "@modelcontextprotocol/server-everything"]
    - name: remote
      mcp:
        host: https://example.com/mcp
        headers: {Authorization: Bearer abc}
"""

FULL = """
config:
  adminAddr: 0.0.0.0:15000
  adminToken: s3cret
  logging: {level: DEBUG, format: json}
binds:
  - port: 3000
    address: 0.0.0.0
    listeners:
      - name: main
        routes:
          - name: tools
            matches:
              - path: {pathPrefix: /mcp}
                method: POST
              - path: {regex: "^/v[0-9]+/mcp$"}
            policies:
              timeout: {requestTimeout: 1m30s, backendRequestTimeout: 500ms}
            backends:
              - mcp:
                  prefixMode: Always
                  statefulMode: STATELESS
                  failureMode: failopen
                  separator: "__"
                  maxRequestBodySize: 512KiB
                  targets:
                    - name: my_server
                      sse: {host: "http://localhost:8080/sse"}
                      era: Modern
  - port: 3002
    listeners:
      - routes:
          - backends:
              - mcp:
                  targets:
                    - name: local
                      stdio: {cmd: python, cwd: /tmp, env: {DEBUG: 1}}
"""


def problems_of(text: str, source: str = "x.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return info.value.problems


def one_problem(text: str, source: str = "x.yaml") -> str:
    problems = problems_of(text, source)
    assert len(problems) == 1, problems
    return problems[0]


def test_short_shape_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(SHORT)
    config = load_config(path)
    assert config.source == str(path)
    assert config.binds == []
    assert config.config.adminAddr == "127.0.0.1:15000"
    assert config.config.statsAddr == "127.0.0.1:15020"
    assert config.config.logging.level == "info"
    assert config.config.logging.format == "text"
    mcp = config.mcp
    assert isinstance(mcp, McpShort)
    assert (mcp.port, mcp.address, mcp.path) == (3001, "127.0.0.1", "/mcp")
    assert (mcp.prefixMode, mcp.statefulMode, mcp.failureMode) == ("conditional", "stateful", "failClosed")
    assert mcp.separator == "_"
    assert mcp.maxRequestBodySize == 4194304
    assert mcp.policies is None
    stdio, remote = mcp.targets
    assert stdio.kind == "stdio"
    assert stdio.era == "handshake"
    assert stdio.stdio is not None
    assert stdio.stdio.cmd == "npx"
    assert stdio.stdio.args == ["-y", "@modelcontextprotocol/server-everything"]
    assert stdio.stdio.env == {}
    assert stdio.stdio.cwd is None
    assert remote.kind == "mcp"
    assert remote.mcp is not None
    assert remote.mcp.host == "https://example.com/mcp"
    assert remote.mcp.headers == {"Authorization": "Bearer abc"}


def test_parse_config_source_defaults_to_string() -> None:
    assert parse_config(SHORT).source == "<string>"


def test_full_shape_and_case_insensitive_enums() -> None:
    config = parse_config(FULL)
    assert config.mcp is None
    assert config.config.adminAddr == "0.0.0.0:15000"
    assert (config.config.logging.level, config.config.logging.format) == ("debug", "json")
    first, second = config.binds
    assert (first.port, first.address) == (3000, "0.0.0.0")
    listener = first.listeners[0]
    assert (listener.name, listener.hostname, listener.protocol) == ("main", None, "HTTP")
    route = listener.routes[0]
    assert route.name == "tools"
    assert route.matches[0].path is not None
    assert route.matches[0].path.pathPrefix == "/mcp"
    assert route.matches[0].method == "POST"
    assert route.matches[1].path is not None
    assert route.matches[1].path.regex == "^/v[0-9]+/mcp$"
    assert route.policies is not None
    assert route.policies.timeout is not None
    assert route.policies.timeout.requestTimeout == 90.0
    assert route.policies.timeout.backendRequestTimeout == 0.5
    backend = route.backends[0].mcp
    assert backend.prefixMode == "always"
    assert backend.statefulMode == "stateless"
    assert backend.failureMode == "failOpen"
    assert backend.separator == "__"
    assert backend.maxRequestBodySize == 512 * 1024
    target = backend.targets[0]
    assert (target.name, target.kind, target.era) == ("my_server", "sse", "modern")
    assert second.address == "127.0.0.1"
    assert second.listeners[0].routes[0].matches == []
    local = second.listeners[0].routes[0].backends[0].mcp.targets[0]
    assert local.stdio is not None
    assert local.stdio.cwd == "/tmp"
    assert local.stdio.env == {"DEBUG": "1"}


def test_json_input(tmp_path: Path) -> None:
    data = {"mcp": {"port": 4000, "targets": [{"name": "a", "stdio": {"cmd": "x", "args": ["--y"]}}]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data, indent="\t"))
    config = load_config(path)
    assert config.mcp is not None
    assert config.mcp.port == 4000
    assert config.mcp.targets[0].stdio is not None
    assert config.mcp.targets[0].stdio.args == ["--y"]
    # Tab-indented JSON is not valid YAML but is still accepted without a .json suffix.
    assert parse_config(json.dumps(data, indent="\t")).mcp is not None


def test_json_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "mcp": {,}\n}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:2:11: JSON syntax error: Expecting property name enclosed in double quotes"]


def test_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AP_TOKEN", "s3cret")
    monkeypatch.setenv("AP_PORT", "3456")
    monkeypatch.delenv("AP_UNSET", raising=False)
    config = parse_config(
        """
mcp:
  port: ${AP_PORT}
  targets:
    - name: a
      stdio:
        cmd: run
        args: ["--token=${AP_TOKEN}", "${AP_UNSET:-fallback}", "$${AP_TOKEN}", "${AP_UNSET:-}"]
        env: {"${AP_TOKEN}": "${AP_TOKEN}"}
"""
    )
    assert config.mcp is not None
    assert config.mcp.port == 3456
    stdio = config.mcp.targets[0].stdio
    assert stdio is not None
    assert stdio.args == ["--token=s3cret", "fallback", "${AP_TOKEN}", ""]
    assert stdio.env == {"${AP_TOKEN}": "s3cret"}  # keys are not expanded


def test_env_missing_variable_names_key_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKEN", raising=False)
    monkeypatch.delenv("AP_PORT_UNSET", raising=False)
    problems = problems_of(
        """
mcp:
  port: ${AP_PORT_UNSET}
  targets:
    - name: a
      stdio: {cmd: run, env: {TOKEN: "${TOKEN}"}}
"""
    )
    # The port's "expected an integer" follow-on error is suppressed.
    assert problems == [
        "x.yaml: mcp.port: environment variable 'AP_PORT_UNSET' is not set",
        "x.yaml: mcp.targets[0].stdio.env.TOKEN: environment variable 'TOKEN' is not set",
    ]


def test_env_unterminated_reference() -> None:
    assert one_problem("mcp: {targets: [{name: a, stdio: {cmd: '${X'}}]}") == (
        "x.yaml: mcp.targets[0].stdio.cmd: unterminated '${' in '${X' (write '$${' for a literal '${')"
    )


def test_unknown_key_lists_allowed_keys() -> None:
    assert one_problem("mcp: {targets: [{name: a, stdioo: {cmd: x}}]}", "samples/x.yaml") == (
        "samples/x.yaml: mcp.targets[0].stdioo: unknown key (expected one of: name, stdio, mcp, sse, openapi, era, sharing)"
    )
    assert one_problem("mcp: {targets: [{name: a, stdio: {cmd: x}}]}\nlisteners: []") == (
        "x.yaml: listeners: unknown key (expected one of: config, mcp, a2a, llm, frontendPolicies, binds, backends)"
    )


def test_unknown_policy() -> None:
    assert one_problem("mcp: {policies: {retries: 3}, targets: [{name: a, stdio: {cmd: x}}]}") == (
        "x.yaml: mcp.policies.retries: unknown policy (expected one of: timeout, retry, requestMirror, jwtAuth, "
        "mcpAuthentication, apiKey, basicAuth, extAuthz, mcpAuthorization, authorization, localRateLimit, remoteRateLimit, backendAuth, backendTLS, a2a, ai, "
        "requestHeaderModifier, responseHeaderModifier, directResponse, requestRedirect, urlRewrite, cors)"
    )


def test_missing_required_key() -> None:
    assert one_problem("mcp: {targets: [{name: a, stdio: {args: [x]}}]}") == (
        "x.yaml: mcp.targets[0].stdio.cmd: missing required key (expected a string)"
    )
    assert one_problem("binds: [{listeners: [{routes: [{backends: [{mcp: {}}]}]}], port: 80}]") == (
        "x.yaml: binds[0].listeners[0].routes[0].backends[0].mcp.targets: missing required key (expected a list)"
    )


def test_wrong_types() -> None:
    problems = problems_of(
        """
mcp:
  port: abc
  targets:
    - name: a
      stdio: {cmd: x, args: x, env: [a]}
    - name: b
      stdio: nope
"""
    )
    assert problems == [
        "x.yaml: mcp.targets[0].stdio.args: expected a list, got 'x'",
        "x.yaml: mcp.targets[0].stdio.env: expected a mapping, got a list",
        "x.yaml: mcp.targets[1].stdio: expected a mapping, got 'nope'",
        "x.yaml: mcp.port: expected an integer, got 'abc'",
    ]


def test_ports_reject_bools_and_out_of_range() -> None:
    assert one_problem("mcp: {port: true, targets: [{name: a, stdio: {cmd: x}}]}") == (
        "x.yaml: mcp.port: expected an integer, got true"
    )
    assert one_problem("mcp: {port: 70000, targets: [{name: a, stdio: {cmd: x}}]}") == (
        "x.yaml: mcp.port: must be at most 65535 (got 70000)"
    )


def test_bad_enum_value() -> None:
    text = """
binds:
  - port: 3000
    listeners:
      - routes:
          - backends:
              - mcp:
                  targets:
                    - {name: a, stdio: {cmd: x}}
                    - {name: b, stdio: {cmd: y}, prefixMode: always}
"""
    assert one_problem(text) == (
        "x.yaml: binds[0].listeners[0].routes[0].backends[0].mcp.targets[1].prefixMode: "
        "unknown key (expected one of: name, stdio, mcp, sse, openapi, era, sharing)"
    )
    assert one_problem(text.replace("prefixMode: always}", "}\n                  prefixMode: sometimes")) == (
        "x.yaml: binds[0].listeners[0].routes[0].backends[0].mcp.prefixMode: "
        "invalid value 'sometimes' (expected one of: conditional, always, never)"
    )
    assert one_problem("mcp: {failureMode: open, targets: [{name: a, stdio: {cmd: x}}]}") == (
        "x.yaml: mcp.failureMode: invalid value 'open' (expected one of: failClosed, failOpen)"
    )


def test_target_needs_exactly_one_transport() -> None:
    problems = problems_of(
        """
mcp:
  targets:
    - name: none
    - name: two
      stdio: {cmd: x}
      mcp: {host: "http://localhost"}
"""
    )
    assert problems == [
        "x.yaml: mcp.targets[0]: expected exactly one of: stdio, mcp, sse, openapi (found none)",
        "x.yaml: mcp.targets[1]: expected exactly one of: stdio, mcp, sse, openapi (found stdio and mcp)",
    ]


def test_duplicate_target_names() -> None:
    assert one_problem("mcp: {targets: [{name: a, stdio: {cmd: x}}, {name: a, sse: {host: 'http://h'}}]}") == (
        "x.yaml: mcp.targets[1].name: duplicate target name 'a'"
    )


def test_bad_target_name_and_separator() -> None:
    problems = problems_of("mcp: {separator: '', targets: [{name: 'a b', stdio: {cmd: x}}]}")
    assert problems == [
        "x.yaml: mcp.targets[0].name: invalid name 'a b' (expected only letters, digits, '.', '_' and '-')",
        "x.yaml: mcp.separator: must not be empty",
    ]


def test_bad_url() -> None:
    assert one_problem("mcp: {targets: [{name: a, mcp: {host: 'localhost:8080'}}]}") == (
        "x.yaml: mcp.targets[0].mcp.host: invalid URL 'localhost:8080' (expected an http:// or https:// URL)"
    )


def test_path_matches() -> None:
    route = "binds: [{port: 80, listeners: [{routes: [{matches: [%s], backends: [{mcp: {targets: [%s]}}]}]}]}]"
    target = "{name: a, stdio: {cmd: x}}"
    prefix = "x.yaml: binds[0].listeners[0].routes[0].matches[0].path"
    assert one_problem(route % ("{path: {regex: '(unclosed'}}", target)) == (
        f"{prefix}.regex: invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0"
    )
    assert one_problem(route % ("{path: {exact: /a, pathPrefix: /b}}", target)) == (
        f"{prefix}: expected exactly one of: exact, pathPrefix, regex"
    )
    assert one_problem(route % ("{path: {pathPrefix: mcp}}", target)) == (
        f"{prefix}.pathPrefix: invalid path 'mcp' (must start with '/')"
    )


def test_bad_duration() -> None:
    text = "mcp: {policies: {timeout: {requestTimeout: %s}}, targets: [{name: a, stdio: {cmd: x}}]}"
    assert one_problem(text % "soon") == (
        "x.yaml: mcp.policies.timeout.requestTimeout: invalid duration 'soon' "
        "(expected a duration like '10s' or '500ms')"
    )
    assert one_problem(text % "-5s") == (
        "x.yaml: mcp.policies.timeout.requestTimeout: negative duration '-5s' "
        "(expected a duration like '10s' or '500ms')"
    )
    assert parse_config(text % 2.5).mcp.policies.timeout.requestTimeout == 2.5  # type: ignore[union-attr]


def test_retry_and_request_mirror_values() -> None:
    text = "binds: [{port: 80, listeners: [{routes: [{policies: %s, backends: [{host: '127.0.0.1:1'}]}]}]}]"
    at = "x.yaml: binds[0].listeners[0].routes[0].policies"
    assert one_problem(text % "{retry: {attempts: 3}}") == f"{at}.retry.codes: missing required key (expected a list)"
    assert one_problem(text % "{retry: {attempts: 256, codes: [503]}}") == (
        f"{at}.retry.attempts: must be at most 255 (got 256)"
    )
    assert one_problem(text % "{retry: {codes: [42]}}") == f"{at}.retry.codes[0]: must be at least 100 (got 42)"
    assert one_problem(text % "{requestMirror: {backend: '127.0.0.1:2', percentage: 50}}") == (
        f"{at}.requestMirror.percentage: expected a fraction from 0 to 1 "
        "(0.5 mirrors half the requests, as in agentgateway), got 50"
    )
    route = parse_config(text % "{retry: {codes: [503]}, requestMirror: {backend: '127.0.0.1:2'}}").binds[0]
    policies = route.listeners[0].routes[0].policies
    assert policies is not None and policies.retry is not None and policies.requestMirror is not None
    assert (policies.retry.attempts, policies.retry.backoff) == (1, 0.0)
    assert (policies.requestMirror.backend.host, policies.requestMirror.percentage) == ("http://127.0.0.1:2", 1.0)


def test_parse_duration() -> None:
    assert parse_duration(10) == 10.0
    assert parse_duration(1.5) == 1.5
    assert parse_duration("500ms") == 0.5
    assert parse_duration("10s") == 10.0
    assert parse_duration("1m") == 60.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("30") == 30.0
    for bad in ("", "abc", "10x", "s", "1m 30s", True, None):
        with pytest.raises(ValueError, match="expected a duration like '10s' or '500ms'"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="negative duration -1"):
        parse_duration(-1)


def test_byte_sizes() -> None:
    assert parse_byte_size("4MiB") == 4 * 1024 * 1024
    assert parse_byte_size("512KiB") == 512 * 1024
    assert parse_byte_size("1MB") == 1_000_000
    assert parse_byte_size("100kb") == 100_000
    assert parse_byte_size("2048") == 2048
    assert parse_byte_size(77) == 77
    text = "mcp: {maxRequestBodySize: %s, targets: [{name: a, stdio: {cmd: x}}]}"
    assert one_problem(text % "lots") == (
        "x.yaml: mcp.maxRequestBodySize: invalid size 'lots' "
        "(expected a size like '4MiB', '512KiB' or a number of bytes)"
    )
    assert one_problem(text % "0") == "x.yaml: mcp.maxRequestBodySize: must be greater than 0 (got 0)"


def test_duplicate_ports() -> None:
    bind = "{port: %d, listeners: [{routes: [{backends: [{mcp: {targets: [{name: a, stdio: {cmd: x}}]}}]}]}]}"
    assert one_problem(f"binds: [{bind % 80}, {bind % 80}]") == (
        "x.yaml: binds[1].port: port 80 is already used by binds[0].port"
    )
    short = "mcp: {targets: [{name: a, stdio: {cmd: x}}]}"
    assert one_problem(f"{short}\nbinds: [{bind % 3000}]") == (
        "x.yaml: binds[0].port: port 3000 is already used by mcp.port"
    )
    config = parse_config(f"{short}\nbinds: [{bind % 3001}]")
    assert [bind.port for bind in config.binds] == [3001]


def test_needs_mcp_or_binds() -> None:
    assert one_problem("config: {adminAddr: '127.0.0.1:1'}") == "x.yaml: expected a 'mcp:' block, an 'a2a:' block, an 'llm:' block or a 'binds:' list"
    assert one_problem("binds: []") == "x.yaml: expected a 'mcp:' block, an 'a2a:' block, an 'llm:' block or a 'binds:' list"


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("mcp:\n  port: 3000\n  targets: [\n    name: a\n  bad: : x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:5:")
    assert "YAML syntax error: " in problem


def test_yaml_syntax_error_exact_position() -> None:
    assert one_problem("mcp:\n  port: 3000\n bad: x\n") == (
        "x.yaml:3:2: YAML syntax error: expected <block end>, but found '<block mapping start>'"
    )


def test_duplicate_yaml_key() -> None:
    assert one_problem("mcp:\n  port: 1\n  port: 2\n") == "x.yaml:3:3: duplicate key 'port'"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: cannot read config: No such file or directory"]
    assert str(info.value) == f"{path}: cannot read config: No such file or directory"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: config is empty (expected a 'mcp:' block, an 'a2a:' block, an 'llm:' block or a 'binds:' list)"]


def test_top_level_not_a_mapping() -> None:
    assert one_problem("- a\n- b\n") == (
        "x.yaml: expected a mapping at the top level (expected a 'mcp:' block, an 'a2a:' block, an 'llm:' block or a 'binds:' list), got a list"
    )


def test_several_problems_at_once() -> None:
    err_text = """
config:
  logging: {level: loud}
mcp:
  port: -1
  statefulMode: sometimes
  targets:
    - name: a
      stdio: {cmd: ""}
    - name: b
      sse: {host: "ws://x"}
      era: future
"""
    with pytest.raises(ConfigError) as info:
        parse_config(err_text, "many.yaml")
    expected = [
        "many.yaml: config.logging.level: invalid value 'loud' (expected one of: debug, info, warning, error)",
        "many.yaml: mcp.targets[0].stdio.cmd: must not be empty",
        "many.yaml: mcp.targets[1].sse.host: invalid URL 'ws://x' (expected an http:// or https:// URL)",
        "many.yaml: mcp.targets[1].era: invalid value 'future' (expected one of: handshake, modern, auto)",
        "many.yaml: mcp.statefulMode: invalid value 'sometimes' (expected one of: stateful, stateless)",
        "many.yaml: mcp.port: must be at least 0 (got -1)",
    ]
    assert info.value.problems == expected
    assert str(info.value) == "\n".join(expected)


def test_models_forbid_extra_keys() -> None:
    from gateway.config import models

    classes = [obj for obj in vars(models).values() if isinstance(obj, type) and issubclass(obj, models._Model)]
    assert Config in classes
    assert all(cls.model_config.get("extra") == "forbid" for cls in classes)


def test_cel_syntax_error_is_a_config_error_at_the_rule() -> None:
    problem = one_problem(
        "mcp:\n  policies:\n    mcpAuthorization:\n      rules:\n      - 'mcp.tool.name == \"a\"'\n"
        "      - deny: 'mcp.tool.name =='\n  targets: [{name: a, stdio: {cmd: x}}]"
    )
    assert problem.startswith("x.yaml: mcp.policies.mcpAuthorization.rules[1].deny: invalid CEL expression")
    assert "Syntax error" in problem


def test_policy_shapes_are_checked() -> None:
    base = "mcp: {targets: [{name: a, stdio: {cmd: x}}], policies: {%s}}"
    assert "exactly one of: url, file, inline" in one_problem(base % "jwtAuth: {jwks: {}}")
    assert "'none' is never allowed" in one_problem(base % "jwtAuth: {jwks: {file: k.json}, algorithms: [none]}")
    assert "localRateLimit[0].fillInterval" in one_problem(base % "localRateLimit: [{maxTokens: 1}]")
    assert "localRateLimit[0].key: invalid CEL" in one_problem(
        base % "localRateLimit: [{maxTokens: 1, fillInterval: 1s, key: 'jwt.'}]"
    )
    assert "exactly one of: passthrough, key, gcp, aws, oauth2, tokenExchange" in one_problem(base % "backendAuth: {}")


def test_mcp_authentication_reference_forms() -> None:
    """agentgateway's LocalMcpAuthentication shapes: provider as `{name: {}}` (or just its name), jwks optional
    (an empty url too), authorizationLocation as one tagged place, jwtValidationOptions defaulting to exp."""
    base = "mcp: {targets: [{name: a, stdio: {cmd: x}}], policies: {mcpAuthentication: {issuer: 'http://idp', %s}}}"

    def authn(extra: str) -> Any:
        return parse_config(base % extra, "c.yaml").mcp.policies.mcpAuthentication  # type: ignore[union-attr]

    policy = authn("provider: {keycloak: {}}")
    assert (policy.provider, policy.jwks, policy.mode) == ("keycloak", None, "strict")
    location = policy.authorizationLocation.token_location()
    assert (location.header, location.prefix) == ("authorization", "Bearer ")
    assert policy.jwtValidationOptions.requiredClaims == ["exp"]
    assert authn("provider: entra").provider == "entra"
    assert authn("jwks: {url: ''}").jwks is None
    location = authn("authorizationLocation: {queryParameter: {name: token}}").authorizationLocation.token_location()
    assert (location.header, location.queryParameter) == (None, "token")
    location = authn("authorizationLocation: {header: {name: x-token}}").authorizationLocation.token_location()
    assert (location.header, location.prefix) == ("x-token", "")
    assert "provider: unknown provider 'github'" in one_problem(base % "provider: {github: {}}")
    assert "provider keycloak takes no options" in one_problem(base % "provider: {keycloak: {realm: mcp}}")
    problem = one_problem(base % "authorizationLocation: {}")
    assert "authorizationLocation: expected exactly one of: header, queryParameter, cookie" in problem
    assert "jwtValidationOptions.requiredClaims" in one_problem(base % "jwtValidationOptions: {requiredClaims: sub}")


BACKEND_AUTH = "mcp: {targets: [{name: a, stdio: {cmd: x}}], policies: {backendAuth: %s}}"


def backend_auth(text: str) -> BackendAuth:
    policies = parse_config(BACKEND_AUTH % text).mcp.policies  # type: ignore[union-attr]
    assert policies is not None and policies.backendAuth is not None
    return policies.backendAuth


def test_backend_auth_takes_the_references_shapes(tmp_path: Path) -> None:
    key = backend_auth("{key: {value: k, location: {queryParameter: {name: api_key}}}}").key
    assert key is not None and key.location is not None and key.location.queryParameter is not None
    assert key.location.queryParameter.name == "api_key"
    (tmp_path / "key.txt").write_text("from-a-file\n")
    key = backend_auth(
        f"{{key: {{value: {{file: '{tmp_path / 'key.txt'}'}}, location: {{header: {{name: x-key}}}}}}}}"
    ).key
    assert key is not None and key.value == "from-a-file"
    assert key.location is not None and key.location.header is not None and key.location.header.prefix is None
    assert backend_auth("{key: plain}").key.value == "plain"  # type: ignore[union-attr]
    passthrough = backend_auth("{passthrough: {location: {cookie: {name: session}}}}").passthrough
    assert passthrough is not None and passthrough.location is not None and passthrough.location.cookie is not None
    assert backend_auth("{passthrough: {}}").passthrough is not None
    gcp = backend_auth("{gcp: {type: idToken, audience: 'https://api.example.com'}}").gcp
    assert gcp is not None and gcp.type == "idToken" and gcp.audience == "https://api.example.com"
    assert backend_auth("{gcp: {}}").gcp.type == "accessToken"  # type: ignore[union-attr]
    (tmp_path / "sa.json").write_text('{"type": "service_account"}')
    gcp = backend_auth(f"{{gcp: {{type: idToken, credential: {{file: '{tmp_path / 'sa.json'}'}}}}}}").gcp
    assert gcp is not None and gcp.credential_info == {"type": "service_account"}
    aws = backend_auth(
        "{aws: {accessKeyId: AKID, secretAccessKey: s, sessionToken: t, region: eu-west-1, serviceName: execute-api}}"
    ).aws
    assert aws is not None and (aws.region, aws.serviceName) == ("eu-west-1", "execute-api")
    assert backend_auth("{aws: {}}").aws is not None  # the default credential chain


def test_backend_auth_shapes_are_checked() -> None:
    at = "x.yaml: mcp.policies.backendAuth"
    assert one_problem(BACKEND_AUTH % "{key: {value: k, location: {}}}") == (
        f"{at}.key.location: expected exactly one of: header, queryParameter, cookie"
    )
    assert one_problem(BACKEND_AUTH % "{key: {value: k, header: x-a, location: {cookie: {name: c}}}}") == (
        f"{at}.key: location and header/prefix say the same thing: use one of them"
    )
    assert one_problem(BACKEND_AUTH % "{key: {value: {file: /no/such/key}}}").startswith(
        f"{at}.key.value: cannot read '/no/such/key'"
    )
    assert one_problem(BACKEND_AUTH % "{key: {value: k, location: {header: {name: 'bad header'}}}}") == (
        f"{at}.key.location.header.name: invalid header name 'bad header'"
    )
    assert f"{at}.passthrough.mode: unknown key" in one_problem(BACKEND_AUTH % "{passthrough: {mode: x}}")
    assert one_problem(BACKEND_AUTH % "{gcp: {audience: x}}") == (
        f"{at}.gcp.audience: only an idToken has an audience (set type: idToken)"
    )
    assert "expected one of: idToken, accessToken" in one_problem(BACKEND_AUTH % "{gcp: {type: jwt}}")
    assert one_problem(BACKEND_AUTH % "{gcp: {credential: '{}'}}") == (
        f"{at}.gcp.credential: expected Google credential JSON with a type (service_account, ...)"
    )
    assert one_problem(BACKEND_AUTH % "{gcp: {credential: 'not json'}}") == (
        f"{at}.gcp.credential: expected Google credential JSON (a JSON object)"
    )
    assert one_problem(BACKEND_AUTH % """{gcp: {type: idToken, credential: '{"type": "external_account"}'}}""") == (
        f"{at}.gcp.credential: external_account credentials give no ID token "
        "(expected one of: service_account, impersonated_service_account, authorized_user)"
    )
    assert one_problem(BACKEND_AUTH % "{aws: {accessKeyId: AKID}}") == (
        f"{at}.aws.secretAccessKey: accessKeyId and secretAccessKey go together"
    )
    assert one_problem(BACKEND_AUTH % "{aws: {sessionToken: t}}") == (
        f"{at}.aws.sessionToken: goes with accessKeyId and secretAccessKey"
    )


@pytest.mark.parametrize(
    ("text", "path", "what"),
    [
        ("{azure: {implicit: {}}}", "azure", "Azure credentials (azure) is not supported by agentplex"),
        ("copilot", "copilot", "GitHub Copilot credentials (copilot) is not supported by agentplex"),
        ("{jwtSign: {signingKey: k, claims: {iss: gw}}}", "jwtSign", "signing a JWT per request (jwtSign) is not"),
        (
            "{aws: {assumeRole: {roleArn: 'arn:aws:iam::1:role/r'}}}",
            "aws.assumeRole",
            "assuming an IAM role is not supported",
        ),
    ],
)
def test_backend_auth_the_reference_has_but_agentplex_does_not_is_refused(text: str, path: str, what: str) -> None:
    problem = one_problem(BACKEND_AUTH % text)
    assert problem.startswith(f"x.yaml: mcp.policies.backendAuth.{path}: {what}"), problem


@pytest.mark.parametrize(("kind", "module", "extra"), [("gcp", "google.auth", "gcp"), ("aws", "botocore", "aws")])
def test_backend_auth_without_its_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, kind: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    problem = one_problem(BACKEND_AUTH % f"{{{kind}: {{}}}}")
    assert problem.startswith(f"x.yaml: mcp.policies.backendAuth.{kind}: needs the "), problem
    assert f"pip install 'agentplex[{extra}]'" in problem


def test_cel_functions_agentplex_does_not_have_are_refused() -> None:
    """A rule calling an unknown function could never be evaluated, and a rule that cannot be evaluated does
    not match: a deny that never denies. Refused at load, naming the function."""
    problem = one_problem(
        "mcp: {targets: [{name: a, stdio: {cmd: x}}], policies: {mcpAuthorization: {rules: "
        "[{deny: 'default(jwt.role, \"guest\") == \"guest\"'}]}}}"
    )
    assert "mcp.policies.mcpAuthorization.rules[0].deny: invalid CEL expression" in problem, problem
    assert "has no function default" in problem
    ok = "mcp: {targets: [{name: a, stdio: {cmd: x}}], policies: {mcpAuthorization: {rules: ['%s']}}}"
    for rule in (
        'jwt.sub.startsWith("a") && size(jwt.groups) > 0',
        'cidr("10.0.0.0/8").containsIP(source.address)',
        'timestamp("2020-01-01T00:00:00Z").getFullYear() == 2020 && [1].exists(x, x > 0)',
    ):
        parse_config(ok % rule.replace("'", "\\'"), "x.yaml")


def test_the_cel_function_lists_match_what_is_evaluated() -> None:
    """Every function the config accepts is one the evaluator has (an upgrade of `cel` that drops one fails here)."""
    import cel

    from gateway.config.policies import CEL_NET, CEL_STANDARD
    from gateway.policies import cel_net

    assert set(cel_net.FUNCTIONS) == CEL_NET
    stamp = 'timestamp("2020-01-01T00:00:00Z")'
    probes = {
        "size": "size([1])", "contains": '"ab".contains("a")', "startsWith": '"ab".startsWith("a")',
        "endsWith": '"ab".endsWith("b")', "matches": '"ab".matches("a.")', "int": 'int("1")', "uint": "uint(1)",
        "double": "double(1)", "string": "string(1)", "bytes": 'bytes("a")', "timestamp": stamp,
        "duration": 'duration("1s")', "type": "type(1)", "dyn": "dyn(1)",
    }
    for getter in sorted(name for name in CEL_STANDARD if name.startswith("get")):
        probes[getter] = f"{stamp}.{getter}()"
    assert set(probes) == CEL_STANDARD
    for source in probes.values():
        cel.compile(source).execute({})  # raises if the evaluator lacks it
