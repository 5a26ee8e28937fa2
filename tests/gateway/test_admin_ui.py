"""The admin web UI in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium),
against a real Runtime with real upstreams: stdio and streamable-HTTP MCP servers and an a2a-sdk agent.

The browser runs in a worker thread (Selenium blocks) while the gateway serves on this event loop.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import PY, ROOT, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve
from tests.gateway.test_admin import gateway_url, running, web_upstream

pytestmark = pytest.mark.anyio

WAIT = 20  # seconds any one thing on a page may take to appear
TYPED = f"""
  - name: typed
    stdio: {{ cmd: "{PY}", args: ["-m", "tests.fixtures.typed_tools"], cwd: "{ROOT}" }}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(
            "the admin UI tests need Chromium and ChromeDriver (Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # this machine's closed network refuses Chromium's own calls
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


async def in_browser(step: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking Selenium step in a worker thread, so the gateway keeps serving meanwhile."""
    return await anyio.to_thread.run_sync(step, *args)


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Poll `condition` (a page may replace what it read meanwhile: that is a retry, not a failure)."""
    wait = WebDriverWait(driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message=f"never saw {what}")


def text_of(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def tool_calls(driver: WebDriver) -> dict[str, int]:
    """The dashboard's tool-call table, as {tool: calls}, read in one step (the page refreshes it)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#tool-calls tbody tr:not(.empty)')]"
        ".map((row) => [...row.cells].map((cell) => cell.textContent))"
    )
    return {cells[1]: int(cells[3]) for cells in rows}


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
    tmp_path: Path, browser: WebDriver
) -> None:
    async with gateway_with_everything(tmp_path) as (runtime, base):

        def dashboard(driver: WebDriver) -> None:
            driver.get(f"{base}/ui")
            assert "Ready" in text_of(driver, "#readiness")
            health = {
                row.get_attribute("data-target"): row.find_element(By.CSS_SELECTOR, ".health").text
                for row in driver.find_elements(By.CSS_SELECTOR, "table.targets tr[data-target]")
            }
            assert health == {"one": "up", "web": "up", "typed": "up"}
            assert text_of(driver, "[data-stat='now.targetsUp']") == "3"
            assert text_of(driver, "[data-stat='now.agents']") == "1"
            assert tool_calls(driver) == {}

        await in_browser(dashboard, browser)

        def find_and_call(driver: WebDriver) -> str:
            driver.find_element(By.LINK_TEXT, "Catalog").click()
            search = until(driver, lambda d: d.find_element(By.ID, "search"), "the search box")
            search.send_keys("add two")  # every word must match: web_add's description is "Add two integers"
            visible = lambda d: [  # noqa: E731
                row.find_element(By.TAG_NAME, "code").text
                for row in d.find_elements(By.CSS_SELECTOR, "tr.item")
                if row.is_displayed()
            ]
            until(driver, lambda d: sorted(visible(d)) == ["one_add", "web_add"], "only the two add tools")
            row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "tr.item") if "web_add" in r.text)
            assert row.find_elements(By.TAG_NAME, "td")[1].text == "web"  # its origin
            row.find_element(By.CSS_SELECTOR, "a.try").click()

            until(driver, lambda d: d.find_elements(By.ID, "call-form"), "the playground form")
            assert driver.find_element(By.ID, "arg-a").get_attribute("data-kind") == "integer"
            assert driver.find_element(By.ID, "arg-a").get_attribute("type") == "number"
            driver.find_element(By.ID, "arg-a").send_keys("20")
            driver.find_element(By.ID, "arg-b").send_keys("22")
            driver.find_element(By.ID, "call").click()
            until(driver, lambda d: text_of(d, "#result-status") == "ok", "the call's result")
            return text_of(driver, "#result pre.block")

        assert await in_browser(find_and_call, browser) == "42"

        def counted_once(driver: WebDriver) -> None:
            driver.get(f"{base}/ui")
            assert tool_calls(driver) == {"web_add": 1}

        await in_browser(counted_once, browser)
        # A client's call through the gateway shows up on the open page, without a reload.
        async with Client(gateway_url(runtime), mode="legacy", cache=None) as client:
            assert (await client.call_tool("web_add", {"a": 1, "b": 2})).content[0].text == "3"
            await in_browser(
                lambda d: until(d, lambda d: tool_calls(d) == {"web_add": 2}, "the live count reach 2"), browser
            )
            await in_browser(
                lambda d: until(d, lambda d: text_of(d, "[data-stat='now.sessions']") == "1", "1 session"), browser
            )

            def session_listed(driver: WebDriver) -> list[str]:
                driver.refresh()
                (row,) = driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
                return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]

            route, sid, transport, caller, age = await in_browser(session_listed, browser)
            assert (route, transport, caller) == ("mcp", "streamable-http", "—") and sid and age.endswith(" s")

        def agents(driver: WebDriver) -> None:
            driver.find_element(By.LINK_TEXT, "Agents").click()
            row = until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "tr[data-agent='echo']"), "the echo agent")
            assert row.find_element(By.CSS_SELECTOR, ".health").text == "up"
            assert "a2a" in row.text

        await in_browser(agents, browser)


async def test_the_playground_form_sends_typed_arguments_and_shows_tool_errors(
    tmp_path: Path, browser: WebDriver
) -> None:
    async with gateway_with_everything(tmp_path) as (_, base):

        def typed(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/ui/playground")
            Select(driver.find_element(By.ID, "tool-picker")).select_by_visible_text("mcp · typed_configure")
            until(driver, lambda d: d.find_elements(By.ID, "arg-mode"), "the configure form")
            kinds = {
                e.get_attribute("data-arg"): e.get_attribute("data-kind")
                for e in driver.find_elements(By.CSS_SELECTOR, "[data-arg]")
            }
            assert kinds == {"mode": "enum", "verbose": "boolean", "tags": "json", "ratio": "number", "note": "string"}
            assert driver.find_element(By.ID, "arg-ratio").get_attribute("value") == "0.5"  # the schema's default
            Select(driver.find_element(By.ID, "arg-mode")).select_by_visible_text('"safe"')
            driver.find_element(By.ID, "arg-verbose").click()
            driver.find_element(By.ID, "arg-tags").send_keys('["a", "b"]')
            driver.find_element(By.ID, "call").click()
            until(driver, lambda d: text_of(d, "#result-status") == "ok", "the configure result")
            return json.loads(text_of(driver, "#result pre.block"))

        answer = await in_browser(typed, browser)
        # note was left empty: not sent, so the tool's own default (None) applied
        assert answer == {"mode": "safe", "verbose": True, "tags": ["a", "b"], "ratio": 0.5, "note": None}

        def bad_json_is_caught_in_the_page(driver: WebDriver) -> str:
            tags = driver.find_element(By.ID, "arg-tags")
            tags.clear()
            tags.send_keys("[not json")
            driver.find_element(By.ID, "call").click()
            until(driver, lambda d: d.find_elements(By.ID, "result-error"), "the form's error")
            return text_of(driver, "#result-error")

        assert await in_browser(bad_json_is_caught_in_the_page, browser) == "tags is not valid JSON"

        def tool_error(driver: WebDriver) -> tuple[str, str]:
            driver.get(f"{base}/ui/playground?route=mcp&tool=typed_refuse")
            driver.find_element(By.ID, "arg-reason").send_keys("no")
            driver.find_element(By.ID, "call").click()
            until(driver, lambda d: text_of(d, "#result-status") == "the tool reported an error", "isError shown")
            return text_of(driver, "#result pre.block"), driver.find_element(By.ID, "result-status").get_attribute(
                "class"
            )

        text, css = await in_browser(tool_error, browser)
        assert "refused: no" in text and css == "bad"

        def no_fields_means_a_json_box(driver: WebDriver) -> tuple[str, str]:
            driver.get(f"{base}/ui/playground?route=mcp&tool=one_whoami")  # whoami() takes nothing
            assert not driver.find_elements(By.CSS_SELECTOR, "[data-arg]")
            box = driver.find_element(By.ID, "arguments-json")
            box.send_keys("[1]")
            driver.find_element(By.ID, "call").click()
            until(driver, lambda d: d.find_elements(By.ID, "result-error"), "the form's error")
            refused = text_of(driver, "#result-error")
            box.clear()
            driver.find_element(By.ID, "call").click()
            until(driver, lambda d: text_of(d, "#result-status") == "ok", "whoami's result")
            return refused, text_of(driver, "#result pre.block")

        refused, whoami = await in_browser(no_fields_means_a_json_box, browser)
        assert refused == "the JSON arguments must be an object" and whoami == "one"

        def upstream_markup_stays_text(driver: WebDriver) -> None:
            for page in ("/ui/catalog", "/ui/playground?route=mcp&tool=typed_shout"):
                driver.get(base + page)
                until(
                    driver,
                    lambda d: "Shout <script>" in d.find_element(By.TAG_NAME, "main").text,
                    "the description as text",
                )
                assert driver.execute_script("return window.pwned === undefined")
                assert not driver.find_elements(By.CSS_SELECTOR, "main img")

        await in_browser(upstream_markup_stays_text, browser)


async def test_with_an_admin_token_the_ui_asks_for_it_once(tmp_path: Path, browser: WebDriver) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "config: {adminAddr: 127.0.0.1:0, statsAddr: null, adminToken: s3cret-admin}\n"
        f"mcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    )
    async with running(path) as (runtime, admin):
        base = f"http://127.0.0.1:{runtime.admin_port}"

        def sign_in(driver: WebDriver) -> str:
            driver.delete_all_cookies()
            driver.get(f"{base}/ui/catalog")
            assert driver.current_url == f"{base}/ui/login"
            driver.find_element(By.NAME, "token").send_keys("wrong")
            driver.find_element(By.CSS_SELECTOR, "form button").click()
            until(driver, lambda d: d.find_elements(By.ID, "login-failed"), "the refusal")
            driver.find_element(By.NAME, "token").send_keys("s3cret-admin")
            driver.find_element(By.CSS_SELECTOR, "form button").click()
            until(driver, lambda d: d.find_elements(By.ID, "counters"), "the dashboard")
            assert "Counters since start are off" in text_of(driver, "#counters")  # statsAddr: null
            cookie = driver.get_cookie("agentplex-admin")
            assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert "s3cret-admin" not in cookie["value"]
            driver.get(f"{base}/ui/playground?route=mcp&tool=echo")
            driver.find_element(By.ID, "arg-text").send_keys("hi")
            driver.find_element(By.ID, "call").click()  # POST /call with the cookie
            until(driver, lambda d: text_of(d, "#result-status") == "ok", "the call's result")
            return text_of(driver, "#result pre.block")

        assert await in_browser(sign_in, browser) == "one: hi"
        signed_in = browser.get_cookie("agentplex-admin")
        assert signed_in is not None

        def sign_out(driver: WebDriver) -> None:
            driver.find_element(By.ID, "logout").click()
            until(driver, lambda d: d.current_url == f"{base}/ui/login", "the sign-in page")

        await in_browser(sign_out, browser)
        # The id the browser held is void now, wherever it is replayed from.
        assert (await admin.get("/stats", cookies={"agentplex-admin": signed_in["value"]})).status_code == 401
        # The JSON API still wants the token from anything that has not signed in.
        assert (await admin.get("/stats")).status_code == 401
        assert (await admin.get("/ui")).headers["location"] == "/ui/login"
        browser.delete_all_cookies()


async def test_the_config_page_reloads_the_file_and_lists_what_is_wrong_with_it(
    tmp_path: Path, browser: WebDriver
) -> None:
    path = tmp_path / "gw.yaml"
    good = f"config: {{adminAddr: 127.0.0.1:0, statsAddr: null}}\nmcp:\n  port: 0\n  targets:{stdio_target('one')}\n"
    path.write_text(good)
    async with running(path) as (runtime, _):
        base = f"http://127.0.0.1:{runtime.admin_port}"

        def shown(driver: WebDriver) -> str:
            driver.get(f"{base}/ui/config")
            return text_of(driver, "#config")

        assert '"prefixMode": "conditional"' in await in_browser(shown, browser)
        path.write_text(good.replace("port: 0\n", "port: 0\n  prefixMode: sometimes\n"))

        def reload_refused(driver: WebDriver) -> list[str]:
            driver.find_element(By.ID, "reload").click()
            until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#reload-problems li"), "the problems")
            return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#reload-problems li")]

        problems = await in_browser(reload_refused, browser)
        assert (
            f"{path}: mcp.prefixMode: invalid value 'sometimes' (expected one of: conditional, always, never)"
            in problems
        )
        assert runtime.generation == 1
        path.write_text(good.replace("port: 0\n", "port: 0\n  prefixMode: always\n"))

        def reload_applied(driver: WebDriver) -> str:
            driver.find_element(By.ID, "reload").click()
            until(driver, lambda d: "config generation 2" in text_of(d, ".generation"), "the page for generation 2")
            return text_of(driver, "#config")

        assert '"prefixMode": "always"' in await in_browser(reload_applied, browser)
