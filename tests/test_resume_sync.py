"""Resume against an edited manifest: new jobs added, changed ones refused, removed ones kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liangxin_batch.cli._launch import format_summary
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import StateError
from liangxin_batch.state._store import StateStore
from tests.runner_harness import SimEnv, in_virtual_time
from tests.state_support import drive, jobs_in


def rows(*prompts: str) -> list[dict[str, Any]]:
    return [
        {"id": f"j{i}", "model": "z-image", "prompt": p, "aspect_ratio": "1:1"}
        for i, p in enumerate(prompts)
    ]


def runs(out: Path, *manifests: tuple[list[dict[str, Any]], RunSettings]) -> list[Any]:
    """Run each manifest in turn on one simulator; a refusal is returned, not raised."""

    async def main() -> list[Any]:
        env = SimEnv()
        results: list[Any] = []
        for records, settings in manifests:
            try:
                results.append(await env.run_library(out, records, settings=settings))
            except StateError as err:
                results.append(err)
        results.append(env.sim.ledger)
        return results

    return in_virtual_time(main)


def snapshot(out: Path) -> list[Any]:
    """Every job exactly as the store reads it (a refused sync must change none)."""
    return sorted(jobs_in(out).values(), key=lambda j: j.job_id)


def test_changed_content_is_refused_and_the_state_is_left_untouched(tmp_path: Path) -> None:
    first, ledger = runs(tmp_path, (rows("a", "b"), RunSettings()))
    assert first.counts == {"succeeded": 2}
    before = snapshot(tmp_path)
    # j1 changes its prompt; j2 is new; j0 is dropped.
    refused, ledger = runs(tmp_path, (rows("a", "B!", "c")[1:], RunSettings()))
    assert isinstance(refused, StateError)
    assert "j1" in str(refused) and "--allow-changed" in str(refused)
    assert snapshot(tmp_path) == before, "nothing written: no new row, no membership change"
    assert ledger.creates() == []


def test_allow_changed_runs_the_new_content_and_reports_removed_jobs(tmp_path: Path) -> None:
    first, second, ledger = runs(
        tmp_path,
        (rows("a", "b"), RunSettings()),
        (rows("a", "B!", "c")[1:], RunSettings(allow_changed=True)),
    )
    assert isinstance(first, RunSummary) and isinstance(second, RunSummary)
    assert second.removed_jobs == 1  # j0 left the manifest: kept, not counted
    assert second.counts == {"succeeded": 2}
    # Credits are counted one way: the batch's own jobs above, the removed ones apart
    # (they were counted in the batch's credits while the summary said "not counted").
    jobs = jobs_in(tmp_path)
    assert second.credits == sum(j.credits or 0 for j in jobs.values() if j.job_id != "j0")
    assert second.removed_credits == (jobs["j0"].credits or 0) > 0
    said = format_summary(second, tmp_path)
    assert f"({second.removed_credits:g} credits)" in said and "not counted above" in said
    prompts = sorted(e.input["prompt"] for e in ledger.creates())
    assert prompts == ["B!", "a", "b", "c"], "j1 ran again with its new prompt; j2 ran once"
    # The image paid for with the old prompt is kept, out of the way of the new one,
    # with its provenance sidecar.
    kept = sorted((tmp_path / "superseded" / "j1" / "attempt-1").iterdir())
    assert [f.suffix for f in kept] == [".json", ".png"]
    current = [p for p in (tmp_path / "outputs").rglob("j1*") if p.suffix != ".json"]
    assert len(current) == 1 and current[0].read_bytes() != kept[1].read_bytes()


def test_allow_changed_waits_for_a_result_not_yet_downloaded(tmp_path: Path) -> None:
    (first, _ledger) = runs(tmp_path, (rows("a"), RunSettings()))
    assert first.counts == {"succeeded": 1}
    store = StateStore.in_dir(tmp_path)
    try:  # as if the run had stopped between generation and download
        drive(store, "j0", "succeeded")
        assert store.replace_content("j0", "z-image", "{}", "other-hash") is None
        job = store.get("j0")
        assert job is not None and job.result_urls, "the paid result is still reachable"
    finally:
        store.close()


def test_a_sync_writes_only_what_changed(tmp_path: Path) -> None:
    """The sync rewrote every row twice (membership off for all, then the upsert set it
    back): 2 million row writes to resume a million-job manifest with one row added."""
    from dataclasses import dataclass, field

    from liangxin_batch.state._sync import sync_jobs

    @dataclass(frozen=True)
    class J:
        job_id: str
        index: int
        model: str = "z-image"
        input: dict[str, Any] = field(default_factory=lambda: {"prompt": "p"})
        columns: dict[str, str] = field(default_factory=dict)
        content_hash: str = "h"

    store = StateStore.in_dir(tmp_path)
    wal = tmp_path / "state.db-wal"
    jobs = [J(f"j{i:04d}", i) for i in range(3000)]
    first_before = wal.stat().st_size
    first = sync_jobs(store, jobs, allow_changed=False)
    assert first.added == 3000
    first_growth = wal.stat().st_size - first_before

    before = wal.stat().st_size
    again = sync_jobs(store, jobs, allow_changed=False)
    assert again.added == 0 and again.removed == 0
    assert wal.stat().st_size == before, "an unchanged manifest writes nothing"

    before = wal.stat().st_size
    edited = [*jobs[1:], J("j-new", 3000)]  # one removed, one added
    report = sync_jobs(store, edited, allow_changed=False)
    assert (report.added, report.removed) == (1, 1)
    assert wal.stat().st_size - before < first_growth / 10  # pages of one row, not all
    assert {j.job_id for j in store.iter_jobs(in_manifest=True)} == {j.job_id for j in edited}
    assert [j.job_id for j in store.iter_jobs(in_manifest=False)] == ["j0000"]

    back = sync_jobs(store, jobs, allow_changed=False)  # the removed one comes back
    assert (back.added, back.removed) == (0, 1)
    assert [j.job_id for j in store.iter_jobs(in_manifest=False)] == ["j-new"]
    store.close()


def _csv(path: Path, rows: list[tuple[str, str]]) -> None:
    lines = ["id,model,prompt,aspect_ratio", *(f"{i},z-image,{p},1:1" for i, p in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_another_manifest_between_two_runs_of_a_file_invalidates_its_fingerprint(
    tmp_path: Path,
) -> None:
    """Review finding: records synced in between left the file's fingerprint behind, so
    the file's next run skipped its sync and ran the records' membership."""
    out = tmp_path / "out"
    manifest = tmp_path / "a.csv"
    _csv(manifest, [("j0", "a"), ("j1", "b")])
    records = [
        {"id": "j0", "model": "z-image", "prompt": "a", "aspect_ratio": "1:1"},
        {"id": "j9", "model": "z-image", "prompt": "other", "aspect_ratio": "1:1"},
    ]

    async def main() -> None:
        env = SimEnv()
        await env.run_library(out, manifest)  # type: ignore[arg-type]
        await env.run_library(out, records)
        await env.run_library(out, manifest)  # type: ignore[arg-type]

    in_virtual_time(main)
    jobs = jobs_in(out)
    assert jobs["j1"].in_manifest and not jobs["j9"].in_manifest


def test_a_yaml_manifest_is_synced_again_when_its_jobs_from_file_changes(
    tmp_path: Path,
) -> None:
    """Review finding: only the YAML's own bytes were fingerprinted, not the CSV it
    names: an edited CSV was never synced (removed rows would still be paid for)."""
    out = tmp_path / "out"
    rows = tmp_path / "prompts.csv"
    _csv(rows, [("j0", "a")])
    manifest = tmp_path / "m.yaml"
    manifest.write_text("jobs_from: prompts.csv\n", encoding="utf-8")

    async def main() -> SimEnv:
        env = SimEnv()
        await env.run_library(out, manifest)  # type: ignore[arg-type]
        _csv(rows, [("j1", "b")])
        await env.run_library(out, manifest)  # type: ignore[arg-type]
        return env

    env = in_virtual_time(main)
    jobs = jobs_in(out)
    assert jobs["j1"].in_manifest and not jobs["j0"].in_manifest
    assert len(env.sim.ledger.creates()) == 2
