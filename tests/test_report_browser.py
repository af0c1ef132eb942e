"""report.html in headless Chromium, clicked as a user would: the grid, the filters and
their counts, the search, the sort, the compare view, the lightbox and every keyboard
shortcut, permalinks and filters kept in the address; and prompts with markup, quotes,
CJK, emoji and very long text shown as text, whole, in every view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._gallery import write_report_html
from liangxin_batch.outputs._report_shards import SHORT
from liangxin_batch.state._store import FileRow, StateStore
from tests.report_browser_support import (  # noqa: F401  (browser: a fixture)
    browser,
    cards,
    chip,
    chip_count,
    report_page,
    shown,
)
from tests.state_support import drive
from tests.test_gallery import XSS, chromium  # noqa: F401  (fixtures)

QUOTES = 'He said "it\'s <b>bold</b>" & left; \\ backslash ${x} {{ y }} </script>'
CJK = "一只猫在月光下 🐱🌕 — 東京の夜景 ✨👩‍🚀"
LONG = "long " * 600 + "zebracorn tail"
PROMPTS = (XSS, QUOTES, CJK, LONG)
MODELS = ("flux-2/pro", "google/nano-banana", "z-image")
SUBJECTS = ("cats", "cats", '<i>dogs</i> "x"', '<i>dogs</i> "x"')
COLOURS = ("#d9480f", "#1c7ed6", "#37b24d", "#f59f00", "#ae3ec9", "#0ca678")


def job_id(p: int, m: int) -> str:
    return f"p{p}-{'abc'[m]}"


def build(out: Path) -> StateStore:
    """Four prompts, each run by three models: 12 jobs, one failed, one unknown, the rest
    done with a small image each (a video for one)."""
    store = StateStore.in_dir(out)
    rows = []
    for p, prompt in enumerate(PROMPTS):
        for m, model in enumerate(MODELS):
            columns = {"prompt": prompt, "_subject": SUBJECTS[p], "size": "1:1"}
            inputs = {"prompt": prompt, "aspect_ratio": "1:1", "seed": 7 + p}
            idx = p * 3 + m
            rows.append((job_id(p, m), idx, model, json.dumps(inputs), json.dumps(columns), "h"))
    store.upsert_jobs(rows)
    for p in range(4):
        for m in range(3):
            idx, jid = p * 3 + m, job_id(p, m)
            url = f"https://cdn.test/{jid}.png"
            if (p, m) == (1, 0):
                drive(store, jid, JobState.FAILED, task_id=f"t-{jid}", error_code="422",
                      error_message="<b>refused</b> by the model", credits=0.0)  # fmt: skip
                continue
            if (p, m) == (2, 1):
                drive(store, jid, JobState.UNKNOWN, error_message="the reply was lost")
                continue
            drive(store, jid, JobState.DONE, task_id=f"t-{jid}", submitted_at=1.75e9 + idx,
                  completed_at=1.75e9 + idx + 9, cost_time=(10 + idx * 3) * 1000.0,
                  credits=1.5 + m, result_urls=[url])  # fmt: skip
            rel = f"outputs/{MODELS[m].replace('/', '-')}/{jid}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (160, 120), COLOURS[(p + 2 * m) % 6]).save(out / rel)
            size = (out / rel).stat().st_size
            store.record_file(FileRow(jid, 0, url, rel, f"{idx:02d}" * 32, size, 1, 160, 120))
    return store


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("browse")
    store = build(out)
    html = write_report_html(out, store)
    store.close()
    yield html


def card_prompt(prompt: str) -> str:
    return prompt[:SHORT] + ("…" if len(prompt) > SHORT else "")


def pwned(page: Any) -> None:
    """The prompts' markup never ran nor became elements."""
    assert page.evaluate("document.body.getAttribute('data-pwned')") is None
    markup = "img[src='x'], #viewport b, #viewport i, #lightbox b, #facets b, #facets i"
    assert page.evaluate(f'document.querySelectorAll("{markup}").length') == 0


pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_grid_shows_every_job_as_text(browser: Any, report: Path) -> None:  # noqa: F811
    with report_page(browser, report) as page:
        shown_cards = cards(page)
        assert [c["id"] for c in shown_cards] == [job_id(p, m) for p in range(4) for m in range(3)]
        assert shown(page) == "12"
        by_id = {c["id"]: c for c in shown_cards}
        for p, prompt in enumerate(PROMPTS):
            assert by_id[job_id(p, 0)]["prompt"] == card_prompt(prompt)
        assert by_id["p1-a"]["status"] == "failed" and by_id["p2-b"]["status"] == "unknown"
        assert by_id["p0-b"]["model"] == "google/nano-banana"
        # Each done job's picture loads (the small image itself: no preview made).
        loaded = page.evaluate(
            """() => Promise.all(Array.from(document.querySelectorAll('.card img'))
              .map(i => i.decode().then(() => i.naturalWidth, () => 0)))"""
        )
        assert len(loaded) == 10 and all(w == 160 for w in loaded), loaded
        subjects = page.locator('.facet[data-facet="f._subject"] .chip .v').all_text_contents()
        assert subjects == ['<i>dogs</i> "x"', "cats"]  # by count, then by value
        pwned(page)


def test_filters_count_each_other_and_live_in_the_address(
    browser: Any,  # noqa: F811
    report: Path,
) -> None:
    with report_page(browser, report) as page:
        assert chip_count(page, "status", "succeeded") == 10
        chip(page, "model", "z-image").click()
        assert shown(page) == "4"
        assert {c["model"] for c in cards(page)} == {"z-image"}
        # The other facets count within the filter; the model facet counts beside it.
        assert chip_count(page, "status", "succeeded") == 4
        assert chip_count(page, "model", "flux-2/pro") == 4
        chip(page, "f._subject", '<i>dogs</i> "x"').click()
        assert [c["id"] for c in cards(page)] == ["p2-c", "p3-c"]
        chip(page, "status", "succeeded").click()
        address = page.evaluate("location.hash")
        assert "model=z-image" in address and "status=succeeded" in address
        pwned(page)
    with report_page(browser, report, address[1:]) as page:
        assert [c["id"] for c in cards(page)] == ["p2-c", "p3-c"]
        assert "on" in (chip(page, "model", "z-image").get_attribute("class") or "")
    with report_page(browser, report, "status=failed,unknown") as page:  # as before
        assert [c["status"] for c in cards(page)] == ["failed", "unknown"]
        assert chip_count(page, "reason", "422") == 1
        chip(page, "reason", "422").click()
        assert [c["id"] for c in cards(page)] == ["p1-a"]


def searched(page: Any, query: str, *, long: bool = False) -> None:
    """Wait until the page has filtered by `query` (and, with `long`, by the long
    prompts loaded since)."""
    page.wait_for_function(
        "([q, l]) => window.__lx.query === q && (!l || window.__lx.longSearched === q)",
        arg=[query, long],
    )


def test_search_and_sort(browser: Any, report: Path) -> None:  # noqa: F811
    with report_page(browser, report) as page:
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"
        page.keyboard.type("p2-c")
        searched(page, "p2-c")
        assert [c["id"] for c in cards(page)] == ["p2-c"]
        page.fill("#q", "zebracorn")  # only in the long prompt's tail: searched in full
        searched(page, "zebracorn", long=True)
        assert [c["id"] for c in cards(page)] == ["p3-a", "p3-b", "p3-c"]
        page.fill("#q", "月光下 🐱")
        searched(page, "月光下 🐱")
        assert [c["id"] for c in cards(page)] == ["p2-a", "p2-b", "p2-c"]
        page.fill("#q", '"it\'s <b>bold</b>"')
        searched(page, '"it\'s <b>bold</b>"')
        assert [c["id"] for c in cards(page)] == ["p1-a", "p1-b", "p1-c"]
        page.fill("#q", "")
        searched(page, "")
        assert shown(page) == "12"
        page.select_option("#sort", "seconds")
        order = [c["id"] for c in cards(page)]
        assert order[:3] == ["p0-a", "p0-b", "p0-c"] and order[-2:] == ["p1-a", "p2-b"]
        page.click("#dir")  # the longest first; jobs without a time still last
        order = [c["id"] for c in cards(page)]
        assert order[:2] == ["p3-c", "p3-b"] and order[-2:] == ["p1-a", "p2-b"]
        page.select_option("#sort", "credits")
        assert next(c["id"] for c in cards(page)) in ("p3-c", "p0-c", "p1-c", "p2-c")
        assert "sort=credits" in page.evaluate("location.hash")


def test_the_compare_view(browser: Any, report: Path) -> None:  # noqa: F811
    with report_page(browser, report) as page:
        page.click("#view-compare")
        rows = page.locator(".cmp-row")
        assert rows.count() == 4
        assert page.locator("#cmp-cols span").all_text_contents() == list(MODELS)
        for p, prompt in enumerate(PROMPTS):
            row = page.locator(f'.cmp-row[data-group="{p}"]')
            assert row.locator(".cmp-head .t").text_content() == card_prompt(prompt)
            ids = [c.get_attribute("data-id") for c in row.locator(".cmp-cell").all()]
            assert ids == [job_id(p, m) for m in range(3)]
        pwned(page)
        page.select_option("#by", "_subject")
        assert page.locator(".cmp-row").count() == 2
        heads = page.locator(".cmp-head .t").all_text_contents()
        assert heads == ["cats", '<i>dogs</i> "x"']  # in the order of their first job
        assert page.locator('.cmp-row[data-group="1"] .cmp-cell').count() == 6
        chip(page, "model", "z-image").click()  # filters apply to the groups too
        assert page.locator('.cmp-row[data-group="1"] .cmp-cell').count() == 2
        page.locator('.cmp-cell[data-id="p3-c"]').click()
        page.wait_for_selector("body[data-lightbox=p3-c]")
        assert page.text_content("#lb-info .prompt-full") == LONG
        page.keyboard.press("k")  # within the compare view's order
        page.wait_for_selector("body[data-lightbox=p2-c]")
        address = page.evaluate("location.hash")
        assert "view=compare" in address and "by=_subject" in address
    with report_page(browser, report, address[1:]) as page:
        page.wait_for_selector("body[data-lightbox=p2-c]")
        assert page.locator(".cmp-row").count() == 2


def test_the_lightbox_and_the_keys(browser: Any, report: Path) -> None:  # noqa: F811
    with report_page(browser, report) as page:
        page.locator('.card[data-id="p1-b"]').click()
        page.wait_for_selector("body[data-lightbox=p1-b]")
        info = page.locator("#lb-info")
        assert info.locator(".prompt-full").text_content() == QUOTES
        assert info.locator('dd[data-k="task id"]').text_content() == "t-p1-b"
        assert info.locator('dd[data-k="sha256"]').text_content() == "04" * 32
        assert info.locator('dd[data-k="credits"]').text_content() == "2.5"
        assert info.locator('dd[data-k="generation"]').text_content() == "22.0 s"
        assert info.locator('dd[data-k="aspect_ratio"]').text_content() == "1:1"
        src = page.get_attribute("#lb-stage img", "src")
        assert src == "outputs/google-nano-banana/p1-b.png"  # the output itself, full size
        assert "job=p1-b" in page.evaluate("location.hash")
        for key, expected in (
            ("j", "p1-c"),
            ("ArrowRight", "p2-a"),
            ("k", "p2-a"),
            ("ArrowLeft", "p1-c"),
        ):
            if key == "k":
                page.keyboard.press("k")
                page.keyboard.press("j")  # back and forth
            else:
                page.keyboard.press(key)
            page.wait_for_selector(f"body[data-lightbox={expected}]")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector("body[data-lightbox=p1-a]")
        assert page.text_content("#lb-info .error") == "422: <b>refused</b> by the model"
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector("body[data-lightbox=p0-c]")
        assert page.text_content("#lb-info .prompt-full") == XSS
        pwned(page)
        page.keyboard.press("Escape")
        page.wait_for_selector("#lightbox", state="hidden")
        assert "job=" not in page.evaluate("location.hash")
        # From the grid: the selection moves by the keys, Enter opens it.
        assert page.evaluate("document.body.dataset.selected") == "p0-c"
        page.keyboard.press("ArrowDown")  # a row down: five cards to a row at 1400 px
        page.keyboard.press("ArrowUp")
        page.keyboard.press("j")
        assert page.evaluate("document.body.dataset.selected") == "p1-a"
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-lightbox=p1-a]")
        page.click("#lb-close")
        page.wait_for_selector("#lightbox", state="hidden")


def test_a_permalink_opens_the_job(browser: Any, report: Path) -> None:  # noqa: F811
    with report_page(browser, report, "job=p2-a") as page:
        page.wait_for_selector("body[data-lightbox=p2-a]")
        assert page.text_content("#lb-info .prompt-full") == CJK
        assert page.text_content("#lb-info h2") == "p2-a"
    with report_page(browser, report, "job=nope") as page:
        assert "no job with id nope in this report" in page.text_content("#notice")
