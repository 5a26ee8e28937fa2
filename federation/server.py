"""The virtual MCP server: one low-level `Server` whose handlers fan out to, and route into, many targets."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import REQUEST_TIMEOUT

from federation.bridge import ParkedCalls, state_boundary
from federation.calls import OBSERVED, ask_client, forwarded_meta, is_modern, is_modern_version, scope_of
from federation.catalog import Catalog, Kind, Naming, PrefixMode, match_template, ui_uris, without_ui
from federation.downstreams import Downstreams
from federation.events import EventRouter
from federation.guard import Access, Guard, OpenGuard
from federation.lists import LIST_METHODS, Catalogs, page, survey, try_page
from federation.observer import Message as Observed
from federation.observer import NoObserver, Observer
from federation.pool import Call, UpstreamPool, set_level
from federation.portable import PortableUpstreams
from federation.relaying import Relaying
from protocols import internals
from protocols.mcp.errors import UpstreamError, unknown_name
from protocols.mcp.upstream import TargetSpec, Upstream

logger = logging.getLogger("agentplex.federation")

# The gateway deliberately serves and uses handshake-era verbs (logging/setLevel, resources/subscribe,
# server-to-client requests); the SDK flags them as deprecated for 2026-07-28 on every call.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

FailureMode = Literal["failClosed", "failOpen"]
_ITEM_METHODS = frozenset(
    {"tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe", "completion/complete"}
)
_KIND_NOUN: dict[Kind, str] = {"tool": "tool", "prompt": "prompt", "resource": "resource", "template": "resource template"}
_VERSION = "0.1.0"


@dataclass(frozen=True)
class FederationSettings:
    name: str = "agentplex"
    prefix_mode: PrefixMode = "conditional"
    separator: str = "_"
    failure_mode: FailureMode = "failClosed"
    stateless: bool = False  # no client sessions: every target is shared


class Federation(Relaying, EventRouter):
    """Many upstream targets presented as one MCP server.

    Split by responsibility: here, the SDK path (the SDK server's method -> handler table, `build_server`);
    federation/relaying.py, the raw relay of `tools/call`; federation/events.py, what upstreams send back;
    federation/pool.py, the upstream connections; federation/lists.py, the merged catalogs.

    Each handshake-era client session gets its own upstream session of a `sharing: session` target
    (a process of its own for stdio) when it first calls into that target, closed when the client's
    session ends. Until then its lists come from the shared upstream (federation/pool.py), so a session
    that only initializes and lists costs no upstream session. `sharing: shared` targets, 2026-07-28
    (sessionless) clients and stateless mode use one upstream per target. Server-to-client traffic
    goes back to the request that caused it.
    """

    def __init__(
        self,
        targets: Sequence[TargetSpec],
        settings: FederationSettings | None = None,
        guard: Guard | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings or FederationSettings()
        self.guard: Guard = guard or OpenGuard()
        self.observer: Observer = observer or NoObserver()
        self.pool = UpstreamPool(targets, self)
        self.upstreams = self.pool.shared  # the shared connection of each target
        self.naming = Naming(tuple(self.upstreams), self.settings.prefix_mode, self.settings.separator)
        self.lists = Catalogs(self.naming, self.settings.failure_mode)
        self.catalogs = self.lists.current  # each kind's merged catalog as last built
        self._parked = ParkedCalls()
        self._boundary = state_boundary(self.settings.name)  # one per federation: every front end's server shares it
        self._server_info: dict[str, Any] = {"name": self.settings.name, "version": _VERSION}
        self.downstreams = Downstreams()
        self._listen_handler = ListenHandler(self.downstreams.bus)
        self.portable = PortableUpstreams(self.pool)  # the upstream sessions that travel in sealed session ids
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Federation]:
        """Open every target (concurrently); failures are logged, not fatal: they are retried on use."""
        async with self.pool.running(), anyio.create_task_group() as self._tg:
            try:
                yield self
            finally:
                self._tg.cancel_scope.cancel()
                self._tg = None

    def status(self) -> dict[str, dict[str, Any]]:
        return self.pool.status()

    def restarts(self) -> dict[str, int]:
        """Reconnections per target so far (for stdio: processes started again), every client session's included."""
        return self.pool.restarts()

    def _upstream(self, target: str, ctx: ServerRequestContext[Any] | None, *, listing: bool = False) -> Upstream:
        """The upstream serving `target` for this request: the client session's own, or the shared one
        (`listing`: the one its lists come from).

        A client session's own upstream remembers its client's latest request (the caller whose
        credentials backendAuth passthrough forwards on the upstream's own traffic).
        """
        client = self._client(ctx)
        upstream = self.pool.listing(target, client) if listing else self.pool.of(target, client)
        request = scope_of(ctx)
        if request is not None and upstream is not self.upstreams[target]:
            upstream.caller = request
        return upstream

    def _client(self, ctx: ServerRequestContext[Any] | None) -> Any:
        """The client connection that gets upstreams of its own, if this request has one."""
        if ctx is None or self.settings.stateless or is_modern(ctx):
            return None
        return internals.connection_of(ctx.session)

    def _upstream_for_session(self, target: str, session_id: str) -> Upstream | None:
        connection = self.downstreams.connection(session_id)
        return self.pool.of(target, connection) if connection is not None else None

    # -- the virtual server ----------------------------------------------------------------

    def build_server(self) -> Server[Any]:
        server: Server[Any] = _VirtualServer(
            self.settings.name,
            version=_VERSION,
            get_tool_input_schema=self._tool_input_schema,
            on_list_tools=self._list_handler("tool", types.ListToolsResult, "tools"),
            on_call_tool=self._call_tool,
            on_list_prompts=self._list_handler("prompt", types.ListPromptsResult, "prompts"),
            on_get_prompt=self._get_prompt,
            on_list_resources=self._list_handler("resource", types.ListResourcesResult, "resources"),
            on_list_resource_templates=self._list_handler(
                "template", types.ListResourceTemplatesResult, "resource_templates"
            ),
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_completion=self._complete,
            on_set_logging_level=self._set_logging_level,
            on_subscriptions_listen=self._listen,
        )
        server.middleware.append(self._middleware)
        server.middleware.append(self._boundary)
        self._server_info = server.server_info_stamp
        return server

    async def _middleware(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        """Every message goes through the rules; every request: remember who is connected; failClosed:
        no session starts while a target is down."""
        self.downstreams.seen(ctx)
        if ctx.request_id is None:  # a notification: a denied one is dropped (there is nobody to answer)
            if self._visible(scope_of(ctx), Access(ctx.method)):
                return await call_next(ctx)
            logger.debug("dropped notification %s: denied by policy", ctx.method)
            return None
        observed = Observed(ctx.method)
        token = OBSERVED.set(observed)
        start = time.perf_counter()
        try:
            if ctx.method not in _ITEM_METHODS:  # those are checked once their item is known
                await self._check(scope_of(ctx), Access(ctx.method))
            if ctx.method == "initialize":
                self.portable.take(ctx)
            if ctx.method in ("initialize", "server/discover"):
                down = await self._unreachable(ctx)
                if down and self.settings.failure_mode == "failClosed":
                    raise UpstreamError(
                        down[0][0], f"unavailable, so the session was refused (failClosed): {down[0][1]}"
                    )
                if len(down) == len(self.upstreams):
                    raise UpstreamError(down[0][0], f"unavailable, and so is every other target: {down[0][1]}")
            return await call_next(ctx)
        except MCPError as exc:
            observed.failed(exc.error.code)
            raise
        except Exception:
            observed.failed(types.INTERNAL_ERROR)
            raise
        finally:
            OBSERVED.reset(token)
            observed.seconds = time.perf_counter() - start
            self._observe(scope_of(ctx), observed)

    def _observe(self, request: Any, observed: Observed) -> None:
        try:
            self.observer.message(request, observed)
        except Exception:  # watching must never break serving
            logger.exception("observer failed for %s", observed.method)

    async def _unreachable(self, ctx: ServerRequestContext[Any]) -> list[tuple[str, str]]:
        """Targets this client cannot reach, through the upstreams its lists would use."""
        down: list[tuple[str, str]] = []

        async def probe(up: Upstream) -> None:
            try:
                await up.session()
            except MCPError as exc:
                down.append((up.spec.name, exc.message))

        async with anyio.create_task_group() as tg:
            for name in self.upstreams:
                tg.start_soon(probe, self._upstream(name, ctx, listing=True))
        return sorted(down)

    # -- lists -----------------------------------------------------------------------------

    def _list_handler(self, kind: Kind, result_type: type[Any], field: str) -> Callable[..., Any]:
        async def handler(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
            cursor = params.cursor if params is not None else None
            request = scope_of(ctx)

            def visible(catalog: Catalog) -> list[Any]:
                return [
                    self._app_visible(request, entry) if kind == "tool" else entry.item
                    for exposed, entry in catalog.entries.items()
                    if entry.target not in catalog.unavailable
                    and self._visible(request, Access(LIST_METHODS[kind], kind, exposed, entry.target, entry.original))
                ]

            # A later page comes from the catalog the walk's first page was cut from (its cursor's digest
            # says so): re-listing every target per page made a walk of N pages cost N full fan-outs.
            if cursor and (found := try_page(visible(self.catalogs[kind]), cursor)) is not None:
                items, next_cursor = found
            else:
                items, next_cursor = page(visible(await self.refresh(kind, ctx)), cursor, LIST_METHODS[kind])
            return result_type(**{field: items}, next_cursor=next_cursor)

        return handler

    def _app_visible(self, request: Any, entry: Any) -> Any:
        """A listed tool as this caller sees it: without the MCP Apps UI it names if the caller could not
        read that resource (its resources/read would be refused)."""
        uris = ui_uris(entry.item)
        if not uris:
            return entry.item
        denied = set()
        for uri in uris:
            target, original = self.naming.split_uri(uri) or (entry.target, uri)
            if not self._visible(request, Access("resources/read", "resource", uri, target, original)):
                denied.add(uri)
        return without_ui(entry.item, denied) if denied else entry.item

    async def survey(
        self, timeout: float = 30.0, kinds: Sequence[Kind] = tuple(LIST_METHODS)
    ) -> tuple[dict[Kind, Catalog], dict[str, str]]:
        """Every kind (of `kinds`), listed now from every shared target, for operators (federation/lists.py)."""
        return await survey(self.upstreams.values(), self.naming, timeout, kinds)

    async def operator_call(self, name: str, arguments: dict[str, Any] | None, timeout: float = 30.0) -> Any:
        """tools/call for an operator (the admin playground): on the shared upstream and with no caller, so
        no caller's rules or limits apply (like `survey`, an operator's view). Observed as a tools/call.
        Every failure is an MCPError; `timeout` bounds the whole call, finding the tool included."""
        observed = Observed("tools/call")
        token = OBSERVED.set(observed)
        start = time.perf_counter()
        try:
            with anyio.fail_after(timeout):
                entry = self.catalogs["tool"].get(name)
                if entry is None:  # no client has listed yet (or not lately): ask the targets now
                    catalogs, failures = await self.survey(timeout, kinds=("tool",))
                    entry = catalogs["tool"].get(name)
                    if entry is None and failures:
                        down = sorted(failures)[0]
                        raise UpstreamError(down, f"could not list its tools, so {name!r} may be one: {failures[down]}")
                if entry is None:
                    raise unknown_name("tool", name)
                observed.target, observed.name = entry.target, name

                async def invoke(session: Any) -> Any:
                    return await session.call_tool(entry.original, arguments)

                result = await self._forward(Call(None), entry.target, "tools/call", invoke)
            if result.is_error:
                observed.tool_failed()
            if not self.naming.prefixed:
                return result
            return result.model_copy(update={"content": [self._expose_block(entry.target, b) for b in result.content]})
        except TimeoutError:
            observed.failed(REQUEST_TIMEOUT)
            where = f" (target '{observed.target}')" if observed.target else ""
            raise MCPError(REQUEST_TIMEOUT, f"tools/call {name} gave no answer within {timeout:g}s{where}") from None
        except MCPError as exc:
            observed.failed(exc.error.code)
            raise
        except Exception as exc:
            logger.exception("operator tools/call %s failed", name)
            observed.failed(types.INTERNAL_ERROR)
            raise MCPError(types.INTERNAL_ERROR, f"agentplex could not call {name}: {exc}") from None
        finally:
            OBSERVED.reset(token)
            observed.seconds = time.perf_counter() - start
            self._observe(None, observed)

    async def refresh(self, kind: Kind, ctx: ServerRequestContext[Any] | None = None, client: Any = None) -> Catalog:
        """That kind's catalog from every target's list, as this client sees them."""
        client = client if client is not None else self._client(ctx)
        return await self.lists.refresh(kind, [self.pool.listing(name, client) for name in self.upstreams])

    async def _lookup(self, kind: Kind, exposed: str, ctx: ServerRequestContext[Any] | None = None) -> Any:
        """Catalog entry for a name, refreshing once on a miss (a client may call without listing).

        An entry the caller may not see is unknown to it; one it may see is then admitted (rate limits).
        """
        entry = self.catalogs[kind].get(exposed)
        if entry is None:
            entry = (await self.refresh(kind, ctx)).get(exposed)
        if entry is None:
            raise unknown_name(kind, exposed)
        await self._admit(ctx, Access(ctx.method if ctx else "", kind, exposed, entry.target, entry.original))
        return entry

    async def _admit(self, ctx: ServerRequestContext[Any] | None, access: Access) -> None:
        await self._check(scope_of(ctx), access)

    def _visible(self, request: Any, access: Access) -> bool:
        """The guard's answer; a guard that fails denies (and is logged), it never breaks the request."""
        try:
            return self.guard.visible(request, access)
        except Exception:
            logger.exception("policy check failed for %s %s; denied", access.method, access.name)
            return False

    async def _check(self, request: Any, access: Access) -> None:
        """Hidden: the unknown-name error. Visible: the guard admits it or raises (rate limits)."""
        observed = OBSERVED.get()
        if observed is not None and access.kind is not None:
            observed.target = access.target
            # Only a name the catalog holds: a resource URI may be free text the client made up.
            catalog = self.catalogs.get(access.kind)  # type: ignore[arg-type]
            observed.name = access.name if catalog is not None and catalog.get(access.name) is not None else ""
        if not self._visible(request, access):
            if observed is not None:
                observed.outcome = "denied"
            if access.kind is None:  # what a method the gateway does not serve gets
                raise MCPError(types.METHOD_NOT_FOUND, "Method not found", access.method)
            if access.kind == "resource":  # what an unknown URI gets
                raise MCPError(-32002, f"Resource not found: {access.name}")
            raise unknown_name(_KIND_NOUN[access.kind or "tool"], access.name)
        await self._guard_admit(request, access)

    async def _guard_admit(self, request: Any, access: Access) -> None:
        try:
            await self.guard.admit(request, access)
        except MCPError as exc:
            observed = OBSERVED.get()
            if observed is not None:  # a limit says when to retry; anything else is a refusal
                data = exc.error.data
                observed.outcome = "rate_limited" if isinstance(data, dict) and "retryAfter" in data else "denied"
            raise
        except Exception:
            logger.exception("policy check failed for %s %s", access.method, access.name)
            raise MCPError(types.INTERNAL_ERROR, "agentplex could not check this request against its policies") from None

    def _tool_input_schema(self, name: str) -> Any:
        entry = self.catalogs["tool"].get(name)
        return entry.item.input_schema if entry is not None else None

    # -- calls -----------------------------------------------------------------------------

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        if (parked := self._parked_for(ctx, params)) is not None:
            return await parked
        entry = await self._lookup("tool", params.name, ctx)
        progress = _progress_relay(ctx)
        passed = forwarded_meta(params.meta)

        async def invoke(session: Any, **interactive: Any) -> Any:
            meta = {**passed, **(interactive.pop("meta", None) or {})}
            result = await session.call_tool(
                entry.original, params.arguments, progress_callback=progress, meta=meta or None, **interactive
            )
            if getattr(result, "is_error", False) and (observed := OBSERVED.get()) is not None:
                observed.tool_failed()
            if not self.naming.prefixed or isinstance(result, types.InputRequiredResult):
                return result
            return result.model_copy(update={"content": [self._expose_block(entry.target, b) for b in result.content]})

        return await self._interactive(ctx, params, entry.target, "tools/call", invoke)

    async def _get_prompt(self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> Any:
        if (parked := self._parked_for(ctx, params)) is not None:
            return await parked
        entry = await self._lookup("prompt", params.name, ctx)

        async def invoke(session: Any, **interactive: Any) -> Any:
            result = await session.get_prompt(entry.original, params.arguments, **interactive)
            if not self.naming.prefixed or isinstance(result, types.InputRequiredResult):
                return result
            messages = [
                m.model_copy(update={"content": self._expose_block(entry.target, m.content)}) for m in result.messages
            ]
            return result.model_copy(update={"messages": messages})

        return await self._interactive(ctx, params, entry.target, "prompts/get", invoke)

    def _expose_block(self, target: str, block: Any) -> Any:
        """Resource links and embedded resources in results point at exposed URIs, so clients can follow them."""
        if isinstance(block, types.ResourceLink):
            return block.model_copy(update={"uri": self.naming.uri(target, str(block.uri))})
        if isinstance(block, types.EmbeddedResource):
            inner = block.resource.model_copy(update={"uri": self.naming.uri(target, str(block.resource.uri))})
            return block.model_copy(update={"resource": inner})
        return block

    async def _read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        if (parked := self._parked_for(ctx, params)) is not None:
            return await parked
        target, uri = await self._resolve_uri(str(params.uri), ctx)
        await self._admit(ctx, Access(ctx.method, "resource", str(params.uri), target, uri))

        async def invoke(session: Any, **interactive: Any) -> Any:
            result = await session.read_resource(uri, **interactive)
            if uri == str(params.uri) or isinstance(result, types.InputRequiredResult):
                return result
            contents = [c.model_copy(update={"uri": params.uri}) if c.uri == uri else c for c in result.contents]
            return result.model_copy(update={"contents": contents})

        return await self._interactive(ctx, params, target, "resources/read", invoke)

    def _parked_for(self, ctx: ServerRequestContext[Any], params: Any) -> Any:
        """A 2026-07-28 client's retry answering what a parked upstream request asked: its next outcome."""
        parked = self._parked.get(params.request_state) if is_modern(ctx) else None
        if parked is None:
            return None
        parked.answer(params.input_responses or {})
        return parked.next_outcome()

    async def _interactive(
        self, ctx: ServerRequestContext[Any], params: Any, target: str, method: str, invoke: Callable[..., Any]
    ) -> Any:
        """A request that may need the client's input (sampling, elicitation, roots), in any pair of eras.

        Same era on both sides: passed through. A 2026-07-28 upstream's InputRequiredResult for a
        handshake-era client: the gateway asks the client and retries. A handshake-era upstream asking
        a 2026-07-28 client: the request is parked (federation/bridge.py).
        """
        modern = is_modern(ctx)

        async def call(session: Any) -> Any:
            if not is_modern_version(session.protocol_version):
                return await invoke(session)
            opt_in = self._log_opt_in(ctx)
            result = await invoke(
                session,
                allow_input_required=True,
                input_responses=params.input_responses if modern else None,
                request_state=params.request_state if modern else None,
                **opt_in,
            )
            for _ in range(0 if modern else 10):  # modern clients resolve it themselves and retry
                if not isinstance(result, types.InputRequiredResult):
                    return result
                asked = (result.input_requests or {}).items()
                answers = {key: await ask_client(ctx, request) for key, request in asked}
                result = await invoke(
                    session,
                    allow_input_required=True,
                    input_responses=answers,
                    request_state=result.request_state,
                    **opt_in,
                )
            if not modern and isinstance(result, types.InputRequiredResult):
                raise MCPError(types.INTERNAL_ERROR, f"target '{target}' kept asking for input after 10 rounds")
            return result

        upstream = self._upstream(target, ctx)
        if modern and self._tg is not None and not is_modern_version(upstream.protocol_version):
            parked = await self._parked.start(self._tg, lambda p: self._forward(Call(ctx, p), target, method, call))
            return await parked.next_outcome()
        return await self._forward(Call(ctx), target, method, call)

    def _log_opt_in(self, ctx: ServerRequestContext[Any]) -> dict[str, Any]:
        """`meta` for a request to a 2026-07-28 upstream, which logs only for requests that opt in: the
        caller's own opt-in (2026-07-28), else the level its session set (every level if none)."""
        if is_modern(ctx):
            level = (ctx.meta or {}).get(types.LOG_LEVEL_META_KEY)
        else:
            level = self.pool.levels.get(self._client(ctx), "debug")
        return {} if level is None else {"meta": {types.LOG_LEVEL_META_KEY: level}}


    async def _subscribe(self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> Any:
        target, uri = await self._resolve_uri(str(params.uri), ctx)
        await self._admit(ctx, Access(ctx.method, "resource", str(params.uri), target, uri))
        upstream = self._upstream(target, ctx)
        await self._forward(ctx, target, "resources/subscribe", _subscribing(upstream, uri))
        self.downstreams.subscribe(ctx, str(params.uri))
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> Any:
        target, uri = await self._resolve_uri(str(params.uri), ctx)
        await self._admit(ctx, Access(ctx.method, "resource", str(params.uri), target, uri))
        if self.downstreams.unsubscribe(ctx, str(params.uri)):  # the upstream keeps it while others want it
            upstream = self._upstream(target, ctx)
            await self._forward(ctx, target, "resources/unsubscribe", _unsubscribing(upstream, uri))
        return types.EmptyResult()

    async def _listen(self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams) -> Any:
        """A 2026-07-28 client's event stream; resources it watches are subscribed upstream meanwhile."""
        watched, denied = [], set()
        for uri in (params.notifications.resource_subscriptions or []) if params.notifications else []:
            try:
                target, upstream_uri = await self._resolve_uri(uri, ctx)
                if not self._visible(scope_of(ctx), Access(ctx.method, "resource", uri, target, upstream_uri)):
                    denied.add(uri)  # neither subscribed upstream nor heard of
                    continue
                upstream = self._upstream(target, ctx)
                if self.downstreams.watch(uri):
                    await self._forward(ctx, target, "resources/subscribe", _subscribing(upstream, upstream_uri))
                watched.append((uri, upstream, upstream_uri))
            except MCPError as exc:
                logger.info("listener watches %s, which cannot be subscribed upstream: %s", uri, exc.message)
        if denied:
            assert params.notifications is not None
            kept = [u for u in params.notifications.resource_subscriptions or [] if u not in denied]
            notifications = params.notifications.model_copy(update={"resource_subscriptions": kept})
            params = params.model_copy(update={"notifications": notifications})
        try:
            return await self._listen_handler(ctx, params)
        finally:
            for uri, upstream, upstream_uri in watched:
                if self.downstreams.unwatch(uri) and upstream.connected:
                    with anyio.CancelScope(shield=True), contextlib.suppress(MCPError):
                        await upstream.request("resources/unsubscribe", _unsubscribing(upstream, upstream_uri))

    async def _complete(self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> Any:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            entry = await self._lookup("prompt", ref.name, ctx)
            upstream_ref: Any = ref.model_copy(update={"name": entry.original})
        else:
            entry = self.catalogs["template"].get(ref.uri) or (await self.refresh("template", ctx)).get(ref.uri)
            if entry is None:
                raise unknown_name("resource template", ref.uri)
            await self._admit(ctx, Access(ctx.method, "template", ref.uri, entry.target, entry.original))
            upstream_ref = ref.model_copy(update={"uri": entry.original})
        context = params.context.arguments if params.context else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        return await self._forward(
            ctx, entry.target, "completion/complete", lambda s: s.complete(upstream_ref, argument, context)
        )

    async def _set_logging_level(self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> Any:
        """Fan the level out to every reachable target that logs; a down target is skipped. A client
        session's own upstreams not opened yet are told when they open (not the shared ones: not theirs)."""
        client = self._client(ctx)
        async with anyio.create_task_group() as tg:
            for name in self.upstreams:
                upstream = self._upstream(name, ctx, listing=True)
                if client is None or upstream is not self.upstreams[name] or self._shared_for_all(upstream):
                    tg.start_soon(set_level, upstream, params.level)
        if client is None:
            self.pool.shared_level = params.level
        if client is not None:
            self.pool.remember_level(client, params.level)
        return types.EmptyResult()

    async def _resolve_uri(self, uri: str, ctx: ServerRequestContext[Any] | None = None) -> tuple[str, str]:
        """(target, upstream uri) for an exposed resource URI: listed resources, templates, then prefix."""
        for kind in ("resource", "template"):
            entry = self.catalogs[kind].get(uri) if kind == "resource" else match_template(self.catalogs[kind], uri)
            if entry is not None:
                return entry.target, (entry.original if kind == "resource" else self._strip(entry.target, uri))
        split = self.naming.split_uri(uri)
        if split is not None:
            return split
        if len(self.upstreams) == 1:
            return next(iter(self.upstreams)), uri
        for kind in ("resource", "template"):
            catalog = await self.refresh(kind, ctx)
            entry = catalog.get(uri) if kind == "resource" else match_template(catalog, uri)
            if entry is not None:
                return entry.target, (entry.original if kind == "resource" else self._strip(entry.target, uri))
        raise MCPError(-32002, f"Resource not found: {uri}")

    def _strip(self, target: str, uri: str) -> str:
        split = self.naming.split_uri(uri)
        return split[1] if split is not None and split[0] == target else uri

    async def _forward(self, caller: ServerRequestContext[Any] | Call, target: str, method: str, call: Any) -> Any:
        """Run one upstream call on behalf of a downstream request, so its callbacks can find their way back."""
        current = caller if isinstance(caller, Call) else Call(caller)
        request = scope_of(current.ctx)
        observed = OBSERVED.get()
        name = observed.name if observed is not None and observed.target == target else ""
        try:
            with (
                self.pool.placement(self._upstream(target, current.ctx), method) as upstream,
                self.observer.upstream(request, method, target, name),
            ):
                await upstream.session()  # what a connection opened now sends as it starts is no call's
                with self.pool.on_behalf(upstream, current, request):
                    return await upstream.request(method, call)
        except UpstreamError:
            raise
        except MCPError as exc:
            raise MCPError(exc.code, f"{exc.message} (from target '{target}')", exc.error.data) from None

    # -- what upstreams send back (UpstreamEvents) -------------------------------------------


class _VirtualServer(Server[Any]):
    """Advertises list-change notifications in the handshake era: the gateway relays them."""

    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        everything = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(notification_options or everything, *args, **kwargs)


def _subscribing(upstream: Upstream, uri: str) -> Callable[[Any], Awaitable[Any]]:
    """resources/subscribe to `uri` on `upstream`'s session; a 2026-07-28 session has no such method,
    so a subscriptions/listen stream watches `uri` there instead."""

    async def subscribe(session: Any) -> Any:
        if is_modern_version(session.protocol_version):
            await upstream.watch_resource(uri)
            return types.EmptyResult()
        return await session.subscribe_resource(uri)

    return subscribe


def _unsubscribing(upstream: Upstream, uri: str) -> Callable[[Any], Awaitable[Any]]:
    """What `_subscribing` started, ended."""

    async def unsubscribe(session: Any) -> Any:
        if is_modern_version(session.protocol_version):
            upstream.unwatch_resource(uri)
            return types.EmptyResult()
        return await session.unsubscribe_resource(uri)

    return unsubscribe


def _progress_relay(ctx: ServerRequestContext[Any]) -> Any:
    async def relay(progress: float, total: float | None, message: str | None) -> None:
        with contextlib.suppress(Exception):
            await ctx.session.report_progress(progress, total, message)

    return relay


