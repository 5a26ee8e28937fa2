"""`retry` and `timeout` on plain HTTP and A2A routes: real backends on loopback that fail, stall or stream."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, http_route_yaml, run_gateway
from tests.fixtures.a2a_agent import echo_agent, serve

pytestmark = pytest.mark.anyio


class Backend:
    """Counts hits per path. `/api/fail/N` answers 503 to its first N hits, then 200; `/api/slow/S` waits
    S seconds on its first hit only; `/api/events` sends an event, pauses 1.5 s, sends another."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[bytes] = []

    def app(self, base: str = "") -> Starlette:
        async def fail(request: Request) -> Response:
            path, body = request.url.path, await request.body()
            self.hits[path] += 1
            self.bodies.append(body)
            if self.hits[path] <= int(request.path_params["n"]):
                return JSONResponse({"failed": self.hits[path]}, status_code=503)
            return JSONResponse({"ok": self.hits[path], "body": body.decode()})

        async def slow(request: Request) -> Response:
            self.hits[request.url.path] += 1
            if self.hits[request.url.path] == 1:
                await anyio.sleep(float(request.path_params["seconds"]))
            return JSONResponse({"ok": self.hits[request.url.path]})

        async def events(request: Request) -> StreamingResponse:
            async def stream() -> AsyncIterator[bytes]:
                yield b"data: first\n\n"
                await anyio.sleep(1.5)
                yield b"data: second\n\n"

            return StreamingResponse(stream(), media_type="text/event-stream")

        methods = ["GET", "POST", "PUT"]
        return Starlette(
            routes=[
                Route("/api/fail/{n:int}", fail, methods=methods),
                Route("/api/slow/{seconds}", slow, methods=methods),
                Route("/api/events", events),
            ]
        )


@contextlib.asynccontextmanager
async def setup(policies: str) -> AsyncIterator[tuple[Backend, httpx.AsyncClient]]:
    backend = Backend()
    async with (
        serve(backend.app) as running,  # type: ignore[arg-type]
        run_gateway(http_route_yaml(running.url, policies)) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=20) as http,
    ):
        yield backend, http


RETRY = "{retry: {attempts: 3, codes: [503]}}"


async def test_a_get_is_retried_on_a_listed_status_until_it_succeeds() -> None:
    async with setup(RETRY) as (backend, http):
        answer = await http.get("/api/fail/2")
        assert answer.status_code == 200 and answer.json()["ok"] == 3
        assert backend.hits["/api/fail/2"] == 3


async def test_when_the_attempts_run_out_the_last_answer_passes_through() -> None:
    async with setup(RETRY) as (backend, http):
        answer = await http.get("/api/fail/9")
        assert answer.status_code == 503 and answer.json() == {"failed": 3}
        assert backend.hits["/api/fail/9"] == 3


async def test_a_post_that_reached_the_backend_is_not_retried() -> None:
    async with setup(RETRY) as (backend, http):
        answer = await http.post("/api/fail/1", content=b"order one pizza")
        assert answer.status_code == 503
        assert backend.hits["/api/fail/1"] == 1


async def test_an_idempotent_request_is_replayed_with_its_body_but_not_a_large_one() -> None:
    async with setup(RETRY) as (backend, http):
        answer = await http.put("/api/fail/1", content=b"small")
        assert answer.json() == {"ok": 2, "body": "small"} and backend.bodies == [b"small", b"small"]
        large = b"x" * (64 * 1024 + 1)  # over the replay buffer: sent once
        assert (await http.put("/api/fail/5", content=large)).status_code == 503
        assert backend.hits["/api/fail/5"] == 1 and backend.bodies[-1] == large


async def test_backoff_spaces_the_attempts() -> None:
    async with setup("{retry: {attempts: 3, backoff: 300ms, codes: [503]}}") as (_, http):
        start = time.monotonic()
        assert (await http.get("/api/fail/2")).status_code == 200
        assert 0.55 < time.monotonic() - start < 10  # two pauses of 300 ms


async def test_a_post_is_retried_when_the_backend_was_not_listening(caplog: pytest.LogCaptureFixture) -> None:
    """Connection refused: the request never reached the backend, so even a POST may be tried again."""
    caplog.set_level(logging.INFO, "agentplex.retry")
    port, backend = free_port(), Backend()
    policies = "{retry: {attempts: 20, backoff: 200ms, codes: []}}"
    async with (
        run_gateway(http_route_yaml(f"127.0.0.1:{port}", policies)) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=20) as http,
        anyio.create_task_group() as tg,
    ):
        answers: list[httpx.Response] = []

        async def post() -> None:
            answers.append(await http.post("/api/fail/0", content=b"once"))

        tg.start_soon(post)
        with anyio.fail_after(10):
            while "ConnectError" not in caplog.text:  # the first attempt found nobody listening
                await anyio.sleep(0.02)
        server = uvicorn.Server(uvicorn.Config(backend.app(), host="127.0.0.1", port=port, log_level="warning"))
        tg.start_soon(server.serve)
        with anyio.fail_after(15):
            while not answers:
                await anyio.sleep(0.02)
        server.should_exit = True
    assert answers[0].json() == {"ok": 1, "body": "once"} and backend.hits["/api/fail/0"] == 1


async def test_a_slow_backend_is_504_within_the_backend_timeout() -> None:
    async with setup("{timeout: {backendRequestTimeout: 300ms}}") as (_, http):
        start = time.monotonic()
        answer = await http.get("/api/slow/5")
        assert answer.status_code == 504 and time.monotonic() - start < 3
        assert answer.json()["error"] == "backend 'api' did not answer within 0.3 s"


async def test_an_attempt_that_times_out_is_retried_when_504_is_listed() -> None:
    policies = "{timeout: {backendRequestTimeout: 300ms}, retry: {attempts: 2, codes: [504]}}"
    async with setup(policies) as (backend, http):
        answer = await http.get("/api/slow/5")  # only the first hit is slow
        assert answer.status_code == 200 and backend.hits["/api/slow/5"] == 2


async def test_the_request_timeout_bounds_all_the_attempts() -> None:
    policies = "{timeout: {requestTimeout: 1s}, retry: {attempts: 10, backoff: 400ms, codes: [503]}}"
    async with setup(policies) as (backend, http):
        start = time.monotonic()
        answer = await http.get("/api/fail/99")
        assert answer.status_code == 504 and time.monotonic() - start < 4
        assert answer.json()["error"] == "backend 'api' did not answer within 1 s (requestTimeout)"
        assert 2 <= backend.hits["/api/fail/99"] <= 4


async def test_a_stream_that_has_started_is_not_cut_by_either_timeout() -> None:
    async with setup("{timeout: {requestTimeout: 500ms, backendRequestTimeout: 500ms}}") as (_, http):
        async with http.stream("GET", "/api/events") as answer:
            assert answer.status_code == 200
            events = [line async for line in answer.aiter_lines() if line.startswith("data:")]
        assert events == ["data: first", "data: second"]  # the second came 1.5 s in


async def test_an_a2a_route_honours_the_request_timeout() -> None:
    async with serve(echo_agent) as echo:
        yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - name: echo
      matches: [{{path: {{pathPrefix: /echo}}}}]
      policies: {{a2a: {{}}, urlRewrite: {{path: {{prefix: /}}}}, timeout: {{requestTimeout: 400ms}}, retry: {{attempts: 2, codes: [503]}}}}
      backends: [{{host: "{echo.url}"}}]
"""
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=20) as http:
            message = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "slow"}]}
            rpc = {"jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": {"message": message}}
            start = time.monotonic()
            answer = await http.post(f"http://127.0.0.1:{gw.port}/echo/", json=rpc, headers={"A2A-Version": "1.0"})
            assert answer.status_code == 504 and time.monotonic() - start < 5
            error = json.loads(answer.text)["error"]
            assert error["message"] == "agent 'echo' did not answer within 0.4 s (requestTimeout)"
