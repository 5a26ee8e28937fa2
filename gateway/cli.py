"""The `agentplex` command: run a config, validate one, or (with no arguments) the quick-start demo."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from federation.catalog import Kind
from federation.server import Federation
from gateway.app import Gateway
from gateway.config import Config, ConfigError, load_config
from gateway.config.errors import validation_problems
from gateway.config.models import GlobalSettings, HttpTarget, McpShort, StdioTarget, Target
from gateway.runtime import Runtime
from protocols.mcp.stdio import serve_stdio

logger = logging.getLogger("agentplex")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
QUICKSTART = SAMPLES / "quickstart.yaml"
NOTES_PORT = 9001


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    os.environ.setdefault("AGENTPLEX_PYTHON", sys.executable)  # lets configs spawn servers with our interpreter
    args = _parser().parse_args(argv)
    command = args.command or ("run" if args.file else "quickstart")
    try:
        if command == "validate":
            return _validate(args.file, catalog=args.catalog)
        if command == "quickstart":
            return _quickstart(args)
        if command == "stdio":
            return _stdio(load_config(args.file), args.route, args.log_level)
        if command == "wrap":
            return _run_config(_wrap_config(args), args.log_level, "wrap")
        if command == "connect":
            return _stdio(_connect_config(args), None, args.log_level)
        return _run_file(args.file or str(QUICKSTART), args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# uvloop where it is installed (not on Windows): libuv's event loop, in C, instead of asyncio's in Python
_LOOP = {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}


def _run(func: Callable[..., Any], *args: Any) -> Any:
    """`anyio.run` on the event loop the gateway serves on."""
    return anyio.run(func, *args, backend="asyncio", backend_options=_LOOP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentplex",
        description="MCP/A2A gateway. With no arguments, runs the quick-start demo on http://127.0.0.1:3000/mcp.",
    )
    parser.add_argument("-f", "--file", help="config file (same as `agentplex run -f FILE`)")
    _serve_flags(parser)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the gateway on a config file")
    run.add_argument("-f", "--file", required=True, help="config file (YAML or JSON)")
    _serve_flags(run)
    validate = sub.add_parser("validate", help="check a config file and exit non-zero on problems")
    validate.add_argument("-f", "--file", required=True, help="config file (YAML or JSON)")
    validate.add_argument(
        "--catalog",
        action="store_true",
        help="also start the targets and print the tools, prompts and resources each MCP route would serve"
        " (exit 1 if a target cannot be listed)",
    )
    stdio = sub.add_parser("stdio", help="serve a config's MCP route over stdin/stdout (for desktop clients)")
    stdio.add_argument("-f", "--file", required=True, help="config file (YAML or JSON)")
    stdio.add_argument("--route", help="which MCP route, when the config has several")
    stdio.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    wrap = sub.add_parser("wrap", help="serve one stdio MCP server over streamable HTTP and SSE: wrap -- CMD ARGS")
    wrap.add_argument("--port", type=int, default=3000)
    wrap.add_argument("--host", default="127.0.0.1")
    wrap.add_argument("--shared", action="store_true", help="one server process for every client session")
    wrap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    wrap.add_argument("--admin-addr", metavar="HOST:PORT", help="also serve the admin API and web UI (default: off)")
    wrap.add_argument("--stats-addr", metavar="HOST:PORT", help="also serve Prometheus /metrics (default: off)")
    wrap.add_argument("server", nargs=argparse.REMAINDER, help="-- CMD ARGS...: the stdio server to run")
    connect = sub.add_parser("connect", help="a local stdio MCP server that forwards to a remote one")
    connect.add_argument("url", help="streamable-HTTP endpoint, or an SSE endpoint ending in /sse")
    connect.add_argument("--header", action="append", default=[], metavar="K:V", help="add a request header")
    connect.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=argparse.SUPPRESS, help="listen port (single-bind configs)")
    parser.add_argument("--address", default=argparse.SUPPRESS, help="listen address (single-bind configs)")
    parser.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])


def _validate(path: str, catalog: bool = False) -> int:
    config = load_config(path)
    gateway = Gateway(config)  # compiles routes and federations: catches what the models cannot
    targets = sum(len(f.upstreams) for _, f in gateway.federations)
    print(f"{path}: ok ({len(gateway.binds)} bind(s), {len(gateway.federations)} MCP route(s), {targets} target(s))")
    if not catalog:
        return 0
    _setup_logging("critical")  # the targets' own chatter would bury the listing
    failed = _run(_print_catalog, gateway)
    return 1 if failed else 0


_KINDS: tuple[tuple[Kind, str], ...] = (
    ("tool", "tool"),
    ("prompt", "prompt"),
    ("resource", "resource"),
    ("template", "resource template"),
)


async def _print_catalog(gateway: Gateway, timeout: float = 30.0) -> int:
    """Start the config's targets (no listening socket), list each one, print the merged catalog per
    MCP route with every item's origin, then shut them down. Returns how many targets failed."""
    failed = 0
    async with gateway.running():
        for route, federation in gateway.federations:
            print(f"route {route}:")
            catalogs, errors = await federation.survey(timeout)
            for name, upstream in federation.upstreams.items():
                spec = upstream.spec
                if name in errors:
                    failed += 1
                    print(f"  target {name} [{spec.transport}] {spec.describe()}: FAILED: {errors[name]}")
                    continue
                counts = ", ".join(
                    f"{sum(1 for e in catalogs[kind].entries.values() if e.target == name)} {noun}(s)"
                    for kind, noun in _KINDS
                )
                print(f"  target {name} [{spec.transport}] {spec.describe()}: {counts}")
                for kind, noun in _KINDS:
                    for exposed, entry in catalogs[kind].entries.items():
                        if entry.target == name:
                            print(f"    {noun} {exposed}{_origin_and_summary(exposed, entry)}")
            for kind, _ in _KINDS:
                for problem in catalogs[kind].problems:
                    print(f"  problem: {problem}")
    return failed


def _origin_and_summary(exposed: str, entry: Any) -> str:
    origin = f" (from {entry.original})" if entry.original != exposed else ""
    description = (getattr(entry.item, "description", None) or "").strip()
    return origin + (f": {description.splitlines()[0]}" if description else "")


def _run_file(path: str, args: argparse.Namespace) -> int:
    config = _override(load_config(path), args)
    level = getattr(args, "log_level", None) or config.config.logging.level
    return _run_config(config, level, path, reload=lambda: _override(load_config(path), args))


def _run_config(config: Config, log_level: str, source: str, reload: Callable[[], Config] | None = None) -> int:
    _setup_logging(log_level, config.config.logging.format)
    logger.info("agentplex starting with %s", source)
    _run(serve, config, reload)
    return 0


def _stdio(config: Config, route: str | None, log_level: str) -> int:
    """Serve one MCP route over stdin/stdout; stdout carries nothing but protocol messages."""
    _setup_logging(log_level)
    federations = dict(Gateway(config).federations)
    if route is None and len(federations) != 1:
        raise ConfigError([f"{config.source}: choose a route with --route (one of: {', '.join(federations)})"])
    name = route if route is not None else next(iter(federations))
    if name not in federations:
        raise ConfigError([f"{config.source}: no MCP route named {name!r} (routes: {', '.join(federations)})"])
    _run(serve_federation_stdio, federations[name])
    return 0


async def serve_federation_stdio(federation: Federation) -> None:
    """Until stdin closes or a signal comes; the targets (and their processes) are closed either way.
    The signal is watched before the targets start, so one that hangs its handshake holds nothing up."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()

            async def serve_then_stop() -> None:
                async with federation.running():
                    await serve_stdio(federation.build_server())
                tg.cancel_scope.cancel()

            tg.start_soon(stop_on_signal)
            tg.start_soon(serve_then_stop)


def _wrap_config(args: argparse.Namespace) -> Config:
    """`wrap -- CMD ARGS`: one stdio target, served at /mcp and /sse, with the caller's environment;
    a process per client session unless --shared."""
    command = args.server[1:] if args.server[:1] == ["--"] else args.server
    if not command:
        raise ConfigError(["wrap: give the server's command after --, e.g. agentplex wrap -- python server.py"])
    target = Target(
        name="server",
        stdio=StdioTarget(cmd=command[0], args=command[1:]),  # inherits our environment, like any stdio target
        sharing="shared" if args.shared else "session",
    )
    settings = _settings("wrap", args.admin_addr, args.stats_addr)
    mcp = McpShort(port=args.port, address=args.host, targets=[target], failureMode="failOpen")
    config = Config(config=settings, mcp=mcp)
    config._source = "wrap"
    return config


def _connect_config(args: argparse.Namespace) -> Config:
    """`connect URL`: one HTTP target, nothing renamed."""
    headers: dict[str, str] = {}
    for header in args.header:
        key, colon, value = header.partition(":")
        if not colon or not key.strip():
            raise ConfigError([f"connect: --header {header!r} is not K:V"])
        headers[key.strip()] = value.strip()
    http = HttpTarget(host=args.url, headers=headers)
    kind = "sse" if args.url.rstrip("/").endswith("/sse") else "mcp"
    target = Target(name="remote", **{kind: http})
    config = Config(config=_settings("connect", None, None), mcp=McpShort(port=0, targets=[target], prefixMode="never"))
    config._source = "connect"
    return config


_FLAGS = {"adminAddr": "--admin-addr", "statsAddr": "--stats-addr"}


def _settings(command: str, admin: str | None, stats: str | None) -> GlobalSettings:
    """`wrap` and `connect` serve only what they are asked to: no admin API (with its `POST /call`) and
    no /metrics unless a flag names an address; two of them on one machine never collide."""
    try:
        return GlobalSettings(adminAddr=admin, statsAddr=stats)
    except ValidationError as exc:
        problems = validation_problems(exc, GlobalSettings)
        raise ConfigError([f"{command}: {_FLAGS.get(str(loc[0]), loc[0])}: {msg}" for loc, msg in problems]) from None


def _override(config: Config, args: argparse.Namespace) -> Config:
    """Apply --port/--address to the one bind a config has (ambiguous with several)."""
    port, address = getattr(args, "port", None), getattr(args, "address", None)
    if port is None and address is None:
        return config
    # The short `mcp:` and `a2a:` blocks share one bind when they name the same port and address.
    short = [block for block in (config.mcp, config.a2a) if block is not None]
    shared = len(short) == 2 and (short[0].port, short[0].address) == (short[1].port, short[1].address)
    count = (1 if shared else len(short)) + len(config.binds)
    if count != 1:
        raise ConfigError([f"{config.source}: --port/--address need a config with exactly one bind, not {count}"])
    for bind in [*short, *config.binds]:
        if port is not None:
            bind.port = port
        if address is not None:
            bind.address = address
    return config


async def serve(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then drain (gateway/runtime.py); SIGHUP or an edit of the file reloads it."""
    try:
        runtime = Runtime(config, reload)
    except OSError as exc:  # a port in use: say so, no traceback
        raise ConfigError(f"{config.source}: {exc}") from None
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with anyio.open_signal_receiver(*watched) as signals:
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                async for sig in signals:
                    if sig == signal.SIGHUP:
                        if reload is not None:
                            logger.info("received SIGHUP: reloading %s", config.source)
                            tg.start_soon(runtime.reload)
                        continue
                    logger.info("received %s, shutting down", signal.Signals(sig).name)
                    runtime.stop()
                    if runtime.starting:  # no waiting for targets that hang in their handshake
                        tg.cancel_scope.cancel()
                    return

            async def run_until_stopped(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                await runtime.run(task_status=task_status)
                tg.cancel_scope.cancel()

            tg.start_soon(on_signals)
            await tg.start(run_until_stopped)
            for line in runtime.gateway.summary():
                logger.info("%s", line)
            for line in runtime.gateway.failed_targets():
                logger.warning("%s", line)
    logger.info("agentplex stopped")


def _quickstart(args: argparse.Namespace) -> int:
    """The demo: start the sample notes server over streamable HTTP, then serve quickstart.yaml."""
    _setup_logging(getattr(args, "log_level", None) or "info")
    with _sample_notes_server():
        return _run_file(str(QUICKSTART), args)


@contextlib.contextmanager
def _sample_notes_server() -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "samples.servers.notes", "--port", str(NOTES_PORT)],
        cwd=SAMPLES.parent,
        start_new_session=True,  # our Ctrl-C is handled by us; we end it ourselves
    )
    try:
        _wait_for_port(NOTES_PORT, proc)
        logger.info("sample notes server on http://127.0.0.1:%d/mcp (pid %d)", NOTES_PORT, proc.pid)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the sample notes server exited with code {proc.returncode} (is port {port} free?)")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the sample notes server did not listen on port {port} within {timeout:g}s")


def _setup_logging(level: str, log_format: str = "text") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    access = logging.getLogger("agentplex.access")
    access.handlers.clear()
    access.propagate = True
    if log_format == "json":  # access lines are JSON documents: one per line, nothing around them
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False
    for noisy in ("httpx2", "httpx", "mcp", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


if __name__ == "__main__":
    sys.exit(main())
