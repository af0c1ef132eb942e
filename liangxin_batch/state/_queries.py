"""The store's reads: every query the runner, reports, status and tests ask of a state.

`StateStore` inherits these; a store opened `readonly=True` (status, report, export)
offers only them in practice. Pages follow unique keys, so walks over a million jobs
stay linear and safe while a run writes.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from liangxin_batch.core._accounts import DEFAULT_ACCOUNT
from liangxin_batch.core._provenance import stem_key
from liangxin_batch.core._states import BILLED_STATES, PROBLEM_STATES, JobState
from liangxin_batch.state._db import Connection, dialect
from liangxin_batch.state._migrations import GENERATED_STATES_SQL, report_seconds
from liangxin_batch.state._rows import (
    EXPORT_JOB_SELECT,
    FILE_COLUMNS,
    JOB_COLUMNS,
    REPORT_JOB_SELECT,
    AttemptRow,
    Credits,
    EventRow,
    FileRow,
    JobRow,
    ReportFile,
    ReportJob,
    row_to_job,
    rows_to_report_jobs,
)

__all__ = ["StoreQueries", "marks"]

_Row = TypeVar("_Row", JobRow, ReportJob)


def _position(job: JobRow | ReportJob) -> tuple[int, str]:
    return job.idx, job.job_id


def _jobs(rows: list[Any]) -> Iterator[JobRow]:
    return map(row_to_job, rows)


def marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


#: The JSON the store reads in SQL, in each backend's functions: a job's manifest column
#: names in order (`keys`), how many result URLs it has (`urls`), and whether file `f`
#: is still the one at its place in the job's result URLs (`current`).
_JSON: dict[str, dict[str, str]] = {
    "sqlite": {
        "keys": "(SELECT json_group_array(key) FROM json_each(columns_json))",
        "urls": "json_array_length(COALESCE(j.result_urls, '[]'))",
        "current": "f.n < json_array_length(j.result_urls)"
        " AND json_extract(j.result_urls, '$[' || f.n || ']') = f.url",
    },
    "postgres": {
        "keys": "COALESCE((SELECT json_agg(k ORDER BY o)::text"
        " FROM json_each(columns_json::json) WITH ORDINALITY AS e(k, v, o)), '[]')",
        "urls": "json_array_length(COALESCE(j.result_urls, '[]')::json)",
        "current": "f.n < json_array_length(j.result_urls::json)"
        " AND (j.result_urls::json ->> f.n::int) = f.url",
    },
}


class StoreQueries:
    """Read-only queries over `self.db` (the store's one connection)."""

    db: Connection

    # -- jobs: reading ----------------------------------------------------------------

    def get(self, job_id: str) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return row_to_job(row) if row else None

    def by_task_id(self, task_id: str) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE task_id = ?", (task_id,)
        ).fetchone()
        return row_to_job(row) if row else None

    def iter_jobs(
        self, states: Iterable[JobState] | None = None, *, in_manifest: bool | None = None
    ) -> Iterator[JobRow]:
        """Jobs in manifest order, streamed in pages.

        Pages follow the unique key (idx, job_id), so jobs that share a position (an
        edited manifest) are never skipped, and rows changed while walking are safe.
        A worker of a shared batch (`holder` set, state/_workers.py) walks only the jobs
        it holds: what it claimed, by the index of held jobs.
        """
        select = f"SELECT {JOB_COLUMNS} FROM jobs"
        holder: str | None = getattr(self, "holder", None)
        if holder is None:
            return self._walks(states, in_manifest, select, _jobs)
        where, params = "worker = ? AND ", [holder]
        if in_manifest is not None:
            where += f"in_manifest = {int(in_manifest)} AND "
        if states is not None:
            wanted = [JobState(s).value for s in dict.fromkeys(states)]
            where += f"state IN ({marks(wanted)}) AND "
            params += wanted
        return self._walk(select, where, params, _jobs)

    def iter_report_jobs(
        self,
        states: Iterable[JobState] | None = None,
        *,
        in_manifest: bool | None = True,
        positions: tuple[int, int] | None = None,
        inputs: bool = True,
    ) -> Iterator[ReportJob]:
        """`iter_jobs`, as the light rows results.csv, exports and report.html read, each
        with its files (`ReportJob.files`); `positions`: only jobs of lo <= idx < hi (a
        segment of results.csv); `inputs=False`: `input_json` is left '' (not read)."""
        select = REPORT_JOB_SELECT if inputs else EXPORT_JOB_SELECT
        if positions is None:
            return self._walks(states, in_manifest, select, self._report_page)
        if states is not None or in_manifest is not True:
            raise ValueError("a segment holds every job of the manifest in its positions")
        # A range of jobs_by_position (in_manifest, idx, job_id), paged as any walk.
        where = "in_manifest = 1 AND jobs.idx >= ? AND jobs.idx < ? AND"
        return self._walk(select, where, list(positions), self._report_page)

    def _report_page(self, rows: list[Any]) -> list[ReportJob]:
        jobs = rows_to_report_jobs(rows)
        several = [j.job_id for j in jobs if len(j.result_urls) > 1]
        if not several:
            return jobs
        found = self.report_files(several)
        return [
            j._replace(files=tuple(found.get(j.job_id, ()))) if len(j.result_urls) > 1 else j
            for j in jobs
        ]

    def _walks(
        self,
        states: Iterable[JobState] | None,
        in_manifest: bool | None,
        select: str,
        convert: Callable[[list[Any]], Iterable[_Row]],
    ) -> Iterator[_Row]:
        manifest = "" if in_manifest is None else f"in_manifest = {int(in_manifest)} AND "
        wanted = None if states is None else [JobState(s).value for s in dict.fromkeys(states)]
        if wanted is None:
            return self._walk(select, manifest, [], convert)
        # By the state's index, membership only filtered (`+`): the planner otherwise
        # walks the whole manifest's order for the few pending jobs of a finished batch.
        manifest = manifest.replace("in_manifest", "+in_manifest")
        if len(wanted) == 1:  # the runner's walks: one state, by its index
            return self._walk(select, f"state = ? AND {manifest}", wanted, convert)
        # reports: manifest order, one index walk per state, merged
        walks = [self._walk(select, f"state = ? AND {manifest}", [s], convert) for s in wanted]
        return heapq.merge(*walks, key=_position)

    def _walk(
        self,
        select: str,
        where: str,
        params: list[Any],
        convert: Callable[[list[Any]], Iterable[_Row]],
    ) -> Iterator[_Row]:
        # Flattened in C: a generator passing each row on cost a frame switch per job.
        return itertools.chain.from_iterable(self._pages(select, where, params, convert))

    def _pages(
        self,
        select: str,
        where: str,
        params: list[Any],
        convert: Callable[[list[Any]], Iterable[_Row]],
    ) -> Iterator[Iterable[_Row]]:
        # `select` reads jobs (maybe joined) and starts with job_id, idx: the page key.
        last: tuple[int, str] = (-(2**62), "")
        while True:
            rows = self.db.execute(
                f"{select} WHERE {where} (jobs.idx, jobs.job_id) > (?, ?)"
                " ORDER BY jobs.idx, jobs.job_id LIMIT 1000",
                [*params, *last],
            ).fetchall()
            if not rows:
                return
            yield convert(rows)
            last = (rows[-1][1], rows[-1][0])

    def job_ids(self, state: JobState, *, in_manifest: bool = True, limit: int = 50) -> list[str]:
        # `+in_manifest`: by state (few rows, already in order), never along the whole
        # manifest's order looking for them (0.44 s at a million jobs).
        return [
            r[0]
            for r in self.db.execute(
                "SELECT job_id FROM jobs WHERE state = ? AND +in_manifest = ?"
                " ORDER BY idx, job_id LIMIT ?",
                (state.value, int(in_manifest), limit),
            )
        ]

    # Counts and sums come from `tallies`, kept by triggers (migration 006): a few rows,
    # whatever the size of the batch.

    def counts(self, *, in_manifest: bool | None = None) -> dict[str, int]:
        """Jobs per state (only those in, or out of, the manifest when asked)."""
        where = "" if in_manifest is None else f"WHERE in_manifest = {int(in_manifest)}"
        return {
            state: n
            for state, n in self.db.execute(
                f"SELECT state, SUM(n) FROM tallies {where} GROUP BY state"
            )
            if n
        }

    def counts_by_model(self, *, in_manifest: bool | None = None) -> dict[str, dict[str, int]]:
        """Jobs per model and state (only those in, or out of, the manifest when asked)."""
        where = "" if in_manifest is None else f"WHERE in_manifest = {int(in_manifest)}"
        by_model: dict[str, dict[str, int]] = {}
        for model, state, n in self.db.execute(
            f"SELECT model, state, SUM(n) FROM tallies {where} GROUP BY model, state"
        ):
            if n:
                by_model.setdefault(model, {})[state] = n
        return by_model

    def removed_count(self) -> int:
        """Jobs in the state that the manifest no longer has."""
        row = self.db.execute("SELECT SUM(n) FROM tallies WHERE in_manifest = 0").fetchone()
        return int(row[0] or 0)

    def credits(self, *, in_manifest: bool | None = None) -> Credits:
        """Credits of the generations that succeeded: charged, and estimated where the
        service did not say (only of jobs in, or out of, the manifest when asked)."""
        states = [s.value for s in BILLED_STATES]
        member = "" if in_manifest is None else f" AND in_manifest = {int(in_manifest)}"
        charged, estimated = self.db.execute(
            "SELECT COALESCE(SUM(credits), 0), COALESCE(SUM(estimated), 0)"
            f" FROM tallies WHERE state IN ({marks(states)}){member}",
            states,
        ).fetchone()
        return Credits(charged / 1_000_000, estimated / 1_000_000)  # kept in millionths

    def report_tallies(self) -> list[tuple[str, str, int, int, int]]:
        """(model, state, jobs, credits, estimated) of the manifest's jobs, credits in
        millionths: report.html's summary without a walk of the jobs."""
        return [
            (model, state, n, credits, estimated)
            for model, state, n, credits, estimated in self.db.execute(
                "SELECT model, state, SUM(n), SUM(credits), SUM(estimated) FROM tallies"
                " WHERE in_manifest = 1 GROUP BY model, state"
            )
            if n
        ]

    def generation_percentiles(self, model: str, ps: Sequence[float]) -> list[float | None]:
        """Nearest-rank percentiles (each of `ps` in 0..100) of the generation times of the
        manifest's jobs of `model` whose generation succeeded; None when there are none.
        The jobs counted once, then an index search and an offset per percentile
        (jobs_report_seconds), not a read of the jobs."""
        # INDEXED BY: the planner would take jobs_by_model_state (then read and sort every
        # job of the model) where its statistics are thin; this index answers both.
        seconds = report_seconds(self.db)
        where = (
            "FROM jobs INDEXED BY jobs_report_seconds"
            f" WHERE model = ? AND in_manifest = 1 AND {GENERATED_STATES_SQL}"
            f" AND {seconds} IS NOT NULL"
        )
        (count,) = self.db.execute(f"SELECT COUNT(*) {where}", (model,)).fetchone()
        found: list[float | None] = []
        for p in ps:
            if not count:
                found.append(None)
                continue
            rank = max(0, math.ceil(p / 100 * count) - 1)
            row = self.db.execute(
                f"SELECT {seconds} {where} ORDER BY {seconds} LIMIT 1 OFFSET ?",
                (model, rank),
            ).fetchone()
            found.append(None if row is None else float(row[0]))
        return found

    def result_segments(self) -> dict[int, tuple[int, bool]]:
        """(version, dirty) of each segment of results.csv (state/_migrations.py
        SEGMENT_JOBS): dirty, its version raised, once a job of it or a job's file
        changed since `clean_result_segment`."""
        return {
            seg: (version, bool(dirty))
            for seg, version, dirty in self.db.execute(
                "SELECT seg, version, dirty FROM result_segments"
            )
        }

    def report_segments(self) -> dict[int, tuple[int, bool]]:
        """(version, dirty) of each segment of the report's data files, as
        `result_segments` for results.csv (migration 010)."""
        return {
            seg: (version, bool(dirty))
            for seg, version, dirty in self.db.execute(
                "SELECT seg, version, dirty FROM report_segments"
            )
        }

    def report_span(self) -> tuple[float | None, float | None]:
        """The manifest's first submission and last completion (0 counts as unset). Reads
        every job: asked only of a state without a record of its sessions."""
        first, last = self.db.execute(
            "SELECT MIN(NULLIF(submitted_at, 0)), MAX(NULLIF(completed_at, 0)) FROM jobs"
            " WHERE in_manifest = 1"
        ).fetchone()
        return first, last

    def recent_generations(self, limit: int = 1000) -> list[JobRow]:
        """The last `limit` jobs whose generation succeeded, oldest first: how long tasks
        took in earlier runs (a resume starts with its latencies learned)."""
        states = [s.value for s in BILLED_STATES]
        rows = self.db.execute(
            # `+state`: walk jobs_by_completion newest first and stop at `limit`, rather
            # than every succeeded job by state and a sort.
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE +state IN ({marks(states)})"
            " AND generation_seconds IS NOT NULL AND completed_at IS NOT NULL"
            " ORDER BY completed_at DESC LIMIT ?",
            (*states, limit),
        ).fetchall()
        return [row_to_job(r) for r in reversed(rows)]

    def oldest_in_flight(self, limit: int = 5) -> list[tuple[str, str, float | None]]:
        return list(
            self.db.execute(
                "SELECT job_id, COALESCE(task_id, ''), submitted_at FROM jobs"
                " WHERE state = 'submitted' ORDER BY submitted_at LIMIT ?",
                (limit,),
            )
        )

    def recent_problems(self, limit: int = 5) -> list[tuple[float, str | None, str, str]]:
        kinds = [s.value for s in PROBLEM_STATES] + [JobState.PENDING.value]
        # The last few of each kind (an index search each), then the last few of all.
        found = [
            row
            for kind in kinds
            for row in self.db.execute(
                "SELECT id, at, job_id, kind, detail FROM events"
                " WHERE kind = ? ORDER BY id DESC LIMIT ?",
                (kind, limit),
            )
        ]
        found.sort(reverse=True)
        return [tuple(r[1:]) for r in found[:limit]]

    def submits_since(self, wall_time: float, *, account: str | None = None) -> list[float]:
        """When createTask intents were committed since `wall_time` (for the limiter): all
        of them, or those of one account (rows from before accounts: `default`'s)."""
        sql: str = ""
        params: list[object] = [wall_time]
        if account is not None:
            sql, params = " AND COALESCE(account, ?) = ?", [wall_time, DEFAULT_ACCOUNT, account]
        return [
            r[0]
            for r in self.db.execute(
                f"SELECT started_at FROM attempts WHERE started_at >= ?{sql} ORDER BY started_at",
                params,
            )
        ]

    def attempts(self, job_id: str | None = None) -> list[AttemptRow]:
        """Every createTask attempt (of one job), in order."""
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        return [
            AttemptRow(*r)
            for r in self.db.execute(
                "SELECT job_id, attempt, task_id, outcome, error_code, error_message, account"
                f" FROM attempts {where} ORDER BY job_id, attempt",
                params,
            )
        ]

    def events(self, job_id: str | None = None) -> list[EventRow]:
        """The history, oldest first (of one job)."""
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        return [
            EventRow(*r)
            for r in self.db.execute(
                f"SELECT at, job_id, kind, detail FROM events {where} ORDER BY id", params
            )
        ]

    def all_files(self) -> list[FileRow]:
        """Every recorded file, by job and number."""
        return [
            FileRow(*r)
            for r in self.db.execute(f"SELECT {FILE_COLUMNS} FROM files ORDER BY job_id, n")
        ]

    def transitions_taken(self) -> Iterator[tuple[str, str, str, str]]:
        """(job_id, from-state, to-state, event) of every transition, oldest first."""
        yield from self.db.execute(
            "SELECT job_id, from_state, to_state, event FROM events"
            " WHERE event IS NOT NULL ORDER BY id"
        )

    def change_stamp(self) -> str:
        """Changes when anything a report shows changes: every transition writes an
        event, and the tally counts jobs added and jobs out of the manifest (O(1))."""
        (last,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        total, members = self.db.execute(
            "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(n * in_manifest), 0) FROM tallies"
        ).fetchone()
        return f"{last}:{total}:{members}"

    def finished_by_counts(self) -> dict[str, int]:
        return {
            by: n
            for by, n in self.db.execute(
                "SELECT finished_by, SUM(n) FROM tallies WHERE finished_by != ''"
                " GROUP BY finished_by"
            )
            if n
        }

    def column_names(
        self, first: int | None = None, positions: tuple[int, int] | None = None
    ) -> Iterator[str]:
        """Manifest column names of every job in the manifest (of the `first` jobs; of
        those of lo <= idx < hi), in manifest order (each name at least once: first seen
        first)."""
        seen: set[str] = set()
        lo, hi = positions if positions is not None else (-(2**62), 2**62)
        # SQLite lists each job's names (json_each: in the object's order), and the few
        # distinct lists are decoded here: a million jobs share a handful of them.
        for (names,) in self.db.execute(
            f"SELECT {_JSON[dialect(self.db)]['keys']}"
            " FROM jobs WHERE in_manifest = 1 AND idx >= ? AND idx < ?"
            " ORDER BY idx, job_id LIMIT ?",
            (lo, hi, 2**62 if first is None else first),
        ):
            if names not in seen:
                if len(seen) == 10_000:  # bounded memory: a repeat is harmless, not wrong
                    seen.clear()
                seen.add(names)
                yield from json.loads(names)

    # -- files ------------------------------------------------------------------------

    def files_of(self, job_id: str) -> list[FileRow]:
        return [
            FileRow(*r)
            for r in self.db.execute(
                f"SELECT {FILE_COLUMNS} FROM files WHERE job_id = ? ORDER BY n", (job_id,)
            )
        ]

    def report_files(self, job_ids: Sequence[str]) -> dict[str, list[ReportFile]]:
        """The files of these jobs (a page of a report walk), by job, each job's by n."""
        found: dict[str, list[ReportFile]] = {}
        make = ReportFile._make
        for i in range(0, len(job_ids), 500):  # an older SQLite allows 999 variables
            chunk = job_ids[i : i + 500]
            for row in self.db.execute(
                "SELECT job_id, n, url, path, sha256, size, width, height, thumb FROM files"
                f" WHERE job_id IN ({marks(chunk)}) ORDER BY job_id, n",
                chunk,
            ):
                file = make(row)
                if file.job_id in found:
                    found[file.job_id].append(file)
                else:
                    found[file.job_id] = [file]
        return found

    def done_files(
        self, after: tuple[str, int] = ("", -1), limit: int = 1000
    ) -> list[tuple[FileRow, int]]:
        """The next `limit` files of `done` jobs after (job_id, n), each with how many
        result URLs its job has (a keyset page over the files' primary key)."""
        rows = self.db.execute(
            f"SELECT {', '.join('f.' + c for c in FILE_COLUMNS.split(', '))},"
            f" {_JSON[dialect(self.db)]['urls']}"
            # CROSS JOIN: SQLite keeps files as the outer loop, in its key's order.
            " FROM files f CROSS JOIN jobs j ON j.job_id = f.job_id"
            " WHERE (f.job_id, f.n) > (?, ?) AND j.state = 'done'"
            " ORDER BY f.job_id, f.n LIMIT ?",
            (*after, limit),
        ).fetchall()
        return [(FileRow(*r[:-1]), int(r[-1])) for r in rows]

    def done_current_files(
        self, after: tuple[str, int] = ("", -1), limit: int = 1000
    ) -> list[tuple[str, int, int, str, str, int | None]]:
        """The next `limit` files after (job_id, n) of the manifest's done jobs that are
        current (of the job's current result URLs), each as (job_id, n, idx, model, path,
        size): what a check of the files on disk reads, and no more (a keyset page over
        the files' primary key, as `done_files`)."""
        return self.db.execute(
            "SELECT f.job_id, f.n, j.idx, j.model, f.path, f.size"
            " FROM files f CROSS JOIN jobs j ON j.job_id = f.job_id"
            " WHERE (f.job_id, f.n) > (?, ?) AND j.state = 'done' AND j.in_manifest = 1"
            f" AND f.path IS NOT NULL AND {_JSON[dialect(self.db)]['current']}"
            " ORDER BY f.job_id, f.n LIMIT ?",
            (*after, limit),
        ).fetchall()

    def path_holders(self, path: str) -> list[tuple[str, int]]:
        """(job_id, n) of the files recorded at `path` or at its stem with any other
        extension (`NAME.*`: they would share the sidecar `NAME.json`), compared
        casefolded: one range search of the index files_by_path_key."""
        stem = stem_key(path.casefold())
        return [
            (job_id, n)
            for job_id, n, key in self.db.execute(
                "SELECT job_id, n, path_key FROM files WHERE path_key >= ? AND path_key < ?",
                # '/' follows '.': every key that starts with "stem." and nothing else.
                (stem + ".", stem + "/"),
            )
            if stem_key(key) == stem
        ]
