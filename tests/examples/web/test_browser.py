"""The web example in a real browser: Debian's headless Chromium driven by Playwright.

The app runs under uvicorn on a free loopback port against the emulator. Playwright drives
the system Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``); it never downloads a browser.
Without Chromium the test skips locally and fails under CI (``CI=true``), where ``.ci/run``
installs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import CI, need
from .conftest import LiveApp

need("fastapi", "the web example's framework")
need("uvicorn", "the web example's server")
sync_api = need("playwright.sync_api", "drives the browser")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Quiet and self-contained: no sandbox (root in CI), no GPU, no network besides the page's.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

Live = Callable[..., LiveApp]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        message = f"Chromium not found at {CHROMIUM}: apt-get install -y chromium"
        if CI:
            pytest.fail(f"{message} (.ci/run installs it; CI must run the browser test)")
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_type_a_prompt_watch_it_succeed_and_see_the_images(live: Live, page: Any) -> None:
    app = live()
    page.goto(app.url)
    notice = page.locator("#notice")
    sync_api.expect(notice).to_be_visible()
    sync_api.expect(notice).to_contain_text("emulator")

    page.fill("#prompt", "a red kite over the sea at dawn")
    page.select_option("#output-number", "2")
    page.click("#submit")

    status = page.locator("#status")
    sync_api.expect(status).to_have_text("succeeded", timeout=TIMEOUT_MS)
    images = page.locator("#images img")
    sync_api.expect(images).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#images img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    width = images.first.evaluate("(img) => img.naturalWidth")
    assert width > 0

    # The recent list shows it, and the emulator's webhook reaches the app and the page.
    generation_id = page.locator("#generation-id").inner_text().strip()
    sync_api.expect(page.locator("#recent")).to_contain_text("a red kite over the sea")
    sync_api.expect(page.locator("#webhooks")).to_contain_text(generation_id)
    sync_api.expect(page.locator("#error")).to_be_hidden()


def test_errors_show_as_readable_messages(live: Live, page: Any) -> None:
    app = live()
    page.goto(app.url)
    page.fill("#prompt", "something nude")  # the emulator's content filter refuses it
    page.click("#submit")
    error = page.locator("#error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_contain_text("content policy")
    sync_api.expect(error).to_contain_text("NSFW_CONTENT_DETECTED")
    assert "Traceback" not in error.inner_text()
    sync_api.expect(page.locator("#images img")).to_have_count(0)
