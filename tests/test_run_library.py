"""`run_batch` from Python: records or a DataFrame in, a summary out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from liangxin_batch import ManifestError, RunSettings, RunSummary, run_batch_async
from liangxin_batch.simulator import SimConfig, Simulator, create_app
from tests.runner_harness import KEY
from tests.sim_support import sim_of
from tests.virtual_time import run_virtual


def run_records(out: Path, source: object) -> tuple[RunSummary, Simulator]:
    return run_records_with(out, source, RunSettings(max_in_flight=10))


def run_records_with(
    out: Path, source: object, settings: RunSettings, *, seed: int = 0, catalog: Any = None
) -> tuple[RunSummary, Simulator]:
    async def main() -> tuple[RunSummary, Simulator]:
        loop = asyncio.get_running_loop()
        app = create_app(SimConfig(api_key=KEY, seed=seed), clock=loop.time)
        transport = httpx.ASGITransport(app=app)
        summary = await run_batch_async(
            source,
            out_dir=out,
            settings=settings,
            api_key=KEY,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
            catalog=catalog,
        )
        return summary, sim_of(app)

    return run_virtual(main)


def test_dataframe_runs_and_results_join_back(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": ["a-001", "a-002", "a-003"],
            "model": ["z-image", "z-image", "google/nano-banana"],
            "prompt": ["one", "two", "three"],
            "aspect_ratio": ["1:1", "16:9", None],
        }
    )
    summary, sim = run_records(tmp_path, frame)
    assert summary.counts == {"succeeded": 3}
    assert summary.exit_code == 0
    results = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert list(results["job_id"]) == ["a-001", "a-002", "a-003"]
    assert set(results["status"]) == {"succeeded"}
    assert len(sim.ledger.creates()) == 3


def test_bad_records_raise_before_anything_is_sent(tmp_path: Path) -> None:
    records = [{"model": "z-image", "prompt": "x", "aspect_ratio": "16-9"}]
    with pytest.raises(ManifestError, match="16:9"):
        run_records(tmp_path, records)
    assert not (tmp_path / "state.db").exists()


def test_run_log_has_every_transition_and_never_the_key(tmp_path: Path) -> None:
    records = [
        {"id": f"j{i}", "model": "z-image", "prompt": f"p{i}", "aspect_ratio": "1:1"}
        for i in range(4)
    ]
    run_records(tmp_path, records)
    log = (tmp_path / "run.log").read_text(encoding="utf-8")
    for i in range(4):
        assert f"j{i}: submitted z-image as task " in log
        assert f"j{i}: done, 1 file(s) verified" in log
    assert log.count(" succeeded by poll") == 4
    assert KEY not in log


#: Paths opened since the hook went in (an audit hook: the real `open`, not a stand-in).
_OPENED: list[str] = []
_HOOKED = False


def _watch_opens() -> None:
    global _HOOKED
    if not _HOOKED:
        import sys

        def hook(event: str, args: tuple[object, ...]) -> None:
            if event == "open" and isinstance(args[0], str | Path):
                _OPENED.append(str(args[0]))

        sys.addaudithook(hook)
        _HOOKED = True


def test_a_run_reads_its_manifest_once(tmp_path: Path) -> None:
    """Validation, the output layout's column check and the sync share one reading: a
    million-row manifest is converted once, not three times (the other open hashes its
    bytes for the fingerprint)."""
    manifest = tmp_path / "prompts.csv"
    rows = "".join(f"p-{i},z-image,prompt {i},1:1\n" for i in range(30))
    manifest.write_text("id,model,prompt,aspect_ratio\n" + rows, encoding="utf-8")
    _watch_opens()
    before = len(_OPENED)
    settings = RunSettings(max_in_flight=10, layout="{prompt}/{job_id}")
    summary, sim = run_records_with(tmp_path / "out", manifest, settings)
    opened = [p for p in _OPENED[before:] if Path(p) == manifest]
    assert summary.counts == {"succeeded": 30}
    assert len(sim.ledger.creates()) == 30
    assert len(opened) == 2, opened


def test_a_resume_of_an_unchanged_manifest_neither_validates_nor_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million-row resume spent 18 s validating and 50 s syncing what the state already
    held. Unchanged bytes, catalog and options: neither happens; an appended row: both."""
    import liangxin_batch.manifest._manifest as manifest_module

    real = manifest_module.validate_manifest
    parsed: list[Path] = []  # what validation parsed (the fingerprint's hash is not)

    def counting(path: Path, **kw: Any) -> Any:
        parsed.append(path)
        return real(path, **kw)

    monkeypatch.setattr(manifest_module, "validate_manifest", counting)
    manifest = tmp_path / "prompts.csv"
    rows = "".join(f"p-{i},z-image,prompt {i},1:1\n" for i in range(6))
    manifest.write_text("id,model,prompt,aspect_ratio\n" + rows, encoding="utf-8")
    settings = RunSettings(max_in_flight=10, layout="{prompt}/{job_id}")
    out = tmp_path / "out"
    summary, _ = run_records_with(out, manifest, settings)
    assert summary.counts == {"succeeded": 6}
    assert len(parsed) == 1

    summary, sim = run_records_with(out, manifest, settings)
    assert summary.counts == {"succeeded": 6}
    assert len(parsed) == 1, "an unchanged manifest is not validated again"
    assert sim.ledger.creates() == []

    with manifest.open("a", encoding="utf-8") as fh:
        fh.write("p-new,z-image,one more,1:1\n")
    summary, sim = run_records_with(out, manifest, settings, seed=1)  # new task ids
    assert summary.counts == {"succeeded": 7}
    assert len(parsed) == 2
    assert len(sim.ledger.creates()) == 1


def test_a_catalog_change_to_models_the_batch_does_not_use_is_no_reason_to_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any change to the catalog (a user's own model added, a new version's latencies)
    made a million-row resume validate and sync every row again: 92 s. Only the specs of
    the models the batch uses decide what its rows validate to."""
    from dataclasses import replace

    import liangxin_batch.manifest._manifest as manifest_module
    from liangxin_batch.catalog._catalog import Catalog, default_catalog

    real = manifest_module.validate_manifest
    parsed: list[Path] = []

    def counting(path: Path, **kw: Any) -> Any:
        parsed.append(path)
        return real(path, **kw)

    monkeypatch.setattr(manifest_module, "validate_manifest", counting)
    manifest = tmp_path / "prompts.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\np-0,z-image,a cat,1:1\n", encoding="utf-8")
    settings = RunSettings(max_in_flight=10)
    out = tmp_path / "out"
    base = default_catalog()
    run_records_with(out, manifest, settings, catalog=base)
    assert len(parsed) == 1

    def changed(model: str) -> Catalog:
        spec = base.models[model]
        return Catalog({**base.models, model: replace(spec, typical_seconds=99.0)}, base.credit_usd)

    summary, sim = run_records_with(out, manifest, settings, catalog=changed("nano-banana-pro"))
    assert len(parsed) == 1, "a model the batch does not use changed: nothing read again"
    assert summary.counts == {"succeeded": 1} and sim.ledger.creates() == []
    run_records_with(out, manifest, settings, catalog=changed("z-image"))
    assert len(parsed) == 2, "a model the batch uses changed: read and checked again"


def test_a_run_that_changed_nothing_leaves_the_reports_alone(tmp_path: Path) -> None:
    """A resume of a finished million-job batch rebuilt results.csv and report.html from
    scratch (minutes, and most of the bytes a run writes) although nothing had changed."""
    manifest = tmp_path / "prompts.csv"
    rows = "".join(f"p-{i},z-image,prompt {i},1:1\n" for i in range(4))
    manifest.write_text("id,model,prompt,aspect_ratio\n" + rows, encoding="utf-8")
    out = tmp_path / "out"
    settings = RunSettings(max_in_flight=10)
    run_records_with(out, manifest, settings)
    results, report = out / "results.csv", out / "report.html"
    stamps = (results.stat().st_mtime_ns, report.stat().st_mtime_ns)

    run_records_with(out, manifest, settings)
    assert (results.stat().st_mtime_ns, report.stat().st_mtime_ns) == stamps

    results.unlink()  # gone: made again
    run_records_with(out, manifest, settings)
    assert results.exists()

    with manifest.open("a", encoding="utf-8") as fh:
        fh.write("p-new,z-image,one more,1:1\n")
    run_records_with(out, manifest, settings, seed=1)  # a new job: both rebuilt
    assert "p-new" in results.read_text(encoding="utf-8")
    assert report.stat().st_mtime_ns != stamps[1]
