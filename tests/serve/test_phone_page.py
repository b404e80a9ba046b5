"""The phone page in a real headless browser (Debian's chromium, driven by Playwright) at a phone's viewport: join
by the QR code's link, ask, watch the answer stream, read the quotes and a source's passage. A screenshot is kept."""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from tests.conftest import missing, require_tool

pytestmark = pytest.mark.slow


def browser_path() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return require_tool(name)
    missing("chromium is not installed (scripts/test installs it with apt-get when run as root)")


def test_a_phone_joins_asks_and_reads_a_source(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"], headless=True)
        try:
            phone = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                                        is_mobile=True, has_touch=True)
            page = phone.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server.join)  # the link in the QR code
            page.wait_for_selector("#chat:not([hidden])", timeout=30_000)
            assert page.url.rstrip("/") == server.url
            page.fill("#question", "how long should I boil water to make it safe")
            page.tap("#ask")
            page.wait_for_selector(".answer:not(:empty)", timeout=120_000)  # streaming: words before the end
            page.wait_for_selector(".sources .source", timeout=180_000)  # the end: sources
            quotes = page.inner_text(".quotes")
            assert "boil" in quotes.lower() and "water.txt" in quotes
            assert page.inner_text(".answer").strip()
            page.tap(".sources .source")
            passage = page.locator(".passage").first
            assert passage.is_visible() and "boil" in passage.inner_text().lower()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"the page is {width} px wide on a 360 px screen"
            shot = tmp_path / "phone.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", data[16:20])[0] == 720
    keep = os.environ.get("TEST_ARTIFACTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "phone-page.png"))
    assert problems == []  # no script error, no Content-Security-Policy violation
