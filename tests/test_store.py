from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from liangxin_batch.core._states import JobState
from liangxin_batch.errors import StateError
from liangxin_batch.state import _checks as checks
from liangxin_batch.state._backends import open_state
from liangxin_batch.state._store import MIGRATIONS, StateStore
from tests.state_support import drive


def rows(n: int, start: int = 0) -> list[tuple[str, int, str, str, str, str]]:
    return [
        (f"j{i:05d}", i, "z-image", json.dumps({"prompt": f"p{i}"}), "{}", f"h{i}")
        for i in range(start, start + n)
    ]


def test_migrations_apply_once_and_survive_reopen(tmp_path: Path, state_url: str | None) -> None:
    store = open_state(tmp_path, url=state_url)
    assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    store.upsert_jobs(rows(3))
    store.close()
    again = open_state(tmp_path, url=state_url)
    assert again.applied_migrations() == [name for name, _ in MIGRATIONS]
    assert [j.job_id for j in again.iter_jobs()] == ["j00000", "j00001", "j00002"]
    if state_url is None:
        assert again.sqlite.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_state_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    StateStore.in_dir(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("INSERT INTO _migrations VALUES ('999_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer liangxin-batch"):
        StateStore.in_dir(tmp_path)


def test_garbage_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="damaged"):
        StateStore.in_dir(tmp_path)


def test_transition_is_committed_before_returning(tmp_path: Path, state_url: str | None) -> None:
    store = open_state(tmp_path, url=state_url)
    store.upsert_jobs(rows(1))
    store.begin_attempt("j00000", 1)
    # A second connection (another process after a crash) sees the intent at once.
    other = open_state(tmp_path, url=state_url, readonly=True)
    sql = "SELECT state, attempt, task_id FROM jobs"
    assert other.db.execute(sql).fetchone() == ("submitting", 1, None)
    drive(store, "j00000", JobState.SUBMITTED, task_id="t-1")
    assert other.db.execute(sql).fetchone() == ("submitted", 1, "t-1")
    other.close()
    store.close()


def test_iter_jobs_pages_in_manifest_order_while_states_change(
    tmp_path: Path, state_url: str | None
) -> None:
    store = open_state(tmp_path, url=state_url)
    store.upsert_jobs(list(reversed(rows(2500))))
    seen = []
    for job in store.iter_jobs([JobState.PENDING]):
        seen.append(job.idx)
        drive(store, job.job_id, JobState.SUBMITTED)
    assert seen == list(range(2500))
    store.close()


def test_task_ids_are_unique(tmp_path: Path, state_url: str | None) -> None:
    store = open_state(tmp_path, url=state_url)
    store.upsert_jobs(rows(2))
    store.update("j00000", task_id="t-1")
    with pytest.raises(sqlite3.IntegrityError):
        store.update("j00001", task_id="t-1")
    row = store.by_task_id("t-1")
    assert row is not None and row.job_id == "j00000"
    store.close()


def test_upsert_keeps_progress_of_known_jobs(tmp_path: Path, state_url: str | None) -> None:
    store = open_state(tmp_path, url=state_url)
    store.upsert_jobs(rows(2))
    drive(store, "j00000", JobState.DONE, task_id="t-1")
    again = rows(1, start=1)  # the manifest again, as a sync sees it: no j00000
    store.start_membership()
    store.mark_seen([r[0] for r in again])
    store.upsert_jobs(again)
    assert store.end_membership() == 1
    job = store.get("j00000")
    assert job is not None and job.state is JobState.DONE and job.task_id == "t-1"
    absent = store.db.execute("SELECT job_id FROM jobs WHERE in_manifest = 0").fetchall()
    assert absent == [("j00000",)]
    store.close()


def commit_levels(store: StateStore) -> list[tuple[str, str]]:
    """(the statement's first words, the synchronous level) of each COMMIT, as run."""
    seen: list[tuple[str, str]] = []
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    level = [names[store.db.execute("PRAGMA synchronous").fetchone()[0]]]
    began = [""]

    def trace(sql: str) -> None:
        upper = sql.strip().upper()
        if upper.startswith("PRAGMA SYNCHRONOUS="):
            level[0] = upper.split("=", 1)[1]
        elif upper.startswith(("UPDATE JOBS", "INSERT OR REPLACE INTO FILES")) and not began[0]:
            began[0] = " ".join(upper.split()[:3])
        elif upper == "COMMIT":
            seen.append((began[0], level[0]))
            began[0] = ""

    store.sqlite.set_trace_callback(trace)
    return seen


def test_money_commits_are_fsynced_and_bookkeeping_is_not(tmp_path: Path) -> None:
    """The intent before the POST and the taskId on arrival commit with synchronous=FULL
    (they survive power loss); a poll's answer, a file's row and the download's end are
    re-derived on resume and commit without an fsync of their own (NORMAL): 0.3 ms of a
    blocked event loop each, several per job."""
    from liangxin_batch.core._states import Event
    from liangxin_batch.state._rows import FileRow

    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(rows(1))
    levels = commit_levels(store)
    assert store.begin_attempt("j00000", 1)
    assert store.transition("j00000", Event.CREATED, attempt=1, task_id="t1")
    assert store.transition("j00000", Event.TASK_SUCCEEDED, result_urls=["http://x/1.png"])
    store.record_file(FileRow("j00000", 0, "http://x/1.png", "a.png", "00", 1, 1))
    assert store.finish_download("j00000", 1, result_urls=["http://x/1.png"])
    assert [level for _, level in levels] == ["FULL", "FULL", "NORMAL", "NORMAL", "NORMAL"]
    store.close()


def test_a_durable_write_inside_a_bookkeeping_transaction_is_refused(tmp_path: Path) -> None:
    """SQLite changes the level only between transactions: the outermost decides, so a
    money write must never hide inside a bookkeeping one."""
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(rows(1))
    with (
        pytest.raises(AssertionError, match="durable write inside"),
        store.transaction(durable=False),
    ):
        store.begin_attempt("j00000", 1)
    job = store.get("j00000")
    assert job is not None and job.state is JobState.PENDING  # rolled back
    store.close()


def test_a_read_only_open_skips_the_integrity_scan_but_refuses_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PRAGMA quick_check` reads every page: 8 s of a million-job `export` or `report`,
    which send nothing. Only a run (it may pay) scans the file first; a reader still
    refuses a file that is not a state."""
    import liangxin_batch.state._checks as checks

    scanned: list[Path] = []
    real = checks._check_integrity

    def counting(path: Path) -> None:
        scanned.append(path)
        real(path)

    monkeypatch.setattr(checks, "_check_integrity", counting)
    StateStore.in_dir(tmp_path).close()
    StateStore.in_dir(tmp_path).close()
    assert len(scanned) == 1, "the writer's open of an existing state is scanned"
    StateStore.in_dir(tmp_path, readonly=True).close()
    assert len(scanned) == 1, "a reader's open is not"
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="cannot use this state file"):
        StateStore.in_dir(tmp_path, readonly=True)


@pytest.mark.parametrize("name", ["p-r#1", "what?", "100%41", "a b&c=d"])
def test_a_folder_named_with_uri_characters_opens_read_only_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The read-only open goes through an SQLite URI: `#` or `?` in the folder's path
    cut it short (mode=ro dropped: SQLite created an empty file beside the folder) and
    `%41` was read as an escape. status/report/export failed on a folder `run` used."""
    monkeypatch.chdir(tmp_path)
    out = Path(name) / "o"
    out.mkdir(parents=True)
    StateStore.in_dir(out).close()  # as a run leaves it
    before = sorted(p.name for p in tmp_path.iterdir())
    reader = StateStore.in_dir(out, readonly=True)
    assert reader.counts() == {}
    reader.close()
    checks._check_integrity(out / "state.db")  # a damaged state's check, same URI
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing created"
