"""The ASGI app of an AI route: OpenAI's `POST …/chat/completions` and `GET …/models`, Anthropic's
`POST …/messages`, each served by whichever provider the requested model maps to.

The request's model goes through the route's modelAliases, then picks a target (gateway/ai/targets.py);
defaults and overrides are set; the provider is called with the gateway's key (the caller's
Authorization is never forwarded) and the answer, streamed or not, comes back in the caller's format.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.ai import anthropic_provider, guard, openai_provider
from gateway.ai.guard import RegexGuard
from gateway.ai.sse import EventParser
from gateway.ai.targets import Aliases, ModelTable, ModelTarget, apply_fields, with_prompts
from gateway.ai.usage import Usage
from gateway.observability.exchange import LlmCall, Observability
from gateway.policies import TOKEN_LIMITS
from gateway.policies.timeout import Timeouts
from protocols import pooled_sockets

logger = logging.getLogger("agentplex.ai")

MAX_REQUEST = 16 * 1024 * 1024
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)  # models think slowly
_PASSED_BACK = ("retry-after", "x-request-id", "request-id")  # provider headers the caller may act on
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class AiEndpoint:
    observe: Observability | None = None  # gen_ai attributes on access lines and spans, token metrics
    # requestTimeout bounds the wait for an answer to start, failover included; backendRequestTimeout each
    # provider's; a started answer (a stream) is never cut
    timeouts: Timeouts = Timeouts()

    def __init__(
        self,
        name: str,
        models: ModelTable,
        *,
        aliases: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        prompts: tuple[list[dict[str, str]], list[dict[str, str]]] = ([], []),
        guards: tuple[list[RegexGuard], list[RegexGuard]] = ([], []),
        listed: list[str] | list[dict[str, Any]] | None = None,
        routes: Mapping[str, str] | None = None,
        fallback: str | None = "completions",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`routes`: path suffix -> completions | messages | models (`*` for the rest); a path matching
        none is `fallback` (None: not served)."""
        self.name = name
        self.models = models
        self.alias: Callable[[str], str] = Aliases(aliases or {})
        self.defaults = dict(defaults or {})
        self.overrides = dict(overrides or {})
        self.prepend, self.append = prompts
        self.request_guards, self.answer_guards = guards
        self.listed = listed if listed is not None else models.names()
        ordered = sorted((routes or {}).items(), key=lambda kv: (kv[0] == "*", -len(kv[0]), kv[0]))
        self.routes = ordered
        self.fallback = fallback
        self.tls = tls
        self.client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AiEndpoint]:
        client = httpx.AsyncClient(
            timeout=TIMEOUT,
            verify=self.tls or True,
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=128, keepalive_expiry=30.0),
            follow_redirects=False,
            trust_env=False,
        )
        pooled_sockets.install(client)  # the pool's idle check without anyio's per-request cost
        async with client:
            self.client = client
            try:
                yield self
            finally:
                self.client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        kind = self.route_type(scope["path"])
        if kind == "models":
            response: Response = self._model_list(request)
        elif kind is None:
            response = _error("completions", 404, f"{scope['path']} is not an AI endpoint here")
        elif request.method != "POST":
            response = _error(kind, 405, f"{request.method} is not allowed here (POST a request)")
        else:
            response = await self._serve(request, kind)
        await response(scope, receive, send)

    def route_type(self, path: str) -> str | None:
        """As the reference resolves it: the longest matching suffix, else `*`, else the fallback."""
        wildcard = None
        for suffix, kind in self.routes:
            if suffix == "*":
                wildcard = kind
            elif path.endswith(suffix):
                return kind
        return wildcard if wildcard is not None else self.fallback

    def _model_list(self, request: Request) -> Response:
        entries = [m if isinstance(m, dict) else {"id": m} for m in self.listed]
        if "anthropic-version" in request.headers:  # the Anthropic SDK's models.list()
            data = [{"type": "model", "id": m["id"], "display_name": m["id"], "created_at": _iso(m.get("created", 0))}
                    for m in entries]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            return JSONResponse({"data": data, "has_more": False, "first_id": first, "last_id": last})
        data = [{"id": m["id"], "object": "model", "created": m.get("created", 0), "owned_by": m.get("ownedBy", "openai")}
                for m in entries]
        return JSONResponse({"object": "list", "data": data})

    async def _serve(self, request: Request, front: str) -> Response:
        body = await _read(request)
        if body is None:
            return _error(front, 413, f"request body over {MAX_REQUEST} bytes", code="request_too_large")
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            return _error(front, 400, "LLM request body must be valid JSON", code="invalid_request_body")
        if not isinstance(parsed, dict) or not isinstance(parsed.get("model"), str):
            return _error(front, 400, "LLM request body is missing string field 'model'", code="missing_model")
        requested = self.alias(parsed["model"])
        candidates = self.models.candidates(requested)
        if not candidates:
            return _error(front, 404, "Model not found", code="model_not_found")
        parsed = with_prompts(front, apply_fields(parsed, self.defaults, self.overrides), self.prepend, self.append)
        if self.request_guards:
            try:
                guard.apply(self.request_guards, guard.request_texts(front, parsed))
            except guard.Rejected as refused:
                return refused.response
        response: Response | None = None
        deadline = time.monotonic() + self.timeouts.request if self.timeouts.request else None
        for attempt, (asked, target) in enumerate(candidates, start=1):
            bounds = [b for b in (self.timeouts.backend, deadline and deadline - time.monotonic()) if b is not None]
            if bounds and min(bounds) <= 0:
                break
            response, failed = await self._call(request, front, parsed, asked, target, min(bounds) if bounds else None)
            if len(candidates) == 1:
                return response
            if not failed:
                self.models.succeeded(asked)
                return response
            # a virtual model's failover: this target rests a while, the next one is tried
            self.models.failed(asked, _seconds(response.headers.get("retry-after")))
            if attempt < len(candidates):
                logger.info("ai route %s: %s answered %s, failing over", self.name, asked, response.status_code)
        if response is None:  # requestTimeout passed before a target could be tried
            return _error(front, 504, f"no answer for model {requested} within requestTimeout")
        return response

    async def _call(
        self, request: Request, front: str, parsed: dict[str, Any], asked: str, target: ModelTarget, limit: float | None
    ) -> tuple[Response, bool]:
        """One provider's answer, and whether it failed so that another target may be tried (429, 5xx, no
        answer). A stream that has begun is the answer: nothing is retried once bytes reach the caller."""
        body = apply_fields(parsed, target.defaults, target.overrides)
        model = target.outgoing_model(asked)
        usage = Usage(target.kind)
        started = time.perf_counter()

        def observed() -> None:
            if self.observe is not None:
                self._observed(request.scope, parsed["model"], target, usage, started)

        outgoing, translate = _plan(front, target, body, model)
        assert self.client is not None
        headers = {"content-type": "application/json", **target.headers()}
        if target.kind == "anthropic" and "anthropic-beta" in request.headers:
            headers["anthropic-beta"] = request.headers["anthropic-beta"]
        upstream = self.client.build_request("POST", _url(target.url), content=json.dumps(outgoing), headers=headers)
        try:
            with anyio.fail_after(limit):
                answer = await self.client.send(upstream, stream=True)
        except TimeoutError:
            logger.warning("ai route %s: model %s at %s: no answer within %g s", self.name, asked, target.url, limit)
            observed()
            return _error(front, 504, f"provider for model {asked} did not answer within {limit:g} s"), True
        except httpx.HTTPError as exc:
            logger.warning("ai route %s: model %s at %s: %s", self.name, asked, target.url, exc)
            observed()
            return _error(front, 502, f"provider for model {asked} unreachable: {type(exc).__name__}"), True
        if answer.status_code >= 400:
            refused = await _provider_error(front, target, answer)
            observed()
            return refused, answer.status_code == 429 or answer.status_code >= 500
        if outgoing.get("stream"):

            def finished() -> None:
                _charge(request.scope, usage)
                observed()

            streamed = _stream(answer, translate, usage, finished)
            return StreamingResponse(streamed, media_type="text/event-stream", headers=_SSE_HEADERS), False
        try:
            data = json.loads(await answer.aread())
        finally:
            await answer.aclose()
        usage.answer(data)
        _charge(request.scope, usage)
        observed()
        shown = translate(data) if translate is not None else data
        if self.answer_guards:
            try:
                guard.apply(self.answer_guards, guard.answer_texts(front, shown))
            except guard.Rejected as refused:
                return refused.response, False
        return JSONResponse(shown, headers=_passed_back(answer)), False


    def _observed(self, scope: Scope, requested: str, target: ModelTarget, usage: Usage, started: float) -> None:
        assert self.observe is not None
        call = LlmCall(
            provider=PROVIDER_NAMES[target.kind],
            model=target.name,
            request_model=requested,
            response_model=usage.model,
            input_tokens=usage.input if usage.seen else None,
            output_tokens=usage.output if usage.seen else None,
            first_token=usage.first_token - started if usage.first_token is not None else None,
        )
        self.observe.llm_call(self.name, scope, call)


PROVIDER_NAMES = {"openAI": "openai", "anthropic": "anthropic"}  # gen_ai.provider.name's values


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    """A target's URL parsed once (httpx's parsing is a measurable part of each request)."""
    return httpx.URL(url)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _read(request: Request) -> bytes | None:
    """The request body, or None past MAX_REQUEST (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST:
            return None
    return bytes(body)


def _plan(front: str, target: ModelTarget, body: dict[str, Any], model: str) -> tuple[dict[str, Any], Any]:
    """The provider's request, and how its answer becomes the caller's: None (as is), a function of the
    JSON answer, or (streams) a function of the provider's events to the caller's bytes."""
    stream = bool(body.get("stream"))
    if front == "completions" and target.kind == "anthropic":
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        out = anthropic_provider.messages_request(body, model)
        if stream:
            return out, lambda events: anthropic_provider.chat_chunks(events, include_usage)
        return out, anthropic_provider.chat_response
    if front == "messages" and target.kind == "openAI":
        out = openai_provider.chat_request(body, model)
        if stream:
            return out, lambda events: openai_provider.message_events(events, model)
        return out, lambda data: openai_provider.messages_response(data, model)
    return {**body, "model": model}, None


async def _stream(
    answer: httpx.Response, translate: Any, usage: Usage, finished: Callable[[], None]
) -> AsyncIterator[bytes]:
    """The provider's stream to the caller, as is or translated, its usage counted on the way."""
    parser = EventParser()

    async def provider_events() -> AsyncIterator[Any]:
        async for chunk in answer.aiter_bytes():
            for event in parser.feed(chunk):
                usage.event(event)
                yield event
        for event in parser.close():
            usage.event(event)
            yield event

    try:
        if translate is None:
            metering = True
            async for chunk in answer.aiter_bytes():
                yield chunk
                if metering:
                    try:
                        for event in parser.feed(chunk):
                            usage.event(event)
                    except ValueError:  # an event too large to hold: passed on, but no longer counted
                        metering = False
        else:
            async for out in translate(provider_events()):
                yield out
    finally:
        await answer.aclose()
        finished()


def _charge(scope: Scope, usage: Usage) -> None:
    """The tokens limits that let the request through are charged what its answer used."""
    state = scope.get("state")
    for limit, bucket in (state.get(TOKEN_LIMITS, ()) if isinstance(state, dict) else ()):
        limit.charge(bucket, usage.total)


async def _provider_error(front: str, target: ModelTarget, answer: httpx.Response) -> Response:
    """The provider's refusal with its status (and Retry-After), in the caller's format."""
    try:
        raw = await answer.aread()
    finally:
        await answer.aclose()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = {"error": {"message": raw.decode("utf-8", "replace")[:500]}}
    if front == "completions" and target.kind == "anthropic":
        body = anthropic_provider.chat_error(answer.status_code, body)
    elif front == "messages" and target.kind == "openAI":
        body = openai_provider.messages_error(answer.status_code, body)
    return JSONResponse(body, status_code=answer.status_code, headers=_passed_back(answer))


def _passed_back(answer: httpx.Response) -> dict[str, str]:
    return {k: answer.headers[k] for k in _PASSED_BACK if k in answer.headers}


def _error(front: str, status: int, message: str, code: str | None = None) -> JSONResponse:
    """The gateway's own refusals: OpenAI's error shape as the reference answers, Anthropic's on /messages."""
    if front == "messages":
        body: dict[str, Any] = openai_provider.messages_error(status, {"error": {"message": message}})
    else:
        kind = "invalid_request_error" if status < 500 else "api_error"
        body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status)
