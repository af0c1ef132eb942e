"""report.html of a big finished batch: how long its data files take to build (whole,
again with nothing changed, again after one job changed), their size on disk, the
longest step a running batch's refresh blocks its event loop for, and the page in
headless Chromium measured by its own timers (first cards painted, a filter by model,
a scroll to the end and the cards alive meanwhile, the JS heap).

    .venv/bin/python bench/bench_report.py                  # 100,000 jobs
    .venv/bin/python bench/bench_report.py --jobs 1000000   # about 10 minutes the first time

The batch is built once per size under $TMPDIR/liangxin-bench-report/<jobs>/
(tests/report_bulk_support.py: jobs of three models, each output and preview a hard
link of one small image) and its report made afresh for each run of this bench.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from liangxin_batch.outputs._gallery import (  # noqa: E402
    LiveReport,
    read_summary,
    write_report_html,
)
from liangxin_batch.outputs._report_data import DATA_DIR  # noqa: E402
from liangxin_batch.state._store import StateStore  # noqa: E402
from tests.report_browser_support import launched, measure, report_page  # noqa: E402
from tests.report_bulk_support import MODELS, build_big_state, tree_bytes  # noqa: E402


def _state(jobs: int) -> Path:
    base = Path(tempfile.gettempdir()) / "liangxin-bench-report" / str(jobs)
    if not (base / "built").exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        took = build_big_state(base / "out", jobs)
        print(f"  built a finished batch of {jobs:,} jobs in {took:.1f}s", flush=True)
        (base / "built").write_text("ok")
    return base / "out"


def _touch_one_job(out: Path, jobs: int) -> None:
    """One job of the middle segment changes, as a retry would change it."""
    db = sqlite3.connect(out / "state.db")
    db.execute(
        "UPDATE jobs SET error_message = 'touched ' || CAST(random() AS TEXT) WHERE idx = ?",
        (jobs // 2,),
    )
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--no-browser", action="store_true", help="the build figures only")
    args = parser.parse_args()
    out = _state(args.jobs)
    shutil.rmtree(out / "report", ignore_errors=True)
    (out / "report.html").unlink(missing_ok=True)

    store = StateStore.in_dir(out)
    t0 = time.perf_counter()
    html = write_report_html(out, store)
    whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_report_html(out, store)
    again = time.perf_counter() - t0
    _touch_one_job(out, args.jobs)
    t0 = time.perf_counter()
    write_report_html(out, store)
    one = time.perf_counter() - t0
    _touch_one_job(out, args.jobs)
    live, longest, steps = LiveReport(out, store), 0.0, 0
    summary = read_summary(store)  # a run reads it in a worker thread (_live_report.py)
    t0 = time.perf_counter()
    for step in live.steps(summary):
        longest = max(longest, time.perf_counter() - t0)
        steps += 1
        if step is not None:  # a run does this in a worker thread: not a step
            step()
        t0 = time.perf_counter()
    longest = max(longest, time.perf_counter() - t0)
    write_report_html(out, store)  # as the end of the run leaves it
    store.close()

    folder = out / DATA_DIR
    files, size = tree_bytes(folder)
    # The files of the report as it stands (the previous report's stay a while beside).
    cache = json.loads((folder / "cache.json").read_text("utf-8"))["segments"].values()
    index = sum((folder / e["index"]).stat().st_size for e in cache)
    rows = [(folder / name).stat().st_size for e in cache for name in e["rows"]]
    print(f"report of {args.jobs:,} jobs")
    print(f"  build: whole {whole:.1f}s, again unchanged {again:.2f}s, one job changed {one:.2f}s")
    print(f"  a refresh during a run: longest step {longest * 1000:.0f} ms ({steps} steps)")
    print(
        f"  on disk: {size / 1e6:.1f} MB in {files:,} files; index {index / args.jobs:.0f} B/job "
        f"({index / 1e6:.1f} MB, loaded first), rows {sum(rows) / args.jobs:.0f} B/job "
        f"(one job opens a {max(rows) / 1e3:.0f} KB file)"
    )
    if args.no_browser:
        return
    chromium = shutil.which("chromium") or "chromium"
    with launched(chromium) as browser, report_page(browser, html) as page:
        figures = measure(page, MODELS[1])
    print(
        f"  chromium: first cards painted {figures['first_paint_ms']:.0f} ms, every index "
        f"loaded {figures['all_loaded_ms']:.0f} ms, filter by model {figures['filter_ms']:.0f} ms"
        f" (script {figures['filter_js_ms']:.0f} ms), scroll to the end with at most "
        f"{figures['max_cards']:.0f} cards in the DOM, JS heap {figures['heap_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
