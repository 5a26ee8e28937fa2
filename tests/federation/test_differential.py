"""Proof of one path (issue 15): the same MCP request gives the same client-visible answer on every path.

The gateway serves one method over several paths: a handshake-era `tools/call` into a streamable-HTTP or
stdio target that the session already called goes over the raw JSON relay (federation/server.py `_relay`,
protocols/mcp/relay.py); everything else goes through the SDK (`_call_tool` -> `_interactive` ->
`_forward`). Each scenario below runs through every (front end x upstream transport) pair the protocol
allows and must give the SAME outcome, the scenario's `expected` (what the reference path gives: the SDK
path, handshake era). For the handshake-era streamable-HTTP front end each scenario runs twice in one
fresh session, and both runs must give the expected outcome: in the first run, the session's first call
into a target is served on the SDK path (it opens the session's own upstream), and in the second run the
calls into the streamable-HTTP and stdio targets take the relay (both checked with spies on the gateway). A 2026-07-28
`tools/call` into a streamable-HTTP target of either era or a stdio target takes the relay too (`plan_modern_call`), its
questions to the client parked as the SDK path parks them: on the 2026-07-28 front end each scenario runs
twice as well, first with the relay declined (the SDK path), then with it. A
scenario whose key call is refused before reaching the target (denied, rate-limited) starts with a call
to another tool of the target, so that its refusal, too, comes from the relay in the second run.

Front ends (test ids): streamable HTTP 2025-11-25 (`http-handshake`), streamable HTTP 2026-07-28
(`http-modern`), legacy SSE (`sse`), `agentplex stdio -f CONFIG` (`stdio`). Upstreams: `stdio`, `sse`,
streamable HTTP in the handshake era (`http`), and a 2026-07-28 streamable-HTTP upstream (`modern`,
an `era: modern` target). All upstreams page their tools/list
(`--page-size`), so every list walks upstream pages.

Skipped pairings: the *_mid_call scenarios' tools ask with the handshake-era server API, which a
2026-07-28 upstream connection cannot carry (sdk-notes 7.1), so they skip the modern upstream; the
*_any_era scenarios cover it. 2026-07-28 clients have no resources/subscribe nor standalone stream: their
change scenarios use subscriptions/listen instead, and must end the same.

What is normalised, and why (nothing else is):
- the target's name: each upstream has its own (it prefixes tool names and URIs, names itself in
  answers and errors), written `T` in outcomes;
- tool names a scenario invents (the unknown and the denied name become `<tool>`; grown tools get
  fresh names, since upstream processes are shared by the whole module);
- the seconds a rate limit says to wait (`retryAfter`, and in the message): they depend on when the call came;
- what 2026-07-28 stamps on every result (`resultType: complete`, the server's info in `_meta`): the
  era's envelope, not the answer;
- request ids never reach outcomes (the client matches them itself).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from federation.server import Federation
from tests.conftest import PY, ROOT, http_server, run_gateway
from tests.federation.test_eras import elicitation, roots, sampling

pytestmark = pytest.mark.anyio

PAGING = ("--page-size", "4", "--extra-tools", "3")  # upstream tools/list comes in pages of 4
UPSTREAMS = {"stdio": "alpha", "sse": "bravo", "http": "charlie", "modern": "delta"}  # transport -> target
FRONTS = ["http-handshake", "http-modern", "sse", "stdio"]
RELAYED = ("http", "stdio", "modern")  # upstream transports the raw relay serves (not legacy SSE)
WAIT = 10  # seconds any one expected event may take (a bound, not an assertion)


# -- the world: three upstream processes, one in-process gateway, one agentplex stdio per route ---------


def _target(name: str, kind: str, where: str, era: str = "handshake") -> str:
    if kind == "stdio":
        args = json.dumps(["-m", "tests.fixtures.upstream", "--name", name, "--transport", "stdio", *PAGING])
        spec = f'stdio: {{cmd: "{PY}", args: {args}, cwd: "{ROOT}"}}'
    else:
        spec = f'{kind}: {{host: "{where}"}}'
    return f"\n          - {{name: {name}, era: {era}, {spec}}}"


def config(urls: dict[str, str]) -> str:
    targets = (
        _target(UPSTREAMS["stdio"], "stdio", "")
        + _target(UPSTREAMS["sse"], "sse", urls["sse"])
        + _target(UPSTREAMS["http"], "mcp", urls["http"])
        + _target(UPSTREAMS["modern"], "mcp", urls["modern"], era="modern")
    )
    # main: a deny rule (getenv) and a one-token limit on get_time; slow: a 500 ms backend timeout.
    return f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: main
      matches: [{{path: {{pathPrefix: /main}}}}]
      policies:
        mcpAuthorization: {{rules: [{{deny: 'mcp.tool.name == "getenv"'}}]}}
        localRateLimit:
        - {{methods: [tools/call], tools: ["*_get_time"], maxTokens: 1, tokensPerFill: 1, fillInterval: 3600s}}
      backends:
      - mcp:
          targets:{targets}
    - name: slow
      matches: [{{path: {{pathPrefix: /slow}}}}]
      policies: {{timeout: {{backendRequestTimeout: 500ms}}}}
      backends:
      - mcp:
          targets:{targets}
"""


@dataclass
class Recorder:
    """What a client's callbacks saw; one per client, cleared by each scenario."""

    logs: list[tuple[str, Any, str | None]] = field(default_factory=list)
    notes: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.logs.clear()
        self.notes.clear()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append((params.level, params.data, params.logger))

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification | types.ResourceUpdatedNotification):
            self.notes.append(message)


@dataclass
class Peer:
    """One client of the gateway, on one front end and route."""

    front: str
    client: Client
    seen: Recorder
    relayed: list[str]  # targets of the calls the gateway relayed (in-process gateway only)

    @property
    def modern(self) -> bool:
        return self.front == "http-modern"


def open_client(front: str, where: str, seen: Recorder) -> Client:
    server: Any
    if front == "stdio":
        config_file, route = where.split("#")
        # `agentplex stdio`, run as `python -m gateway.cli` from this checkout: the console script would run
        # whichever agentplex the virtualenv installed (the SDK's stdio client passes no PYTHONPATH on).
        args = ["-m", "gateway.cli", "stdio", "-f", config_file, "--route", route]
        server = StdioServerParameters(command=PY, args=args, cwd=str(ROOT))
    elif front == "sse":
        server = sse_client(where)
    else:
        server = where
    return Client(
        server,
        mode="2026-07-28" if front == "http-modern" else "legacy",
        cache=None,
        log_level="debug" if front == "http-modern" else None,  # 2026-07-28 logging is a per-request opt-in
        logging_callback=seen.on_log,
        message_handler=seen.on_message,
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
    )


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def upstream_urls() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        yield {
            kind: stack.enter_context(
                http_server(
                    "tests.fixtures.upstream",
                    "--name",
                    UPSTREAMS[kind],
                    "--transport",
                    "sse" if kind == "sse" else "http",
                    *PAGING,
                    path="/sse" if kind == "sse" else "/mcp",
                )
            )
            for kind in ("sse", "http", "modern")
        }


@dataclass
class World:
    base: str
    relayed: list[str]  # targets of the tools/calls served on the raw relay, in order
    sdk: list[str]  # and of those served on the SDK path
    shared: dict[tuple[str, str], Peer]  # (front, route) -> the module's client, for all but http-handshake
    sdk_only: SdkOnly


@dataclass
class SdkOnly:
    on: bool = False


@pytest.fixture(scope="module")
async def world(upstream_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    yaml = config(upstream_urls)
    config_file = tmp_path_factory.mktemp("differential") / "gw.yaml"
    config_file.write_text(yaml)
    relayed: list[str] = []
    sdk: list[str] = []
    sdk_only = SdkOnly()
    planned = Federation.plan_modern_call
    # While `sdk_only` is set, 2026-07-28 calls decline the relay (as any call the relay finds less than
    # plain does), so a scenario can run once on each path. Patched before the endpoints bind it.
    Federation.plan_modern_call = lambda self, request: None if sdk_only.on else planned(self, request)  # type: ignore[method-assign]
    async with run_gateway(yaml) as gw, contextlib.AsyncExitStack() as stack:
        for _, federation in gw.gateway.federations:
            federation._relay = _spy(federation._relay, relayed)  # type: ignore[method-assign]
            federation._interactive = _spy_sdk(federation._interactive, sdk)  # type: ignore[method-assign]
        base = f"http://127.0.0.1:{gw.port}"
        shared: dict[tuple[str, str], Peer] = {}
        for front in ("http-modern", "sse", "stdio"):
            for route in ("main", "slow"):
                where = {"http-modern": f"{base}/{route}/mcp", "sse": f"{base}/{route}/sse"}.get(
                    front, f"{config_file}#{route}"
                )
                seen = Recorder()
                client = await stack.enter_async_context(open_client(front, where, seen))
                shared[front, route] = Peer(front, client, seen, relayed)
        try:
            yield World(base, relayed, sdk, shared, sdk_only)
        finally:
            Federation.plan_modern_call = planned  # type: ignore[method-assign]


def _spy_sdk(interactive: Callable[..., Awaitable[Any]], sdk: list[str]) -> Callable[..., Awaitable[Any]]:
    async def spied(ctx: Any, params: Any, target: str, method: str, invoke: Any) -> Any:
        if method == "tools/call":
            sdk.append(target)
        return await interactive(ctx, params, target, method, invoke)

    return spied


def _spy(relay: Callable[..., Awaitable[Any]], relayed: list[str]) -> Callable[..., Awaitable[Any]]:
    async def spied(request: Any, downstream: Any, entry: Any, upstream: Any) -> Any:
        relayed.append(entry.target)
        return await relay(request, downstream, entry, upstream)

    return spied


# -- outcomes -----------------------------------------------------------------------------------------


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def error_of(exc: MCPError) -> dict[str, Any]:
    return {"error": dump(exc.error)}


async def call(peer: Peer, name: str, arguments: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """A tools/call's client-visible outcome: its result, or its JSON-RPC error."""
    try:
        with anyio.fail_after(60):
            return {"result": dump(await peer.client.call_tool(name, arguments or {}, **options))}
    except MCPError as exc:
        return error_of(exc)


async def until(check: Callable[[], bool]) -> bool:
    """Whether `check` comes true within WAIT seconds (polled; bounded in time and count)."""
    with anyio.move_on_after(WAIT):
        for _ in range(WAIT * 20):
            if check():
                return True
            await anyio.sleep(0.05)
    return check()


_counter = itertools.count()


def fresh(stem: str) -> str:
    return f"{stem}{next(_counter)}"


# -- scenarios: each returns an outcome that must equal its `expected` -----------------------------------


async def plain(peer: Peer, t: str) -> Any:
    return [await call(peer, f"{t}_echo", {"text": "hi"}), await call(peer, f"{t}_add", {"a": 2, "b": 3})]


async def tool_error(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_fail")


async def client_meta(peer: Peer, t: str) -> Any:
    """A client's own `_meta` keys reach the target (the protocol's own are the gateway's to set)."""
    return await call(peer, f"{t}_tag", {}, meta={"example.com/tag": "t1"})


async def bad_structured_result(peer: Peer, t: str) -> Any:
    """A result whose structured content breaks the tool's declared output schema (the client, too, would
    refuse it: what counts is what the gateway answers)."""
    try:
        return await call(peer, f"{t}_mislabelled")
    except RuntimeError as exc:  # the client's own check of a result the gateway let through
        return {"client refused": str(exc)}


async def bad_arguments(peer: Peer, t: str) -> Any:
    """The target's own validation error (pydantic's link names its version: that is the fixture's, not a path's)."""
    outcome = await call(peer, f"{t}_add", {"a": "two", "b": 3})
    return json.loads(re.sub(r"errors\.pydantic\.dev/[0-9.]+/", "errors.pydantic.dev/<v>/", json.dumps(outcome)))


async def unknown_tool(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_nosuch")


async def denied_tool(peer: Peer, t: str) -> Any:
    """A denied tool looks exactly like an unknown one (names aside). A call to another tool of the target
    comes first, so the session has its own upstream and, on the handshake-era front end, the denied call
    is refused by the relay too."""
    first = await call(peer, f"{t}_whoami")
    if "error" in first:
        return {"first": first}
    denied = json.dumps(await call(peer, f"{t}_getenv", {"name": "HOME"})).replace(f"{t}_getenv", "<tool>")
    unknown = json.dumps(await call(peer, f"{t}_nosuch")).replace(f"{t}_nosuch", "<tool>")
    return {"denied": json.loads(denied), "unknown": json.loads(unknown)}


async def rate_limited(peer: Peer, t: str) -> Any:
    """The first refusal among two calls to a tool whose one token the module shares (retryAfter: its sign).

    A call to another tool of the target comes first: whatever the bucket holds, the session has called
    into the target, so on the handshake-era front end the second run's limited call takes the relay."""
    first = await call(peer, f"{t}_whoami")
    if "error" in first:
        return {"first": first}
    for _ in range(2):
        outcome = await call(peer, f"{t}_get_time")
        if "error" in outcome:
            data = outcome["error"].get("data")
            if isinstance(data, dict) and isinstance(data.get("retryAfter"), int | float):
                data["retryAfter"] = "positive" if data["retryAfter"] > 0 else data["retryAfter"]
            message = outcome["error"].get("message", "")
            outcome["error"]["message"] = re.sub(r"retry after \d+(\.\d+)? s", "retry after <seconds> s", message)
            return outcome
    return "never limited"


async def progress(peer: Peer, t: str) -> Any:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    outcome = await call(peer, f"{t}_progress", {"steps": 3}, progress_callback=on_progress)
    await until(lambda: len(seen) >= 3)
    return {"outcome": outcome, "progress": [list(p) for p in seen]}


async def logs(peer: Peer, t: str) -> Any:
    outcome = await call(peer, f"{t}_chatty", {"count": 3})
    await until(lambda: len(peer.seen.logs) >= 3)
    return {"outcome": outcome, "logs": [list(entry) for entry in peer.seen.logs]}


async def log_level(peer: Peer, t: str) -> Any:
    """A client that asks for warnings and up hears no info logs: a quiet call, then (level back to debug) a
    call that logs once; only that one log arrives (the quiet call's would have come before it)."""
    if peer.modern:  # 2026-07-28: the level is each request's own opt-in
        quiet = await call(peer, f"{t}_chatty", {"count": 2}, meta={types.LOG_LEVEL_META_KEY: "warning"})
    else:
        await peer.client.session.set_logging_level("warning")
        try:
            quiet = await call(peer, f"{t}_chatty", {"count": 2})
        finally:
            await peer.client.session.set_logging_level("debug")
    loud = await call(peer, f"{t}_chatty", {"count": 1})
    await until(lambda: len(peer.seen.logs) >= 1)
    return {"quiet": quiet, "loud": loud, "logs": [list(entry) for entry in peer.seen.logs]}


async def _list_changed(peer: Peer, t: str, tool: str) -> Any:
    name = fresh("grown")
    await peer.client.list_tools()  # what the client has seen, for the gateway to tell it of a change
    if peer.modern:  # 2026-07-28: no standalone stream; the change arrives on subscriptions/listen
        events: list[str] = []
        async with peer.client.listen(tools_list_changed=True) as subscription:
            outcome = await call(peer, f"{t}_{tool}", {"name": name})
            with anyio.move_on_after(WAIT):
                async for event in subscription:
                    events.append(type(event).__name__)
                    break
        told = events == ["ToolsListChanged"]
    else:
        outcome = await call(peer, f"{t}_{tool}", {"name": name})
        told = await until(lambda: any(isinstance(n, types.ToolListChangedNotification) for n in peer.seen.notes))
    listed = f"{t}_{name}" in {tool.name for tool in (await peer.client.list_tools()).tools}
    grown = await call(peer, f"{t}_{name}", {"text": "x"})
    return {
        "outcome": json.loads(json.dumps(outcome).replace(name, "<grown>")),
        "told": told,
        "listed": listed,
        "grown": json.loads(json.dumps(grown).replace(name, "<grown>")),
    }


async def list_changed_here(peer: Peer, t: str) -> Any:
    return await _list_changed(peer, t, "grow_here")


async def list_changed_standalone(peer: Peer, t: str) -> Any:
    return await _list_changed(peer, t, "grow")


async def _updated(peer: Peer, t: str, tool: str) -> Any:
    uri = f"{t}+mem://static"
    if peer.modern:  # 2026-07-28: resources/subscribe is gone; subscriptions/listen watches the resource
        uris: list[str] = []
        async with peer.client.listen(resource_subscriptions=[uri]) as subscription:
            outcome = await call(peer, f"{t}_{tool}", {"uri": "mem://static"})
            with anyio.move_on_after(WAIT):
                async for event in subscription:
                    uris.append(str(event.uri))
                    break
    else:
        try:
            await peer.client.session.subscribe_resource(uri)
        except MCPError as exc:
            return {"subscribe": error_of(exc)}
        outcome = await call(peer, f"{t}_{tool}", {"uri": "mem://static"})
        await until(lambda: any(isinstance(n, types.ResourceUpdatedNotification) for n in peer.seen.notes))
        uris = [str(n.params.uri) for n in peer.seen.notes if isinstance(n, types.ResourceUpdatedNotification)]
    return {"outcome": outcome, "updated": uris}


async def resource_updated(peer: Peer, t: str) -> Any:
    return await _updated(peer, t, "touch")


async def resource_updated_here(peer: Peer, t: str) -> Any:
    return await _updated(peer, t, "touch_here")


async def sampling_any_era(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_sample_any_era", {"prompt": "a haiku"})


async def elicitation_any_era(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_ask_any_era", {"question": "what?"})


async def roots_any_era(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_roots_any_era")


async def sampling_mid_call(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_sample", {"prompt": "a poem"})


async def elicitation_mid_call(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_ask", {"question": "what?"})


async def roots_mid_call(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_roots")


async def samplings_at_once(peer: Peer, t: str) -> Any:
    """Three sampling requests in flight together during one call."""
    return await call(peer, f"{t}_sample_many", {"count": 3})


async def url_elicitation_mid_call(peer: Peer, t: str) -> Any:
    return await call(peer, f"{t}_visit", {"url": "https://example.test/login"})


async def resource_links(peer: Peer, t: str) -> Any:
    """Links and embedded resources in a result point at the exposed URI (the relay rewrites JSON itself)."""
    return await call(peer, f"{t}_link")


async def _request(make: Callable[[], Awaitable[Any]]) -> Any:
    try:
        with anyio.fail_after(60):
            return {"result": dump(await make())}
    except MCPError as exc:
        return error_of(exc)


async def prompt(peer: Peer, t: str) -> Any:
    return await _request(lambda: peer.client.get_prompt(f"{t}_greet", {"name": "Ada"}))


async def read_resources(peer: Peer, t: str) -> Any:
    return [
        await _request(lambda: peer.client.read_resource(f"{t}+mem://static")),
        await _request(lambda: peer.client.read_resource(f"{t}+mem://item/apple")),
    ]


async def completion(peer: Peer, t: str) -> Any:
    return [
        await _request(
            lambda: peer.client.complete(
                types.PromptReference(type="ref/prompt", name=f"{t}_greet"), {"name": "name", "value": "A"}
            )
        ),
        await _request(
            lambda: peer.client.complete(
                types.ResourceTemplateReference(type="ref/resource", uri=f"{t}+mem://item/{{id}}"),
                {"name": "id", "value": "ap"},
            )
        ),
    ]


async def pagination(peer: Peer, t: str) -> Any:
    """Every tool of the paged target, walked page by page (tools grown by other scenarios left out)."""
    names: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        page = await peer.client.list_tools(cursor=cursor)
        names += [tool.name for tool in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            break
    return sorted(n for n in names if n.startswith(f"{t}_") and not re.fullmatch(rf"{t}_grown\d+", n))


async def upstream_error(peer: Peer, t: str) -> Any:
    try:
        with anyio.fail_after(60):
            return {"result": dump(await peer.client.read_resource(f"{t}+mem://nope"))}
    except MCPError as exc:
        return error_of(exc)


async def timeout(peer: Peer, t: str) -> Any:
    """On the slow route (500 ms per backend request): a call that outlasts it, then one that does not."""
    return [await call(peer, f"{t}_sleep", {"seconds": 3}), await call(peer, f"{t}_whoami")]


async def cancellation(peer: Peer, t: str) -> Any:
    """The client gives up on a slow call: the upstream hears of it (its `sleep` counts cancellations)."""

    async def cancelled() -> int:
        outcome = await call(peer, f"{t}_cancellations")
        return int(outcome["result"]["structuredContent"]["result"])

    before = await cancelled()  # also: the session's connection to the target is open before the slow call
    with anyio.move_on_after(1.0):  # the client cancels after 1 s (how long is no assertion: the count is)
        await peer.client.call_tool(f"{t}_sleep", {"seconds": 30})
    counts: list[int] = []

    async def heard() -> bool:
        counts.append(await cancelled())
        return counts[-1] > before

    for _ in range(WAIT * 4):  # bounded: at most WAIT seconds of polling
        if await heard():
            break
        await anyio.sleep(0.25)
    return {"upstream_cancelled": counts[-1] - before, "after": await call(peer, f"{t}_whoami")}


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Peer, str], Awaitable[Any]]
    expected: Any
    route: str = "main"
    calls_target: bool = True  # its tools/calls reach the target (so h's second run takes the relay)
    call_first: bool = True  # its first request into the target is a tools/call (not resources/subscribe)
    handshake_upstream_only: str = ""  # why it cannot run against a 2026-07-28 upstream, if it cannot


def text_result(text: str, error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": error}
    if not error:
        result["structuredContent"] = {"result": text}
    return {"result": result}


HANDSHAKE_API = (
    "the tool asks with the handshake-era server API (create_message/elicit_form/roots), which has no back-channel "
    "on a 2026-07-28 upstream connection (sdk-notes 7.1); the *_any_era scenarios cover that upstream"
)

PAGED_TOOLS = sorted(
    [
        "add",
        "ask",
        "ask_any_era",
        "blob",
        "bump",
        "bumps",
        "cancellations",
        "chatty",
        "chatty_later",
        "crash",
        "echo",
        "fail",
        "get_time",
        "grow",
        "grow_here",
        "link",
        "mislabelled",
        "pid",
        "progress",
        "roots",
        "roots_any_era",
        "roots_unrelated",
        "sample",
        "sample_any_era",
        "sample_many",
        "session",
        "sleep",
        "tag",
        "t000",
        "t001",
        "t002",
        "tools_list_calls",
        "touch",
        "touch_here",
        "tracecontext",
        "visit",
        "whoami",
    ]
)

SCENARIOS: dict[str, Scenario] = {
    "plain": Scenario(
        plain,
        [
            text_result("T: hi"),
            {
                "result": {
                    "content": [{"type": "text", "text": "5"}],
                    "structuredContent": {"result": 5},
                    "isError": False,
                }
            },
        ],
    ),
    "tool_error": Scenario(tool_error, text_result("Error executing tool fail: T: fail() always fails", error=True)),
    "client_meta": Scenario(client_meta, text_result("t1")),
    "bad_structured_result": Scenario(  # passed on as the target sent it, on every path
        bad_structured_result,
        {
            "client refused": "Invalid structured content returned by tool T_mislabelled: 7 is not of type 'string'"
            "\n\nFailed validating 'type' in schema['properties']['result']:\n    {'type': 'string'}"
            "\n\nOn instance['result']:\n    7"
        },
    ),
    "bad_arguments": Scenario(
        bad_arguments,
        text_result(
            "Error executing tool add: 1 validation error for addArguments\na\n  Input should be a valid integer, "
            "unable to parse string as an integer [type=int_parsing, input_value='two', input_type=str]\n"
            "    For further information visit https://errors.pydantic.dev/<v>/v/int_parsing",
            error=True,
        ),
    ),
    "unknown_tool": Scenario(
        unknown_tool, {"error": {"code": -32602, "message": "Unknown tool: T_nosuch"}}, calls_target=False
    ),
    "denied_tool": Scenario(
        denied_tool,
        {
            "denied": {"error": {"code": -32602, "message": "Unknown tool: <tool>"}},
            "unknown": {"error": {"code": -32602, "message": "Unknown tool: <tool>"}},
        },
    ),
    "rate_limited": Scenario(
        rate_limited,
        {
            "error": {
                "code": -32029,
                "message": "Rate limit exceeded for T_get_time; retry after <seconds> s",
                "data": {"retryAfter": "positive"},
            }
        },
    ),
    "progress": Scenario(
        progress,
        {"outcome": text_result("done"), "progress": [[i, 3.0, f"step {i} of 3"] for i in (1, 2, 3)]},
    ),
    "logs": Scenario(logs, {"outcome": text_result("logged"), "logs": [["info", f"log {i}", "T"] for i in (1, 2, 3)]}),
    "log_level": Scenario(
        log_level, {"quiet": text_result("logged"), "loud": text_result("logged"), "logs": [["info", "log 1", "T"]]}
    ),
    "list_changed_here": Scenario(
        list_changed_here,
        {"outcome": text_result("added <grown>"), "told": True, "listed": True, "grown": text_result("T <grown>: x")},
    ),
    "list_changed_standalone": Scenario(
        list_changed_standalone,
        {"outcome": text_result("added <grown>"), "told": True, "listed": True, "grown": text_result("T <grown>: x")},
    ),
    "resource_updated": Scenario(
        resource_updated,
        {"outcome": text_result("touched mem://static"), "updated": ["T+mem://static"]},
        call_first=False,
    ),
    "resource_updated_here": Scenario(
        resource_updated_here,
        {"outcome": text_result("touched mem://static"), "updated": ["T+mem://static"]},
        call_first=False,
    ),
    "sampling_any_era": Scenario(sampling_any_era, text_result("sampled: sampled a haiku")),
    "elicitation_any_era": Scenario(elicitation_any_era, text_result("answered: forty-two")),
    "roots_any_era": Scenario(roots_any_era, text_result("roots: file:///work/project")),
    "sampling_mid_call": Scenario(
        sampling_mid_call, text_result("sampled a poem"), handshake_upstream_only=HANDSHAKE_API
    ),
    "elicitation_mid_call": Scenario(
        elicitation_mid_call, text_result("forty-two"), handshake_upstream_only=HANDSHAKE_API
    ),
    "roots_mid_call": Scenario(
        roots_mid_call, text_result("roots: file:///work/project"), handshake_upstream_only=HANDSHAKE_API
    ),
    "samplings_at_once": Scenario(
        samplings_at_once, text_result("sampled p0 sampled p1 sampled p2"), handshake_upstream_only=HANDSHAKE_API
    ),
    "url_elicitation_mid_call": Scenario(
        url_elicitation_mid_call, text_result("visit: accept"), handshake_upstream_only=HANDSHAKE_API
    ),
    "resource_links": Scenario(
        resource_links,
        {
            "result": {
                "content": [
                    {"name": "static", "uri": "T+mem://static", "type": "resource_link"},
                    {
                        "type": "resource",
                        "resource": {"uri": "T+mem://static", "mimeType": "text/plain", "text": "static from T"},
                    },
                ],
                "isError": False,
            }
        },
    ),
    "prompt": Scenario(
        prompt,
        {
            "result": {
                "description": "Greet someone",
                "messages": [{"role": "user", "content": {"type": "text", "text": "Hello, Ada from T"}}],
            }
        },
        calls_target=False,
    ),
    "read_resources": Scenario(
        read_resources,
        [
            {
                "result": {
                    "ttlMs": 0,
                    "cacheScope": "private",
                    "contents": [{"uri": f"T+mem://{path}", "mimeType": "text/plain", "text": text}],
                }
            }
            for path, text in (("static", "static from T"), ("item/apple", "item apple from T"))
        ],
        calls_target=False,
    ),
    "completion": Scenario(
        completion,
        [
            {"result": {"completion": {"values": values, "total": 2, "hasMore": False}}}
            for values in (["Ada", "Alan"], ["apple", "apricot"])
        ],
        calls_target=False,
    ),
    # every tool of the target (more than one upstream page), and not the denied getenv
    "pagination": Scenario(pagination, [f"T_{tool}" for tool in PAGED_TOOLS], calls_target=False),
    "upstream_error": Scenario(
        upstream_error,
        {
            "error": {
                "code": -32602,
                "message": "Unknown resource: mem://nope (from target 'T')",
                "data": {"uri": "mem://nope"},
            }
        },
        calls_target=False,
    ),
    "timeout": Scenario(
        timeout,
        [
            {
                "error": {
                    "code": -32001,
                    "message": "target 'T' tools/call timed out after 0.5s",
                    "data": {"target": "T"},
                }
            },
            text_result("T"),
        ],
        route="slow",
    ),
    "cancellation": Scenario(cancellation, {"upstream_cancelled": 1, "after": text_result("T")}),
}

# Differences found and not fixed here: (front, upstream, scenario) -> the exact difference observed.
KNOWN_DIFFERENCES: dict[tuple[str, str, str], str] = {}


ERA_ENVELOPE = ("resultType", "io.modelcontextprotocol/serverInfo")


def normalise(outcome: Any, target: str) -> Any:
    text = re.sub(rf"(?<![A-Za-z0-9]){target}(?![A-Za-z0-9])", "T", json.dumps(outcome))
    return _strip_envelope(json.loads(text))


def _strip_envelope(value: Any) -> Any:
    """Without what 2026-07-28 stamps on every result (`resultType`, the server's info in `_meta`)."""
    if isinstance(value, list):
        return [_strip_envelope(v) for v in value]
    if not isinstance(value, dict):
        return value
    kept = {k: _strip_envelope(v) for k, v in value.items() if k not in ERA_ENVELOPE}
    if kept.get("_meta") == {}:
        del kept["_meta"]
    return kept


def cases() -> Iterator[Any]:
    for name, scenario in SCENARIOS.items():
        for front in FRONTS:
            for transport in UPSTREAMS:
                marks = []
                if transport == "modern" and scenario.handshake_upstream_only:
                    continue  # not a pairing the protocol allows: see the scenario's reason
                reason = KNOWN_DIFFERENCES.get((front, transport, name))
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                yield pytest.param(front, transport, name, id=f"{front}-{transport}-{name}", marks=marks)


@pytest.mark.parametrize(("front", "transport", "name"), list(cases()))
async def test_same_answer_on_every_path(world: World, front: str, transport: str, name: str) -> None:
    scenario = SCENARIOS[name]
    target = UPSTREAMS[transport]
    if front == "http-modern":  # twice: on the SDK path, then on the relay where it applies
        peer = world.shared[front, scenario.route]
        for run in range(2):
            peer.seen.clear()
            relayed_before, sdk_before = len(world.relayed), len(world.sdk)
            world.sdk_only.on = run == 0
            try:
                outcome = normalise(await scenario.run(peer, target), target)
            finally:
                world.sdk_only.on = False
            assert outcome == scenario.expected, f"run {run} ({'relay' if run else 'SDK path'})"
            if run == 0:
                assert not world.relayed[relayed_before:], "the SDK-path run took the relay"
                if scenario.calls_target and scenario.call_first:
                    assert target in world.sdk[sdk_before:], "the SDK-path run made no call on the SDK path"
            elif transport in RELAYED and scenario.calls_target:
                assert target in world.relayed[relayed_before:], "the second run did not take the relay"
        return
    if front != "http-handshake":
        peer = world.shared[front, scenario.route]
        peer.seen.clear()
        outcome = normalise(await scenario.run(peer, target), target)
        assert outcome == scenario.expected
        return
    # A fresh handshake-era session, the scenario twice: the first run opens the session's own upstream
    # through the SDK, the second run's calls into a streamable-HTTP target go over the raw relay.
    seen = Recorder()
    async with open_client(front, f"{world.base}/{scenario.route}/mcp", seen) as client:
        peer = Peer(front, client, seen, world.relayed)
        outcomes = []
        for run in range(2):
            seen.clear()
            relayed_before, sdk_before = len(world.relayed), len(world.sdk)
            outcomes.append(normalise(await scenario.run(peer, target), target))
            if run == 0 and scenario.calls_target and scenario.call_first:  # its first call into the target: the SDK's
                assert target in world.sdk[sdk_before:], "the first run made no call on the SDK path"
            if run == 1 and transport in RELAYED and scenario.calls_target:
                assert target in world.relayed[relayed_before:], "the second run did not take the relay"
        assert outcomes == [scenario.expected, scenario.expected]
