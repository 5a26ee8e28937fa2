"""The deployment files (Dockerfile, deploy/kubernetes, deploy/compose) agree with the code.

Nothing here builds an image or talks to a cluster: the files are parsed, the config they ship is
validated by agentplex's own loader and CLI, and that config is run (on free ports) to show the probe
paths the manifests use are answered, without the admin token, as the kubelet and HAProxy ask them.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER

from gateway import cli
from gateway.admin.api import PROBES
from gateway.config import Config, parse_config, parse_duration
from gateway.config.env import expand_env
from gateway.config.models import GlobalSettings, is_loopback, split_addr
from gateway.runtime import Runtime
from gateway.session_key import ENV_KEY as SESSION_KEY_ENV
from tests.conftest import started
from tests.redis_server import redis_server

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
HAPROXY = COMPOSE_DIR / "haproxy.cfg"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- reading the files --------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def kustomization() -> dict[str, Any]:
    return _load(K8S / "kustomization.yaml")


def manifests() -> list[dict[str, Any]]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return docs


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/kubernetes, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return manifest("Deployment", "agentplex")


def container() -> dict[str, Any]:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    return only


def container_ports() -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container()["ports"]}


def config_map_files() -> dict[str, Path]:
    """The ConfigMap generated from files: key -> file (a `key=path` entry, or the file's own name)."""
    (generator,) = kustomization()["configMapGenerator"]
    volumes = deployment()["spec"]["template"]["spec"]["volumes"]
    assert generator["name"] in [v.get("configMap", {}).get("name") for v in volumes], "the Deployment mounts it"
    files = {}
    for entry in generator["files"]:
        key, _, path = entry.rpartition("=")
        files[key or Path(path).name] = K8S / path
    return files


def config_path_in_container() -> tuple[str, Path]:
    """Where the Deployment mounts the config file, and the file in this repository."""
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    for mount in container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert "subPath" not in mount, "a subPath mount would not follow ConfigMap updates"
            ((key, path),) = config_map_files().items()
            return f"{mount['mountPath'].rstrip('/')}/{key}", path
    raise AssertionError("the Deployment mounts no ConfigMap")


def compose() -> dict[str, Any]:
    return _load(COMPOSE)


def compose_service() -> dict[str, Any]:
    return compose()["services"]["agentplex"]


def compose_config_mount() -> tuple[str, Path]:
    for volume in compose_service()["volumes"]:
        source, target, *_ = volume.split(":")
        if target.startswith("/etc/agentplex"):
            return target, (COMPOSE_DIR / source).resolve()
    raise AssertionError("compose.yaml mounts no config into the agentplex service")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: the image that ships."""
    steps = dockerfile()
    last = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    return steps[last:]


def haproxy() -> str:
    return HAPROXY.read_text()


def env_of_manifests() -> dict[str, str]:
    """The Deployment's environment, with the Secret's values put in for secretKeyRefs."""
    env = {}
    for item in container()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = manifest("Secret", ref["name"])["stringData"][ref["key"]]
    return env


def referenced_env(path: Path) -> dict[str, bool]:
    """The variables a config file's `${...}` references name (read with the loader's own expansion),
    each with whether the reference gives a default."""
    seen: dict[str, bool] = {}

    class Recorder(dict[str, str]):
        def get(self, name: str, default: Any = None) -> Any:
            seen.setdefault(name, False)
            return default

    text = path.read_text()
    expand_env(yaml.safe_load(text), Recorder())
    for name in seen:
        seen[name] = re.search(r"\$\{" + re.escape(name) + r":-", text) is not None
    return seen


@pytest.fixture
def manifest_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The process environment as the container has it: the variables the config reads are exactly those
    the manifests set (AGENTPLEX_PYTHON included: the CLI sets that one itself). Restored afterwards."""
    env = env_of_manifests()
    for name in {*referenced_env(config_path_in_container()[1]), "AGENTPLEX_PYTHON"}:
        monkeypatch.setenv(name, "")  # remembers how it was, so the teardown puts it back
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


def shipped_config() -> Config:
    """The ConfigMap's config, as the container's environment expands it (call under `manifest_env`), with
    AGENTPLEX_PYTHON set as `cli.main` sets it."""
    _, path = config_path_in_container()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENTPLEX_PYTHON", sys.executable)
        return parse_config(path.read_text(), str(path))


def listen_ports(config: Config) -> dict[str, int]:
    settings = config.config
    ports = {}
    for name, block in (("mcp", config.mcp), ("a2a", config.a2a)):
        if block is not None:
            ports[name] = block.port
    for index, bind in enumerate(config.binds):
        ports[f"binds[{index}]"] = bind.port
    if settings.adminAddr is not None:
        ports["admin"] = int(split_addr(settings.adminAddr)[1])
    if settings.statsAddr is not None:
        ports["stats"] = int(split_addr(settings.statsAddr)[1])
    return ports


# -- the kustomization --------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    generated = {path.name for path in config_map_files().values()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} - generated
    assert listed == on_disk
    kinds = {(d["kind"], d["metadata"]["name"]) for d in manifests()}
    assert {("Deployment", "agentplex"), ("Service", "agentplex"), ("Secret", "agentplex")} <= kinds
    assert {("Deployment", "redis"), ("Service", "redis")} <= kinds
    assert all("namespace" not in d["metadata"] for d in manifests()), "the namespace is the user's choice"


# -- the config they ship -----------------------------------------------------------------------


def test_the_compose_file_runs_the_configmaps_config_at_the_same_path() -> None:
    assert compose_config_mount() == config_path_in_container()


def test_the_config_validates_with_exactly_the_manifests_environment(
    manifest_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = config_path_in_container()
    assert cli.main(["validate", "-f", str(path)]) == 0, capsys.readouterr().err  # as `agentplex validate` does
    assert ": ok (" in capsys.readouterr().out


def test_env_names_in_the_manifests_are_read_by_the_config() -> None:
    _, path = config_path_in_container()
    referenced = referenced_env(path)
    deployment_env = set(env_of_manifests())
    read_by_code = {SESSION_KEY_ENV}  # gateway/session_key.py reads it itself (it wins over config.session.key)
    assert deployment_env <= set(referenced) | read_by_code, "every variable the manifests set is read"
    required = {name for name, has_default in referenced.items() if not has_default}
    assert required - deployment_env == {"AGENTPLEX_PYTHON"}, "the CLI sets AGENTPLEX_PYTHON itself"
    assert set(compose_service()["environment"]) == deployment_env
    for item in container()["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["key"] in manifest("Secret", ref["name"])["stringData"]


def test_the_config_listens_where_the_probes_and_the_load_balancer_reach_it(manifest_env: dict[str, str]) -> None:
    config = shipped_config()
    settings = config.config
    addresses = [block.address for block in (config.mcp, config.a2a) if block is not None]
    addresses += [split_addr(settings.adminAddr or "")[0], split_addr(settings.statsAddr or "")[0]]
    assert not any(is_loopback(address) for address in addresses), addresses
    assert settings.adminToken == manifest_env["AGENTPLEX_ADMIN_TOKEN"], "off loopback the admin API has a token"
    # Nothing written at run time (read-only root filesystem): the registry is in Redis, not a SQLite file.
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert config.a2a is not None and config.a2a.registry.redis is not None
    # The state replicas share goes to the Redis of the manifests and the compose file.
    redis_url = manifest_env["AGENTPLEX_REDIS_URL"]
    assert config.a2a.registry.redis.url == redis_url
    assert config.mcp is not None and config.mcp.policies is not None
    assert config.mcp.policies.remoteRateLimit is not None
    assert config.mcp.policies.remoteRateLimit.redis.url == redis_url
    # which replica holds each session: every replica reaches the others at the address it reaches Redis from
    assert settings.cluster is not None and settings.cluster.redis.url == redis_url
    assert settings.cluster.advertise is None
    host, port = urlsplit(redis_url).hostname, urlsplit(redis_url).port
    redis_service = manifest("Service", "redis")
    assert host == redis_service["metadata"]["name"] and port == redis_service["spec"]["ports"][0]["port"]
    assert "redis" in compose()["services"] and compose_service()["environment"]["AGENTPLEX_REDIS_URL"] == redis_url


# -- ports --------------------------------------------------------------------------------------


def test_container_ports_are_the_ports_the_config_listens_on(manifest_env: dict[str, str]) -> None:
    ports = listen_ports(shipped_config())
    default_admin_port = int(split_addr(GlobalSettings().adminAddr or "")[1])
    assert ports["admin"] == default_admin_port, "the admin API stays on the port the code uses by default"
    named = container_ports()
    assert named["http"] == ports["mcp"] == ports["a2a"]
    assert named["admin"] == ports["admin"]
    assert named["metrics"] == ports["stats"]
    assert set(named.values()) == set(ports.values())
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["stats"]

    service = manifest("Service", "agentplex")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # the admin API is not in the Service
    assert service["spec"]["ports"][0]["port"] == ports["mcp"]

    exposed = {int(p) for args in instructions("EXPOSE") for p in args.split()}
    assert exposed == set(ports.values())
    assert {int(p) for p in compose_service()["expose"]} == set(ports.values())


def test_the_load_balancer_sends_to_the_mcp_port_and_checks_the_admin_port(manifest_env: dict[str, str]) -> None:
    ports = listen_ports(shipped_config())
    text = haproxy()
    templates = re.findall(r"^\s*server-template\s+\S+\s+(\d+)\s+(\S+):(\d+)", text, re.M)
    assert templates, "haproxy.cfg has server-template lines"
    replicas = compose_service()["deploy"]["replicas"]
    for count, host, port in templates:
        assert host == "agentplex" and int(port) == ports["mcp"] and int(count) >= replicas
    assert {int(p) for p in re.findall(r"\bcheck port (\d+)", text)} == {ports["admin"]}
    assert set(re.findall(r"http-check send meth GET uri (\S+)", text)) <= PROBES
    (bind,) = re.findall(r"^\s*bind\s+\S*:(\d+)", text, re.M)
    assert [p.rsplit(":", 1)[-1] for p in compose()["services"]["lb"]["ports"]] == [bind]


# -- probes -------------------------------------------------------------------------------------


def probes_in_manifests() -> dict[str, str]:
    """probe -> path, every probe of the Deployment (each must be on the admin port)."""
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container()[probe]["httpGet"]
        assert get["port"] in ("admin", container_ports()["admin"]), probe
        paths[probe] = get["path"]
    return paths


def healthcheck_url(command: list[str]) -> str:
    (url,) = re.findall(r"https?://[^'\"\s)]+", " ".join(command))
    return url


def test_probe_paths_are_the_admin_apis_probes(manifest_env: dict[str, str]) -> None:
    admin_port = listen_ports(shipped_config())["admin"]
    probes = probes_in_manifests()
    assert probes["livenessProbe"] == "/healthz" and probes["readinessProbe"] == "/readyz"
    assert set(probes.values()) <= PROBES

    (healthcheck,) = instructions("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    url = urlsplit(healthcheck_url(command))
    assert command[0] == "python" and url.path in PROBES and url.port == admin_port and is_loopback(url.hostname)

    url = urlsplit(healthcheck_url(compose_service()["healthcheck"]["test"]))
    assert url.path in PROBES and url.port == admin_port


@pytest.mark.anyio
async def test_the_shipped_config_answers_the_probes_without_the_token(manifest_env: dict[str, str]) -> None:
    """Run the ConfigMap's config (free ports on 127.0.0.1, Redis on a local server) and ask every probe path
    the deployment files use as the kubelet does: Host is the pod's address, no Authorization header."""
    paths = set(probes_in_manifests().values()) | set(re.findall(r"uri (/\S+)", haproxy()))
    paths.add(urlsplit(healthcheck_url(compose_service()["healthcheck"]["test"])).path)
    with redis_server() as redis:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AGENTPLEX_REDIS_URL", redis.url)
            config = shipped_config()
        for block in (config.mcp, config.a2a):
            assert block is not None
            block.address, block.port = "127.0.0.1", 0
        config.config.adminAddr, config.config.statsAddr = "127.0.0.1:0", "127.0.0.1:0"
        async with started(Runtime(config)) as runtime:
            assert runtime.admin_port is not None
            base = f"http://127.0.0.1:{runtime.admin_port}"
            headers = {"host": f"10.1.2.3:{container_ports()['admin']}"}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
                for path in sorted(paths):
                    answer = await client.get(path)
                    assert answer.status_code == 200, (path, answer.text)
                assert (await client.get("/readyz")).json()["ready"] is True
                assert (await client.get("/config")).status_code == 401, "everything else needs the token"


# -- termination --------------------------------------------------------------------------------


def longest_drain(config: Config) -> float:
    """The longest a SIGTERM can take (gateway/runtime.py `_shutdown`): still accepting for the minimum,
    requests in flight for the deadline, then the sockets for the deadline and a second more."""
    settings = config.config
    return settings.connectionMinTerminationDeadline + 2 * settings.connectionTerminationDeadline + 1


def test_the_grace_period_covers_the_drain(manifest_env: dict[str, str]) -> None:
    config = shipped_config()
    assert config.config.connectionMinTerminationDeadline > 0, "time for the endpoint to leave the Service"
    grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > longest_drain(config)
    assert parse_duration(compose_service()["stop_grace_period"]) > longest_drain(config)


# -- the image ----------------------------------------------------------------------------------


def test_the_image_runs_the_console_script_on_the_mounted_config() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {"agentplex": "gateway.cli:main"}
    (entrypoint,) = instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == list(scripts)
    (cmd,) = instructions("CMD")
    args = cli._parser().parse_args(json.loads(cmd))
    assert args.command == "run"
    assert args.file == config_path_in_container()[0] == compose_config_mount()[0]
    assert "command" not in container() and "args" not in container(), "the pods run the image's CMD"
    assert "command" not in compose_service()


def test_the_image_is_built_from_the_package_and_runs_as_the_manifests_user() -> None:
    stage = runtime_stage()
    (user,) = [args for instruction, args in stage if instruction == "USER"]
    uid, _, gid = user.partition(":")
    context = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True and int(uid) != 0
    assert (int(uid), int(gid)) == (context["runAsUser"], context["runAsGroup"])
    # The Python of the image is one pyproject.toml allows.
    (default,) = [args.split("=", 1)[1] for args in instructions("ARG") if args.startswith("PYTHON_VERSION=")]
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, default.split("."))) >= tuple(map(int, minimum.split(".")))
    assert all(args.startswith("python:${PYTHON_VERSION}-slim") for args in instructions("FROM"))
    # Every package the distribution includes, and the README its metadata reads, is copied in.
    copied = {word for args in instructions("COPY") if not args.startswith("--from") for word in args.split()[:-1]}
    packages = {name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & (packages | {"pyproject.toml", "README.md"})


# -- replicas and sessions ----------------------------------------------------------------------


def test_the_session_key_comes_from_the_secret_under_the_name_the_code_reads() -> None:
    (item,) = [item for item in container()["env"] if item["name"] == SESSION_KEY_ENV]
    ref = item["valueFrom"]["secretKeyRef"]
    assert ref["key"] == SESSION_KEY_ENV and ref["name"] == "agentplex"
    assert manifest("Secret", ref["name"])["stringData"][SESSION_KEY_ENV] == "", "no shared placeholder key"
    assert compose_service()["environment"][SESSION_KEY_ENV] == "${SESSION_KEY:-}"


def test_three_replicas_with_sticky_handshake_era_sessions() -> None:
    assert deployment()["spec"]["replicas"] == 3
    assert compose_service()["deploy"]["replicas"] == 3
    # Without a session key a handshake-era session must come back to the replica that holds it (with one,
    # coming back saves a resume and keeps stdio processes where they are).
    assert manifest("Service", "agentplex")["spec"]["sessionAffinity"] == "ClientIP"
    text = haproxy()
    assert f"stick store-response res.hdr({MCP_SESSION_ID_HEADER})" in text
    assert f"stick match req.hdr({MCP_SESSION_ID_HEADER})" in text
