"""report.html in a real headless Chromium (Debian's, driven by Playwright: no browser
download), as the browser tests of the report open it: from the file system."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def launched(chromium: str) -> Iterator[Any]:
    """Headless Chromium (Playwright driving Debian's chromium: `chromium` is
    tests/test_gallery.py's fixture, which installs it). Playwright's sync API runs an
    event loop while it is open: no `asyncio.run` in the meantime."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium or shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """One browser for a module's tests (per module: see `launched`)."""
    with launched(chromium) as found:
        yield found


@contextmanager
def report_page(browser: Any, html: Path, hash_: str = "", *, width: int = 1400) -> Iterator[Any]:
    """A fresh page showing `html` (with `#hash_`), its data loaded; errors of the page's
    script fail the test."""
    context = browser.new_context(viewport={"width": width, "height": 1000})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html.resolve().as_uri() + (f"#{hash_}" if hash_ else ""))
        page.wait_for_selector("body[data-loaded]", state="attached", timeout=60_000)
        yield page
        assert errors == [], errors
    finally:
        context.close()


def cards(page: Any) -> list[dict[str, str]]:
    """The grid's cards in the DOM, in view order: id, status, model, prompt text."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.card'))
          .sort((a, b) => a.dataset.index - b.dataset.index)
          .map(c => ({id: c.dataset.id, status: c.dataset.status,
                      model: c.querySelector('.model').textContent,
                      prompt: (c.querySelector('.prompt') || {}).textContent || ''}))"""
    )


def shown(page: Any) -> str:
    return str(page.text_content("#shown"))


def chip(page: Any, facet: str, value: str) -> Any:
    """A facet's chip (`facet`: model, status, reason or f.<column>), found by its value
    however odd (compared in the page, not written into a selector)."""
    at = page.evaluate(
        """([f, v]) => Array.from(document.querySelectorAll('.facet'))
          .filter(x => x.dataset.facet === f)
          .flatMap(x => Array.from(x.querySelectorAll('.chip')))
          .findIndex(c => c.dataset.value === v)""",
        [facet, value],
    )
    assert at >= 0, (facet, value)
    return page.locator(".facet .chip").nth(_offset(page, facet) + at)


def _offset(page: Any, facet: str) -> int:
    """How many chips come before the first of `facet`."""
    return int(
        page.evaluate(
            """(f) => { let n = 0;
              for (const x of document.querySelectorAll('.facet')) {
                if (x.dataset.facet === f) { return n; }
                n += x.querySelectorAll('.chip').length; }
              return -1; }""",
            facet,
        )
    )


def chip_count(page: Any, facet: str, value: str) -> int:
    """The count shown beside a facet's value."""
    return int(chip(page, facet, value).locator(".n").text_content().replace(",", ""))


def heap_mb(page: Any) -> float:
    """The page's JS heap in use (CDP Runtime.getHeapUsage), MB."""
    cdp = page.context.new_cdp_session(page)
    try:
        return float(cdp.send("Runtime.getHeapUsage")["usedSize"]) / 1e6
    finally:
        cdp.detach()


#: Scrolls the page to its end a screen at a time; the most cards the DOM held.
SCROLL = """async () => {
  let most = 0;
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight * 40) {
    window.scrollTo(0, y);
    await frame(); await frame();
    most = Math.max(most, document.querySelectorAll('.card').length);
  }
  window.scrollTo(0, document.body.scrollHeight);
  await frame(); await frame();
  most = Math.max(most, document.querySelectorAll('.card').length);
  return most;
}"""

#: Clicks a chip and waits a frame: the milliseconds until the page could paint.
TIMED_CLICK = """async (el) => {
  const t = performance.now();
  el.click();
  await new Promise(r => requestAnimationFrame(() => r()));
  return performance.now() - t;
}"""


def measure(page: Any, model: str) -> dict[str, float]:
    """The figures of the issue, from the page's own timers."""
    figures: dict[str, float] = {
        "first_paint_ms": page.evaluate("window.__lx.firstPaint"),
        "all_loaded_ms": page.evaluate("window.__lx.allLoaded"),
    }
    figures["filter_ms"] = page.evaluate(TIMED_CLICK, chip(page, "model", model).element_handle())
    figures["filter_js_ms"] = page.evaluate("window.__lx.lastFilter")
    figures["shown"] = float(page.text_content("#shown").replace(",", ""))
    figures["max_cards"] = page.evaluate(SCROLL)
    figures["last_id_end"] = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('.card')).map(c => +c.dataset.index))"
    )
    figures["heap_mb"] = heap_mb(page)
    return figures
