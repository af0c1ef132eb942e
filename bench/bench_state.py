"""A big batch's state: resume, Ctrl-C, status, report, export and validate at 100,000
and 1,000,000 jobs (all but 1,000 done, with a small file on disk each).

    .venv/bin/python bench/bench_state.py                 # 100,000 jobs
    .venv/bin/python bench/bench_state.py --jobs 1000000  # about 10 minutes the first time

The state is built once per size under $TMPDIR/liangxin-bench-state/<jobs>/ (a first
run's validate and sync through the library, then the done jobs written straight into
the state with a file each, as a finished run leaves them) and copied afresh for each
measurement that changes it. Every command runs as its own process, as a user runs it:

- resume: `run` of the same manifest to the first createTask the simulator sees (and
  its peak RSS), then the rest of the 1,000 pending jobs (bytes written per job);
- Ctrl-C: SIGINT as the resume's first createTask lands, and again 0.5 s into a resume
  (still starting up): seconds to exit;
- `status`, the CPU of `--help` (and of the bare interpreter), `report` (thumbnails
  cached: run once before), `export --format parquet` and `--format csv`, and
  `validate` of the manifest. `--quick` stops after `--help`.

`--light` builds no state: only the manifest (under <jobs>-manifest/) and the figures that
need no state, `--help` CPU and `validate` of the manifest (what issue 14's start-up and
validation targets are about; a minute instead of ten at 1,000,000 jobs).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_runner import ledger, simulator_process  # noqa: E402

KEY = "sk-bench-state"
PENDING = 1000
MODEL = "z-image"
EXE = [sys.executable, "-m", "liangxin_batch"]


def _serve(queue: multiprocessing.Queue) -> None:
    from liangxin_batch.simulator import SimConfig, run_simulator

    config = SimConfig(
        api_key=KEY,
        create_limit=1000,
        create_window=1.0,
        poll_limit=1000,
        poll_window=1.0,
        latency_scale=0.02,
        seed=3,
    )
    run_simulator(config, "127.0.0.1", 0, on_ready=queue.put)


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def _sync(manifest: Path, out: Path) -> float:
    """Validate and sync the manifest into the state as a run does, when the state's
    fingerprint differs from the manifest's; the seconds it took."""
    t0 = time.perf_counter()
    from liangxin_batch._version import package_version
    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.manifest._fingerprint import manifest_fingerprint
    from liangxin_batch.run._manifest_jobs import load_manifest_jobs
    from liangxin_batch.state._store import StateStore
    from liangxin_batch.state._sync import FINGERPRINT_KEY, sync_jobs

    store = StateStore.in_dir(out)
    catalog = default_catalog()
    fingerprint = manifest_fingerprint(
        manifest,
        catalog=catalog,
        default_model=None,
        allow_outside=False,
        version=package_version(),
    )
    if store.get_meta(FINGERPRINT_KEY) != fingerprint:
        with load_manifest_jobs(manifest, catalog=catalog) as spool:
            # As a run leaves it: the fingerprint and the column names with the sync.
            sync_jobs(
                store,
                spool,
                allow_changed=False,
                fingerprint=fingerprint,
                column_names=lambda: spool.column_names,
            )
        store.set_meta({"manifest": str(manifest.resolve())})
    store.close()
    return time.perf_counter() - t0


def refresh(out: Path, manifest: Path) -> None:
    """A base built by an older catalog or version is validated and synced again once
    (every resume of it would, and no figure below is meant to count that)."""
    took = _sync(manifest, out)  # migrations first, as opening the store does
    if took > 1:
        print(f"  the base re-validated and re-synced (a changed catalog) in {took:.1f}s")
    _sidecars(out)


def _sidecars(out: Path) -> None:
    """Each done job's provenance sidecar, as a finished run leaves them (a base built
    before sidecars gets them once here: no resume below is meant to write them)."""
    from liangxin_batch.core._states import JobState
    from liangxin_batch.outputs._sidecars import read_job, write_sidecars
    from liangxin_batch.state._store import StateStore

    first = next((out / "outputs" / MODEL.replace("/", "-")).glob("*.json"), None)
    if first is not None:
        return
    t0 = time.perf_counter()
    store = StateStore.in_dir(out)
    written = 0
    try:
        for done in list(store.iter_jobs([JobState.DONE])):
            job = read_job(store, done.job_id)
            if job is not None:
                write_sidecars(out, job)
                written += 1
    finally:
        store.close()
    print(f"  {written:,} provenance sidecars written in {time.perf_counter() - t0:.1f}s")


def write_manifest(manifest: Path, jobs: int) -> None:
    """One model, one row per job: the shape validate counts a block at a time."""
    with manifest.open("w", encoding="utf-8") as fh:
        fh.write("id,model,prompt,aspect_ratio\n")
        for i in range(jobs):
            fh.write(f"s{i:07d},{MODEL},state benchmark prompt {i},1:1\n")


def build(base: Path, jobs: int) -> tuple[Path, Path]:
    """The manifest and the finished folder of a batch of `jobs` (cached in `base`)."""
    manifest, out = base / "manifest.csv", base / "out"
    if (base / "built").exists():
        return manifest, out
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    write_manifest(manifest, jobs)
    t0 = time.perf_counter()
    _sync(manifest, out)
    print(f"  built the state of {jobs:,} jobs in {time.perf_counter() - t0:.1f}s", flush=True)
    body = _png()
    digest = hashlib.sha256(body).hexdigest()
    db = sqlite3.connect(out / "state.db")
    done = jobs - PENDING
    now = time.time()
    folder = out / "outputs" / MODEL.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    batch: list[tuple[Any, ...]] = []
    for i in range(done):
        job_id = f"s{i:07d}"
        rel = f"outputs/{folder.name}/{job_id}.png"
        path = out / rel
        path.write_bytes(body)
        url = f"https://files.example/{job_id}.png"
        batch.append((job_id, rel, url, path.stat().st_mtime_ns))
        if len(batch) == 10_000 or i == done - 1:
            db.executemany(
                "UPDATE jobs SET state = 'done', attempt = 1, task_id = 'task-' || ?1,"
                " submitted_at = ?2, completed_at = ?2, result_urls = json_array(?3),"
                " finished_by = 'poll', polls = 1 WHERE job_id = ?1",
                [(j, now, u) for j, _, u, _ in batch],
            )
            db.executemany(
                "INSERT INTO files (job_id, n, url, path, sha256, size, mtime_ns)"
                " VALUES (?, 0, ?, ?, ?, ?, ?)",
                [(j, u, r, digest, len(body), m) for j, r, u, m in batch],
            )
            db.commit()
            batch = []
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(f"  {done:,} jobs done with a file each in {time.perf_counter() - t0:.1f}s", flush=True)
    _sidecars(out)
    _cli(["report", str(out)], check=True)  # thumbnails cached from here on
    (base / "built").write_text("ok")
    print(f"  report (thumbnails made) after {time.perf_counter() - t0:.1f}s", flush=True)
    return manifest, out


def _cli(args: list[str], *, check: bool = False, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([*EXE, *args], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise SystemExit(f"{args}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def _fresh(out: Path, work: Path) -> Path:
    """A copy of the finished folder's state (the files stay shared: hard links)."""
    target = work / "out"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out, target, copy_function=os.link, ignore=shutil.ignore_patterns("state.db*"))
    for name in ("state.db", "state.db-wal"):
        if (out / name).exists():
            shutil.copy2(out / name, target / name)
    from liangxin_batch.state._store import StateStore

    # Once per version, not per run: a state built by an older version is brought up to
    # date here, so no figure below counts a migration.
    StateStore.in_dir(target).close()
    return target


def _io_written(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def resume(base_url: str, manifest: Path, out: Path, *, interrupt: str | None) -> dict[str, float]:
    """One `run` of the manifest into `out`; `interrupt`: None, "first-create" or "start"."""
    env = os.environ | {"LIANGXIN_API_KEY": KEY, "LIANGXIN_BASE_URL": base_url}
    seen = len(ledger(base_url))
    args = [
        *EXE,
        "run",
        str(manifest),
        "--out",
        str(out),
        "--rate",
        "1000/1s",
        "--poll-rate",
        "1000/1s",
    ]
    t0 = time.perf_counter()
    # Nothing read from the run's output: it must not block on a full pipe. SIGINT as a
    # terminal sends it: a bench started in the background (`&`) hands its children an
    # ignored SIGINT, which a run would keep until its own handlers go in.
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = None
    sent_at = None
    written = 0
    while proc.poll() is None:
        written = _io_written(proc.pid) or written
        now = time.perf_counter()
        if first is None and interrupt != "start":
            events = ledger(base_url, since=seen)
            seen += len(events)
            if any(e.get("kind") == "create" for e in events):
                first = now - t0
        if sent_at is None and (
            (interrupt == "first-create" and first is not None)
            or (interrupt == "start" and now - t0 >= 0.5)
        ):
            proc.send_signal(signal.SIGINT)
            sent_at = now
        time.sleep(0.02)
    end = time.perf_counter()
    return {
        "first_create": first if first is not None else float("nan"),
        "exit_after_sigint": end - sent_at if sent_at is not None else float("nan"),
        "wall": end - t0,
        "written": written,
        "rc": proc.returncode,
    }


class Measured(NamedTuple):
    """What one run of a command cost: wall seconds, peak RSS (MB), user+system CPU s."""

    wall: float
    rss_mb: float
    cpu: float


def _measure(args: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command under /usr/bin/time: its wall time, peak RSS and CPU."""
    t0 = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    rss, user, system = done.stderr.strip().splitlines()[-1].split()
    return Measured(wall, int(rss) / 1024, float(user) + float(system))


def _cpu_seconds(args: list[str], times: int = 5) -> float:
    """The least user+system CPU of `times` runs of a command."""
    best = float("inf")
    for _ in range(times):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(args, capture_output=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, used)
    return best


def help_cpu() -> None:
    bare = _cpu_seconds([sys.executable, "-c", "pass"])
    # The installed command, as the issue names it (`python -m` adds runpy's imports).
    script = Path(sys.executable).parent / "liangxin-batch"
    cli = _cpu_seconds([*([str(script)] if script.exists() else EXE), "--help"])
    print(f"--help CPU                        {cli:.2f}s (the bare interpreter {bare:.2f}s)")


def validate(manifest: Path) -> None:
    """Wall, CPU (less moved by other work on the machine) and peak RSS of `validate`."""
    m = _measure([*EXE, "validate", str(manifest)])
    print(
        f"validate the manifest             {m.wall:.1f}s ({m.cpu:.1f}s CPU),"
        f" peak RSS {m.rss_mb:.0f} MB (load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )


def light(jobs: int) -> None:
    """Start-up and validate only: the manifest, no state."""
    base = Path(tempfile.gettempdir()) / "liangxin-bench-state" / f"{jobs}-manifest"
    manifest = base / "manifest.csv"
    if not manifest.exists():
        base.mkdir(parents=True, exist_ok=True)
        write_manifest(base / "manifest.tmp", jobs)
        (base / "manifest.tmp").rename(manifest)
    print(f"== {jobs:,} rows, no state", flush=True)
    help_cpu()
    validate(manifest)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="only start-up: resume, SIGINT, status, --help"
    )
    parser.add_argument(
        "--light", action="store_true", help="no state: only --help CPU and validate"
    )
    args = parser.parse_args()
    # Figures move with what else runs on the machine: say what did.
    print("load average at the start  " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.light:
        light(args.jobs)
        return
    base = Path(tempfile.gettempdir()) / "liangxin-bench-state" / str(args.jobs)
    if args.rebuild:
        shutil.rmtree(base, ignore_errors=True)
    print(f"== {args.jobs:,} jobs ({PENDING:,} pending)", flush=True)
    manifest, out = build(base, args.jobs)
    refresh(out, manifest)
    work = base / "work"
    work.mkdir(exist_ok=True)
    with simulator_process(_serve) as base_url:
        target = _fresh(out, work)
        r = resume(base_url, manifest, target, interrupt="first-create")
        print(
            f"resume to the first createTask    {r['first_create']:.2f}s; "
            f"SIGINT then -> exit {r['exit_after_sigint']:.2f}s (exit {r['rc']})",
            flush=True,
        )
        target = _fresh(out, work)
        r = resume(base_url, manifest, target, interrupt="start")
        print(f"SIGINT 0.5 s into a resume -> exit  {r['exit_after_sigint']:.2f}s", flush=True)
        print(f"status                            {_cli(['status', str(target)]):.2f}s", flush=True)
        help_cpu()
        if args.quick:
            shutil.rmtree(work, ignore_errors=True)
            return
        target = _fresh(out, work)
        r = resume(base_url, manifest, target, interrupt=None)
        print(
            f"a whole resume ({PENDING:,} jobs)    {r['wall']:.1f}s, first createTask "
            f"{r['first_create']:.2f}s, {r['written'] / PENDING / 1024:.0f} KiB written per "
            f"job run (exit {r['rc']})",
            flush=True,
        )
        env = os.environ | {"LIANGXIN_API_KEY": KEY, "LIANGXIN_BASE_URL": base_url}
        target = _fresh(out, work)
        wall, rss, _cpu = _measure(
            [
                *EXE,
                "run",
                str(manifest),
                "--out",
                str(target),
                "--rate",
                "1000/1s",
                "--poll-rate",
                "1000/1s",
            ],
            env,
        )
        print(f"peak RSS of a whole resume        {rss:.0f} MB ({wall:.1f}s)", flush=True)
    print(f"report (thumbnails cached)        {_cli(['report', str(target)]):.1f}s", flush=True)
    for fmt in ("parquet", "csv"):
        dest = work / f"results.{fmt}"
        took = _cli(["export", str(target), "--format", fmt, "--out", str(dest)])
        print(f"export --format {fmt:<8}          {took:.1f}s", flush=True)
    validate(manifest)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
