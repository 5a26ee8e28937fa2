"""The admin web UI in a real headless Chromium (npm's @sparticuz/chromium, tests/chromium.py, driven over
the DevTools protocol by Playwright), against a real Runtime with real upstreams: stdio and
streamable-HTTP MCP servers and an a2a-sdk agent.

Playwright's async API runs on the test's own event loop, so the gateway keeps serving while the page waits.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page, async_playwright

from tests.chromium import chromium
from tests.conftest import PY, ROOT, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve
from tests.gateway.test_admin import gateway_url, running, web_upstream

pytestmark = pytest.mark.anyio

T = TypeVar("T")
WAIT = 20  # seconds any one thing on a page may take to appear
POLL = 0.1
TYPED = f"""
  - name: typed
    stdio: {{ cmd: "{PY}", args: ["-m", "tests.fixtures.typed_tools"], cwd: "{ROOT}" }}"""


@pytest.fixture(scope="module")
def devtools() -> Iterator[str]:
    """One Chromium for the module (its DevTools endpoint); killed with its children afterwards."""
    with chromium() as endpoint:
        yield endpoint


@pytest.fixture
async def page(devtools: str) -> AsyncIterator[Page]:
    """A page in a fresh browser context (no cookies from other tests) of the module's Chromium."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(devtools, timeout=WAIT * 1000)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1000})
            context.set_default_timeout(WAIT * 1000)
            context.set_default_navigation_timeout(WAIT * 1000)
            try:
                yield await context.new_page()
            finally:
                await context.close()
        finally:
            await browser.close()  # over CDP this only disconnects; the devtools fixture ends Chromium


async def until(condition: Callable[[], Awaitable[T]], what: str) -> T:
    """Poll `condition` (a page may replace what it read meanwhile: that is a retry, not a failure)."""
    with anyio.move_on_after(WAIT):
        for _ in range(int(WAIT / POLL) + 1):
            with contextlib.suppress(PlaywrightError):
                if result := await condition():
                    return result
            await anyio.sleep(POLL)
    pytest.fail(f"never saw {what} within {WAIT}s")


async def text(locator: Locator) -> str:
    """What the element shows, as Selenium's `.text` gave it (rendered text, trimmed)."""
    return (await locator.inner_text()).strip()


async def text_of(scope: Page | Locator, css: str) -> str:
    return await text(scope.locator(css).first)


async def present(scope: Page | Locator, css: str) -> bool:
    return await scope.locator(css).count() > 0


def shows(page: Page, css: str, expected: str) -> Callable[[], Awaitable[bool]]:
    """A condition for `until`: the element at `css` shows exactly `expected`."""

    async def check() -> bool:
        return await text_of(page, css) == expected

    return check


def link(page: Page, name: str) -> Locator:
    """The link whose whole text is `name` (Selenium's By.LINK_TEXT)."""
    return page.get_by_role("link", name=name, exact=True)


async def tool_calls(page: Page) -> dict[str, int]:
    """The dashboard's tool-call table, as {tool: calls}, read in one step (the page refreshes it)."""
    rows = await page.evaluate(
        "() => [...document.querySelectorAll('#tool-calls tbody tr:not(.empty)')]"
        ".map((row) => [...row.cells].map((cell) => cell.textContent))"
    )
    return {cells[1]: int(cells[3]) for cells in rows}


async def admin_cookie(page: Page, base: str) -> dict[str, Any] | None:
    return next((dict(c) for c in await page.context.cookies(base) if c["name"] == "agentplex-admin"), None)


@contextlib.asynccontextmanager
async def gateway_with_everything(tmp_path: Path) -> AsyncIterator[tuple[Any, str]]:
    """stdio `one`, streamable-HTTP `web`, stdio `typed`, and an A2A route with the echo agent."""
    with web_upstream() as web:
        async with serve(lambda base: echo_agent(base, "Echo")) as echo:
            path = tmp_path / "gw.yaml"
            path.write_text(
                "config: {adminAddr: 127.0.0.1:0, statsAddr: 127.0.0.1:0}\n"
                f"mcp:\n  port: 0\n  targets:{stdio_target('one')}\n  - name: web\n    mcp: {{host: '{web}'}}{TYPED}\n"
                "a2a:\n  port: 0\n  registry: {sqlite: null, healthInterval: 0}\n"
                f"  agents: [{{name: echo, url: '{echo.url}'}}]\n"
            )
            async with running(path) as (runtime, _):
                yield runtime, f"http://127.0.0.1:{runtime.admin_port}"


async def test_an_operator_finds_a_tool_calls_it_in_the_playground_and_watches_the_counters(
    tmp_path: Path, page: Page
) -> None:
    async with gateway_with_everything(tmp_path) as (runtime, base):
        # the dashboard
        await page.goto(f"{base}/ui")
        assert "Ready" in await text_of(page, "#readiness")
        health = {
            await row.get_attribute("data-target"): await text_of(row, ".health")
            for row in await page.locator("table.targets tr[data-target]").all()
        }
        assert health == {"one": "up", "web": "up", "typed": "up"}
        assert await text_of(page, "[data-stat='now.targetsUp']") == "3"
        assert await text_of(page, "[data-stat='now.agents']") == "1"
        assert await tool_calls(page) == {}

        # find a tool in the catalog and call it
        await link(page, "Catalog").click()
        await until(lambda: present(page, "#search"), "the search box")
        await page.locator("#search").press_sequentially(
            "add two"
        )  # every word must match: web_add's is "Add two integers"

        async def only_the_adds() -> bool:
            rows = await page.locator("tr.item").all()
            visible = [await text_of(row, "code") for row in rows if await row.is_visible()]
            return sorted(visible) == ["one_add", "web_add"]

        await until(only_the_adds, "only the two add tools")
        row = page.locator("tr.item").filter(has_text="web_add").first
        assert await text(row.locator("td").nth(1)) == "web"  # its origin
        await row.locator("a.try").click()

        await until(lambda: present(page, "#call-form"), "the playground form")
        assert await page.locator("#arg-a").get_attribute("data-kind") == "integer"
        assert await page.locator("#arg-a").get_attribute("type") == "number"
        await page.locator("#arg-a").press_sequentially("20")
        await page.locator("#arg-b").press_sequentially("22")
        await page.locator("#call").click()
        await until(shows(page, "#result-status", "ok"), "the call's result")
        assert await text_of(page, "#result pre.block") == "42"

        # counted once
        await page.goto(f"{base}/ui")
        assert await tool_calls(page) == {"web_add": 1}
        # A client's call through the gateway shows up on the open page, without a reload.
        async with Client(gateway_url(runtime), mode="legacy", cache=None) as client:
            assert (await client.call_tool("web_add", {"a": 1, "b": 2})).content[0].text == "3"

            async def counted_twice() -> bool:
                return await tool_calls(page) == {"web_add": 2}

            await until(counted_twice, "the live count reach 2")
            await until(shows(page, "[data-stat='now.sessions']", "1"), "1 session")

            await page.reload()
            (row,) = await page.locator("#sessions tbody tr").all()
            route, sid, transport, caller, age = [await text(cell) for cell in await row.locator("td").all()]
            assert (route, transport, caller) == ("mcp", "streamable-http", "—") and sid and age.endswith(" s")

        # the agents page
        await link(page, "Agents").click()
        await until(lambda: present(page, "tr[data-agent='echo']"), "the echo agent")
        agent = page.locator("tr[data-agent='echo']").first
        assert await text_of(agent, ".health") == "up"
        assert "a2a" in await text(agent)


async def test_the_playground_form_sends_typed_arguments_and_shows_tool_errors(tmp_path: Path, page: Page) -> None:
    async with gateway_with_everything(tmp_path) as (_, base):
        # typed fields
        await page.goto(f"{base}/ui/playground")
        await page.locator("#tool-picker").select_option(label="mcp · typed_configure")
        await until(lambda: present(page, "#arg-mode"), "the configure form")
        kinds = {
            await field.get_attribute("data-arg"): await field.get_attribute("data-kind")
            for field in await page.locator("[data-arg]").all()
        }
        assert kinds == {"mode": "enum", "verbose": "boolean", "tags": "json", "ratio": "number", "note": "string"}
        assert await page.locator("#arg-ratio").input_value() == "0.5"  # the schema's default
        await page.locator("#arg-mode").select_option(label='"safe"')
        await page.locator("#arg-verbose").click()
        await page.locator("#arg-tags").press_sequentially('["a", "b"]')
        await page.locator("#call").click()
        await until(shows(page, "#result-status", "ok"), "the configure result")
        answer = json.loads(await text_of(page, "#result pre.block"))
        # note was left empty: not sent, so the tool's own default (None) applied
        assert answer == {"mode": "safe", "verbose": True, "tags": ["a", "b"], "ratio": 0.5, "note": None}

        # bad JSON is caught in the page
        tags = page.locator("#arg-tags")
        await tags.clear()
        await tags.press_sequentially("[not json")
        await page.locator("#call").click()
        await until(lambda: present(page, "#result-error"), "the form's error")
        assert await text_of(page, "#result-error") == "tags is not valid JSON"

        # a tool error
        await page.goto(f"{base}/ui/playground?route=mcp&tool=typed_refuse")
        await page.locator("#arg-reason").press_sequentially("no")
        await page.locator("#call").click()
        await until(shows(page, "#result-status", "the tool reported an error"), "isError shown")
        shown, css = (
            await text_of(page, "#result pre.block"),
            await page.locator("#result-status").get_attribute("class"),
        )
        assert "refused: no" in shown and css == "bad"

        # no fields means a JSON box
        await page.goto(f"{base}/ui/playground?route=mcp&tool=one_whoami")  # whoami() takes nothing
        assert not await present(page, "[data-arg]")
        box = page.locator("#arguments-json")
        await box.press_sequentially("[1]")
        await page.locator("#call").click()
        await until(lambda: present(page, "#result-error"), "the form's error")
        refused = await text_of(page, "#result-error")
        await box.clear()
        await page.locator("#call").click()
        await until(shows(page, "#result-status", "ok"), "whoami's result")
        whoami = await text_of(page, "#result pre.block")
        assert refused == "the JSON arguments must be an object" and whoami == "one"

        # upstream markup stays text
        for shown_at in ("/ui/catalog", "/ui/playground?route=mcp&tool=typed_shout"):
            await page.goto(base + shown_at)

            async def described_as_text() -> bool:
                return "Shout <script>" in await text_of(page, "main")

            await until(described_as_text, "the description as text")
            assert await page.evaluate("() => window.pwned === undefined")
            assert not await present(page, "main img")


async def test_with_an_admin_token_the_ui_asks_for_it_once(tmp_path: Path, page: Page) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "config: {adminAddr: 127.0.0.1:0, statsAddr: null, adminToken: s3cret-admin}\n"
        f"mcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    )
    async with running(path) as (runtime, admin):
        base = f"http://127.0.0.1:{runtime.admin_port}"

        # sign in
        await page.goto(f"{base}/ui/catalog")
        assert page.url == f"{base}/ui/login"
        await page.locator("[name='token']").press_sequentially("wrong")
        await page.locator("form button").first.click()
        await until(lambda: present(page, "#login-failed"), "the refusal")
        await page.locator("[name='token']").press_sequentially("s3cret-admin")
        await page.locator("form button").first.click()
        await until(lambda: present(page, "#counters"), "the dashboard")
        assert "Counters since start are off" in await text_of(page, "#counters")  # statsAddr: null
        cookie = await admin_cookie(page, base)
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "s3cret-admin" not in cookie["value"]
        await page.goto(f"{base}/ui/playground?route=mcp&tool=echo")
        await page.locator("#arg-text").press_sequentially("hi")
        await page.locator("#call").click()  # POST /call with the cookie
        await until(shows(page, "#result-status", "ok"), "the call's result")
        assert await text_of(page, "#result pre.block") == "one: hi"
        signed_in = await admin_cookie(page, base)
        assert signed_in is not None

        # sign out
        await page.locator("#logout").click()

        async def on_the_sign_in_page() -> bool:
            return page.url == f"{base}/ui/login"

        await until(on_the_sign_in_page, "the sign-in page")
        # The id the browser held is void now, wherever it is replayed from.
        assert (await admin.get("/stats", cookies={"agentplex-admin": signed_in["value"]})).status_code == 401
        # The JSON API still wants the token from anything that has not signed in.
        assert (await admin.get("/stats")).status_code == 401
        assert (await admin.get("/ui")).headers["location"] == "/ui/login"


async def test_the_config_page_reloads_the_file_and_lists_what_is_wrong_with_it(tmp_path: Path, page: Page) -> None:
    path = tmp_path / "gw.yaml"
    good = f"config: {{adminAddr: 127.0.0.1:0, statsAddr: null}}\nmcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    path.write_text(good)
    async with running(path) as (runtime, _):
        base = f"http://127.0.0.1:{runtime.admin_port}"
        await page.goto(f"{base}/ui/config")
        assert '"prefixMode": "conditional"' in await text_of(page, "#config")
        path.write_text(good.replace("port: 0\n", "port: 0\n  prefixMode: sometimes\n"))

        # a reload refused
        await page.locator("#reload").click()
        await until(lambda: present(page, "#reload-problems li"), "the problems")
        problems = [await text(item) for item in await page.locator("#reload-problems li").all()]
        assert (
            f"{path}: mcp.prefixMode: invalid value 'sometimes' (expected one of: conditional, always, never)"
            in problems
        )
        assert runtime.generation == 1
        path.write_text(good.replace("port: 0\n", "port: 0\n  prefixMode: always\n"))

        # a reload applied
        await page.locator("#reload").click()

        async def generation_2() -> bool:
            return "config generation 2" in await text_of(page, ".generation")

        await until(generation_2, "the page for generation 2")
        assert '"prefixMode": "always"' in await text_of(page, "#config")
