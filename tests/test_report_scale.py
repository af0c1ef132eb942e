"""report.html of a 100,000-job batch in real headless Chromium, measured with the
browser's own timers (performance.now in the page, CDP's heap usage): the first cards
painted within 1.5 s, a filter by model within 200 ms, a scroll to the end that never
holds more than ~200 cards in the DOM, the JS heap within 300 MB. bench/bench_report.py
repeats this at 1,000,000 jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from liangxin_batch.outputs._gallery import write_report_html
from liangxin_batch.state._store import StateStore
from tests.report_browser_support import browser, measure, report_page  # noqa: F401
from tests.report_bulk_support import MODELS, build_big_state
from tests.test_gallery import chromium  # noqa: F401  (a fixture)

JOBS = 100_000
MAX_CARDS = 200


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_hundred_thousand_jobs_open_filter_and_scroll_quickly(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "big"
    t0 = time.perf_counter()
    build_big_state(out, JOBS)
    built = time.perf_counter()
    store = StateStore.in_dir(out, readonly=True)
    try:
        html = write_report_html(out, store)
    finally:
        store.close()
    reported = time.perf_counter()
    # A page's timers count the machine's other work too: on a loaded machine (a shared
    # CI box) one open can miss by a few ms what a quiet one does in a third of the time.
    # The best of up to three opens is asserted; a real slowdown misses all three.
    tries = []
    for _ in range(3):
        with report_page(browser, html) as page:
            tries.append(measure(page, MODELS[1]))
        if _within(tries[-1]):
            break
    figures = min(tries, key=lambda f: f["first_paint_ms"] + f["filter_ms"])
    print(
        f"\n100k: state {built - t0:.1f}s, report {reported - built:.1f}s, browser "
        f"{time.perf_counter() - reported:.1f}s ({len(tries)} opens); {figures}"
    )
    assert figures["first_paint_ms"] <= 1500, figures
    assert figures["filter_ms"] <= 200, figures
    assert figures["shown"] == JOBS / 3 or abs(figures["shown"] - JOBS / 3) < 1, figures
    assert figures["max_cards"] <= MAX_CARDS, figures
    assert figures["last_id_end"] == figures["shown"] - 1, "scrolled to the last card"
    assert figures["heap_mb"] <= 300, figures


def _within(figures: dict[str, float]) -> bool:
    return figures["first_paint_ms"] <= 1500 and figures["filter_ms"] <= 200
