"""report.html while a batch runs (`--report-every`): opened mid-run it shows the jobs
done so far and says the batch is still running; the end of the run writes it whole."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from liangxin_batch.cli import main
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.outputs._gallery import LiveReport
from liangxin_batch.run._live_report import live_report
from liangxin_batch.run._progress import NullObserver
from liangxin_batch.run._run import RunHandle, run_batch_async
from liangxin_batch.simulator import SimConfig, create_app
from liangxin_batch.state._store import StateStore
from tests.report_state_support import job_rows
from tests.runner_harness import KEY, SimEnv, in_virtual_time
from tests.test_gallery import _data
from tests.test_results_interrupted import write_manifest
from tests.virtual_time import run_virtual


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i:03d}", "model": "z-image", "prompt": f"p {i}", "aspect_ratio": "1:1"}
        for i in range(n)
    ]


def snapshot(out: Path) -> tuple[int, bool] | None:
    """(jobs shown as succeeded, whether the page says the batch still runs)."""
    html = out / "report.html"
    if not html.exists():
        return None
    data = _data(out)
    succeeded = data["meta"]["counts"]["statuses"].get("succeeded", 0)
    return succeeded, "the batch was still running" in html.read_text("utf-8")


def watched_run(
    out: Path, jobs: int, settings: RunSettings
) -> tuple[Any, list[tuple[int, bool] | None]]:
    """A run of `jobs` jobs, and what the report showed every 5 virtual seconds of it."""
    seen: list[tuple[int, bool] | None] = []

    async def main() -> Any:
        async def watch() -> None:
            while True:
                await asyncio.sleep(5.0)
                seen.append(snapshot(out))

        watcher = asyncio.create_task(watch())
        try:
            return await SimEnv().run_library(out, rows(jobs), settings=settings)
        finally:
            watcher.cancel()

    return in_virtual_time(main), seen


def test_the_report_shows_a_running_batch(tmp_path: Path) -> None:
    summary, seen = watched_run(tmp_path, 60, RunSettings(report_every=5.0))
    assert summary.counts == {"succeeded": 60}
    during = [s for s in seen if s is not None and s[1]]  # each says when it was written
    assert any(0 < done < 60 for done, _ in during), seen  # part of the batch, shown
    assert snapshot(tmp_path) == (60, False)  # the end: every job, no longer running
    html = (tmp_path / "report.html").read_text("utf-8")
    assert re.search(r"Succeeded</div><div class=\"v\">60 <small>/ 60", html)


def test_no_refresh_with_report_every_zero(tmp_path: Path) -> None:
    _, seen = watched_run(tmp_path, 30, RunSettings(report_every=0))
    assert seen and all(s is None for s in seen[:-1]), seen
    assert snapshot(tmp_path) == (30, False)


class Said(NullObserver):
    def __init__(self) -> None:
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)


def test_an_unexpected_refresh_error_is_said_once_and_the_run_goes_on(
    tmp_path: Path, caplog: Any
) -> None:
    """A refresh that fails on an error nobody expected (here a SQLite error: the store
    it reads was closed under it) stops the refreshes, is said once and logged; the
    block it ran beside ends as it would have."""
    store = StateStore.in_dir(tmp_path)
    store.close()
    observer = Said()

    async def main() -> str:
        async with live_report(tmp_path, store, RunSettings(report_every=5.0), observer):
            await asyncio.sleep(60.0)  # twelve refreshes' worth
            return "the run's result"

    with caplog.at_level(logging.WARNING, logger="liangxin_batch"):
        assert in_virtual_time(main) == "the run's result"
    assert len(observer.said) == 1, observer.said
    assert "report.html is not refreshed during this run" in observer.said[0]
    assert any("ProgrammingError" in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.parametrize("every", ["0.0001", "0.5s", "0.9"])
def test_report_every_below_a_second_is_refused(tmp_path: Path, every: str) -> None:
    m = tmp_path / "m.csv"
    m.write_text("id,model,prompt,aspect_ratio\na,z-image,fine,1:1\n")
    env = {"LIANGXIN_API_KEY": "sk-test-000000", "LIANGXIN_BASE_URL": "http://127.0.0.1:9"}
    args = ["run", str(m), "--out", str(tmp_path / "o"), "--report-every", every]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert "--report-every" in result.stderr and every in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "state.db").exists()
    with pytest.raises(ValueError, match="report_every"):
        RunSettings(report_every=0.5)
    assert RunSettings(report_every=0).report_every == 0  # only at the end
    assert RunSettings(report_every=1).report_every == 1


def test_an_interrupted_big_run_leaves_no_running_banner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C on a batch too big to rebuild the reports at once keeps the last
    refreshed page, written again without "the batch was still running"."""
    import liangxin_batch.run._run as run_module

    monkeypatch.setattr(run_module, "REPORTS_ON_INTERRUPT_MAX_JOBS", 10)
    manifest = tmp_path / "m.csv"
    write_manifest(manifest)
    out = tmp_path / "out"
    pages: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        app = create_app(SimConfig(api_key=KEY, seed=8), clock=loop.time)
        transport = httpx.ASGITransport(app=app)
        handle = RunHandle()

        def interrupt() -> None:
            pages.append((out / "report.html").read_text("utf-8"))
            handle.interrupt()

        loop.call_later(12.0, interrupt)
        await run_batch_async(
            manifest, out_dir=out, settings=RunSettings(report_every=3.0), api_key=KEY,
            base_url="http://sim", transport=transport, download_transport=transport,
            handle=handle,
        )  # fmt: skip

    run_virtual(main)
    assert re.search(r"as of \d\d:\d\d UTC the batch was still running", pages[0])
    assert "the batch was still running" not in (out / "report.html").read_text("utf-8")
    assert snapshot(out) is not None  # the page still lists what its data files hold


def test_a_settled_page_no_longer_says_the_batch_runs(tmp_path: Path) -> None:
    """What the end of a run that wrote no report does (nothing changed since the last
    one, a Ctrl-C on a big batch, an error): the last refreshed page, settled."""
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(job_rows(3))
    live = LiveReport(tmp_path, store)
    live.settle()  # no refresh wrote a page: nothing to settle
    assert not (tmp_path / "report.html").exists()
    for _ in live.steps():
        pass
    assert snapshot(tmp_path) == (0, True)
    live.settle()
    assert snapshot(tmp_path) == (0, False)
    store.close()


def test_report_files_are_written_by_the_shared_atomic_helper(tmp_path: Path) -> None:
    """One way to write a file whole (outputs/_atomic.py: `.NAME.<random>.part`), not a
    copy of it keyed by the process id (two writers of one process would share a name);
    a failed write leaves no temporary file in report/data."""
    from liangxin_batch.outputs import _atomic, _gallery, _report_data

    assert not hasattr(_report_data, "_write_atomic")
    assert vars(_report_data)["write_atomic"] is _atomic.write_atomic
    assert vars(_gallery)["write_atomic"] is _atomic.write_atomic
    folder = tmp_path / "data"
    (folder / "idx.js").mkdir(parents=True)  # a directory where a file must go: fails
    with pytest.raises(OSError):
        _atomic.write_atomic(folder / "idx.js", b"LX.index();\n")
    assert [p.name for p in folder.iterdir()] == ["idx.js"]
