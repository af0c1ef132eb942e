"""report.html's fixes from a tester's round, each tried in headless Chromium as the
tester found it: the compare view's header after going back to the grid, data files
swept by a later run, addresses naming things the report lacks, and a pasted permalink
in an open tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.report_browser_support import (  # noqa: F401  (browser: a fixture)
    browser,
    cards,
    chip,
    report_page,
    shown,
)
from tests.test_gallery import chromium  # noqa: F401  (a fixture)
from tests.test_report_browser import report  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def test_back_to_the_grid_hides_the_compare_header_and_drops_by(
    browser: Any,  # noqa: F811
    report: Path,  # noqa: F811
) -> None:
    with report_page(browser, report) as page:
        page.click("#view-compare")
        assert page.locator("#cmp-cols").is_visible()
        page.click("#view-grid")
        page.wait_for_selector(".card")
        assert not page.locator("#cmp-cols").is_visible()
        page.click("#view-compare")
        page.select_option("#by", "_subject")
        assert "by=_subject" in page.evaluate("location.hash")
        page.click("#view-grid")
        assert "by=" not in page.evaluate("location.hash")
