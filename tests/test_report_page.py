"""report.html's fixes from a tester's round, each tried in headless Chromium as the
tester found it: the compare view's header after going back to the grid, data files
swept by a later run, addresses naming things the report lacks, and a pasted permalink
in an open tab."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from liangxin_batch.outputs._gallery import APP_PARTS
from tests.report_browser_support import (  # noqa: F401  (browser: a fixture)
    browser,
    cards,
    chip,
    report_page,
    shown,
)
from tests.test_gallery import chromium  # noqa: F401  (a fixture)
from tests.test_report_browser import report  # noqa: F401  (a fixture)

REFRESHED = "this report was refreshed since the page was opened: reload the page"

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


def copied(report: Path, to: Path) -> Path:  # noqa: F811
    """A copy of the report (page, data, outputs) that a test may damage."""
    for name in ("report.html", "report", "outputs"):
        src = report.parent / name
        if src.is_dir():
            shutil.copytree(src, to / name)
        else:
            shutil.copy2(src, to / name)
    return to / "report.html"


def test_data_swept_by_a_later_run_asks_for_a_reload(
    browser: Any,  # noqa: F811
    report: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    html = copied(report, tmp_path)
    with report_page(browser, html) as page:
        for old in (tmp_path / "report" / "data").glob("row-*.js"):
            old.unlink()  # a later run wrote new shards under new names
        for old in (tmp_path / "report" / "data").glob("txt-*.js"):
            old.unlink()
        page.locator('.card[data-id="p1-b"]').click()
        note = page.locator("#lb-info .stale")
        note.wait_for()
        assert REFRESHED in note.text_content()
        assert "could not load" not in page.text_content("#lb-info")
        assert note.locator("button.reload").is_visible()
        page.keyboard.press("Escape")
        page.fill("#q", "zebracorn")  # the long prompts' file is gone too
        banner = page.locator("#stale")
        banner.wait_for()
        assert REFRESHED in banner.text_content()
        with page.expect_event("load"):  # reloads: the page loads afresh
            banner.locator("button.reload").click()
        page.wait_for_selector("body[data-loaded]", state="attached")


@pytest.mark.parametrize(("hash_", "facet", "value"), [
    ("model=not-in-this-batch", "model", "not-in-this-batch"),
    ("status=zzz", "status", "zzz"),
])  # fmt: skip
def test_an_address_with_unknown_values_shows_them_and_a_way_out(
    browser: Any,  # noqa: F811
    report: Path,  # noqa: F811
    hash_: str,
    facet: str,
    value: str,
) -> None:
    with report_page(browser, report, hash_) as page:
        assert shown(page) == "0" and page.locator("#empty").is_visible()
        unknown = chip(page, facet, value)
        assert "on" in (unknown.get_attribute("class") or "").split()
        unknown.click()  # removed like any chip
        page.wait_for_function("document.getElementById('shown').textContent === '12'")
        assert facet + "=" not in page.evaluate("location.hash")
    with report_page(browser, report, hash_ + "&q=p1") as page:
        clear = page.locator("#clear")
        assert clear.is_visible()
        clear.click()
        page.wait_for_function("document.getElementById('shown').textContent === '12'")
        assert page.evaluate("location.hash") == "" and page.input_value("#q") == ""
        assert not clear.is_visible()
        chip(page, "model", "z-image").click()  # any active filter offers it
        assert clear.is_visible()


def test_an_unknown_job_is_named_and_a_pasted_permalink_applies(
    browser: Any,  # noqa: F811
    report: Path,  # noqa: F811
) -> None:
    with report_page(browser, report, "job=does-not-exist") as page:
        assert "no job with id does-not-exist in this report" in page.text_content("#notice")
        page.evaluate("location.hash = 'job=p2-a'")  # another permalink pasted in the tab
        page.wait_for_selector("body[data-lightbox=p2-a]")
        assert not page.locator("#notice").is_visible()
        page.evaluate("location.hash = 'model=z-image&view=compare'")
        page.wait_for_selector("#lightbox", state="hidden")
        page.wait_for_selector(".cmp-row")
        assert shown(page) == "4 in 4 groups"
        assert "on" in (chip(page, "model", "z-image").get_attribute("class") or "")


def test_the_compare_header_stays_on_screen_while_scrolling(
    browser: Any,  # noqa: F811
    report: Path,  # noqa: F811
) -> None:
    with report_page(browser, report, "view=compare") as page:
        page.wait_for_selector(".cmp-row")
        seen = page.evaluate(
            """() => {
              window.scrollTo(0, document.body.scrollHeight);
              const head = document.getElementById('cmp-cols').getBoundingClientRect();
              const x = head.left + 20, y = head.top + head.height / 2;
              const at = document.elementFromPoint(x, y);
              return {top: head.top, bottom: head.bottom, scrolled: window.scrollY,
                      mine: !!(at && at.closest('#cmp-cols'))};
            }"""
        )
        assert seen["scrolled"] > 300, seen  # the page did scroll past where it starts
        assert seen["top"] >= 0 and seen["bottom"] <= 1000 and seen["mine"], seen


#: Every element showing user text (prompts, ids, models, column values, facet labels).
USER_TEXT = (
    ".card .id", ".card .model", ".card .prompt", ".chip .v", ".facet > .name",
    ".cmp-head .t", ".cmp-cell .model", ".cmp-cell .id", "#cmp-cols span",
    "#lb-info h2", "#lb-info .model", "#lb-info .prompt-full", "#lb-info dd", "#lb-info .error",
)  # fmt: skip
#: Of those, the ones whose direction is the text's own (a right-to-left prompt reads so).
OWN_DIRECTION = (".card .prompt", ".cmp-head .t", "#lb-info .prompt-full", ".chip .v")

ISOLATED = """([sels, auto]) => {
  const bad = [];
  for (const s of sels) {
    const found = document.querySelectorAll(s);
    if (!found.length) { bad.push(s + ': none'); }
    for (const e of found) {
      if (getComputedStyle(e).unicodeBidi !== 'isolate') { bad.push(s + ': not isolated'); break; }
      if (auto.includes(s) && e.dir !== 'auto') { bad.push(s + ': no dir=auto'); break; }
    }
  }
  return bad;
}"""


def test_user_text_is_bidi_isolated(browser: Any, report: Path) -> None:  # noqa: F811
    """A U+202E in a prompt must not reverse the text after it: every element showing
    user text is its own bidi island."""
    with report_page(browser, report, "view=compare&job=p1-a") as page:
        page.wait_for_selector("body[data-lightbox=p1-a]")
        assert page.evaluate(ISOLATED, [list(USER_TEXT[3:]), list(OWN_DIRECTION)]) == []
    with report_page(browser, report) as page:
        assert page.evaluate(ISOLATED, [list(USER_TEXT[:3]), list(OWN_DIRECTION)]) == []


def test_every_part_of_the_script_is_inlined_in_order(report: Path) -> None:  # noqa: F811
    """The page's script, split by role (each part small), is inlined whole and in order;
    no part of the templates folder is left out (the browser tests cover behaviour)."""
    folder = resources.files("liangxin_batch.outputs").joinpath("templates")
    assert sorted(APP_PARTS) == sorted(p.name for p in folder.iterdir() if p.name.endswith(".js"))
    page = report.read_text("utf-8")
    at = 0
    for name in APP_PARTS:
        part = folder.joinpath(name).read_text("utf-8")
        assert len(part.splitlines()) <= 300, name
        found = page.find(part, at)
        assert found >= 0, f"{name} not inlined (in order)"
        at = found + len(part)
