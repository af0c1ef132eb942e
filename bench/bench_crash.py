"""Crash-safety benchmark: SIGKILL a real `liangxin-batch run` at random moments, resume it.

    .venv/bin/python bench/bench_crash.py             # 1,000 jobs, 20 kills, real time: ~9 min
    .venv/bin/python bench/bench_crash.py --jobs 200 --kills 5 --time-scale 0.1      # ~20 s
    .venv/bin/python bench/bench_crash.py --seed 7 --json crash.json --work-dir /tmp/crash

The simulator runs in its own process at the service's limits (createTask 20 per 10 s,
recordInfo 10 per 1 s) and serves small real PNG files, throttled to --slow-download-bps
so that some kills land in the middle of a download. The tool runs as a subprocess,
exactly as a user runs it:

    python -m liangxin_batch [--catalog fast.yaml] run MANIFEST --out DIR \\
        --rate 20/10s --poll-rate 10/1s --quiet

with LIANGXIN_API_KEY / LIANGXIN_BASE_URL set. K kill moments are drawn uniformly
(seeded) over the expected duration of the run, on the run's own clock (the time the
tool has been alive, summed over its processes). The process alive at each moment gets
SIGKILL and the same command is started again (a resume); after the last kill the run
is left to finish (exit 0 or 1).

Time scale: with --time-scale 0.1 both the simulator and the client use 20 creates per
1 s and 10 recordInfo per 0.1 s, and model latencies shrink by 10 (a catalog file
patches typical_seconds to match, as tests/test_crash.py does). The client's 2 s floor
between polls and the download throttle are not scaled.

Reports (targets in brackets):
  unknown jobs per kill    jobs left in state unknown at the end / kills      [<= 0.2]
  tasks created twice      prompts the simulator created more than once         [0]
  partial files left       DIR/outputs/**/.*.part after the final run           [0]
  create rate / limit      created tasks / (first->last create x limit)     [>= 0.97]
and kills done, restarts, jobs done, total wall time, plus one line per kill.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-crash-local"
#: Cheap image models, prompt only (z-image's aspect_ratio is required by the catalog).
MODELS: list[tuple[str, dict[str, str]]] = [
    ("google/nano-banana", {}),
    ("z-image", {"aspect_ratio": "1:1"}),
]
CREATE_LIMIT, CREATE_WINDOW = 20, 10.0  # the service's createTask limit ...
POLL_LIMIT, POLL_WINDOW = 10, 1.0  # ... and its recordInfo limit, at time scale 1
FINAL_EXIT_CODES = (0, 1)  # all succeeded / some did not: both are a finished run


def _serve(
    port_queue: multiprocessing.Queue,
    scale: float,
    seed: int,
    slow_download_bps: int | None,
) -> None:
    from liangxin_batch.simulator import FaultProfile, SimConfig, run_simulator

    config = SimConfig(
        api_key=KEY,
        create_limit=CREATE_LIMIT,
        create_window=CREATE_WINDOW * scale,
        poll_limit=POLL_LIMIT,
        poll_window=POLL_WINDOW * scale,
        latency_scale=scale,
        seed=seed,
        faults=FaultProfile(slow_download_bps=slow_download_bps),
    )
    run_simulator(config, "127.0.0.1", 0, on_ready=port_queue.put)


def write_manifest(path: Path, n: int) -> None:
    from bench.bench_runner import write_manifest as write_jobs

    write_jobs(path, n, models=MODELS, prefix="k", prompt="crash bench prompt")


def typical_seconds() -> dict[str, float]:
    from liangxin_batch.catalog._catalog import default_catalog

    catalog = default_catalog()
    result: dict[str, float] = {}
    for model, _ in MODELS:
        spec = catalog.get(model)
        assert spec is not None, model
        result[model] = float(spec.typical_seconds)
    return result


def write_fast_catalog(path: Path, scale: float) -> None:
    """Patch typical_seconds of the models used: the simulator's latencies are scaled."""
    lines = ["models:"]
    for model, seconds in typical_seconds().items():
        lines += [
            f'  - id: "{model}"',
            "    patch: true",
            f"    typical_seconds: {seconds * scale:.6g}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rate_flag(limit: int, window: float) -> str:
    return f"{limit}/{window:.12g}s"


def run_command(manifest: Path, out: Path, catalog: Path | None, scale: float) -> list[str]:
    cmd = [sys.executable, "-m", "liangxin_batch"]
    if catalog is not None:
        cmd += ["--catalog", str(catalog)]
    cmd += [
        "run",
        str(manifest),
        "--out",
        str(out),
        "--rate",
        rate_flag(CREATE_LIMIT, CREATE_WINDOW * scale),
        "--poll-rate",
        rate_flag(POLL_LIMIT, POLL_WINDOW * scale),
        "--quiet",
    ]
    return cmd


def run_env(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANGXIN_")}
    env.update(LIANGXIN_API_KEY=KEY, LIANGXIN_BASE_URL=base_url)
    return env


def state_counts(out: Path) -> dict[str, int] | None:
    """Jobs per state, read-only (a read-write close could checkpoint the dead run's WAL)."""
    path = out / "state.db"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
    except sqlite3.Error as err:
        print(f"  (state.db not readable: {err})", file=sys.stderr)
        return None
    finally:
        db.close()
    return {str(state): int(n) for state, n in rows}


def unknown_job_prompts(out: Path) -> list[str]:
    path = out / "state.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute("SELECT input_json FROM jobs WHERE state = 'unknown'").fetchall()
    finally:
        db.close()
    prompts: list[str] = []
    for (raw,) in rows:
        try:
            prompts.append(str(json.loads(raw).get("prompt")))
        except (TypeError, ValueError, AttributeError):
            prompts.append("?")
    return prompts


def part_files(out: Path) -> list[Path]:
    outputs = out / "outputs"
    return sorted(outputs.rglob(".*.part")) if outputs.exists() else []


def output_files(out: Path) -> int:
    outputs = out / "outputs"
    if not outputs.exists():
        return 0
    return sum(1 for p in outputs.rglob("*") if p.is_file() and not p.name.startswith("."))


def fetch_ledger(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_sim/ledger", timeout=60) as resp:
        data: dict[str, Any] = json.load(resp)["data"]
    return data


@dataclass
class Kill:
    n: int
    at: float  # seconds since the first start
    unix: float  # time.time() of the kill
    alive: float  # seconds the killed process had lived
    submitting: int | None  # jobs in 'submitting' right after the kill
    unknown: int | None  # jobs in 'unknown' right after the kill
    states: dict[str, int] | None
    parts: int  # .part files on disk right after the kill
    restart_unix: float | None = None  # time.time() when the resume was started
    gap: float | None = None  # kill -> first create of a later process


@dataclass
class Start:
    n: int
    at: float
    unix: float
    returncode: int | None = None  # None: killed by us
    seconds: float = 0.0


@dataclass
class Session:
    kills: list[Kill] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    timed_out: bool = False
    max_restarts_hit: bool = False
    final_rc: int | None = None
    kills_skipped: int = 0


def drive(
    cmd: list[str],
    env: dict[str, str],
    out: Path,
    logs: Path,
    gaps: list[float],
    timeout: float,
    max_restarts: int,
) -> Session:
    """Start, SIGKILL after each gap of alive time, restart; then let the last run finish."""
    session = Session()
    pending = list(gaps)
    t0 = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            session.timed_out = True
            break
        if len(session.starts) > max_restarts:
            session.max_restarts_hit = True
            break
        start = Start(len(session.starts), time.monotonic() - t0, time.time())
        session.starts.append(start)
        if session.kills and session.kills[-1].restart_unix is None:
            session.kills[-1].restart_unix = start.unix
        with (
            (logs / f"run-{start.n:03d}.out").open("wb") as stdout,
            (logs / f"run-{start.n:03d}.err").open("wb") as stderr,
        ):
            proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=stdout, stderr=stderr, start_new_session=True
            )
            began = time.monotonic()
            scheduled = bool(pending) and pending[0] < left
            wait = pending[0] if scheduled else left
            try:
                rc: int | None = proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                rc = None
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            start.seconds = time.monotonic() - began
        start.returncode = rc
        if rc is None:
            if not scheduled:  # the overall timeout, not a planned kill
                session.timed_out = True
                break
            pending.pop(0)
            states = state_counts(out)
            session.kills.append(
                Kill(
                    n=len(session.kills) + 1,
                    at=time.monotonic() - t0,
                    unix=time.time(),
                    alive=start.seconds,
                    submitting=None if states is None else states.get("submitting", 0),
                    unknown=None if states is None else states.get("unknown", 0),
                    states=states,
                    parts=len(part_files(out)),
                )
            )
            continue
        if rc in FINAL_EXIT_CODES:
            session.final_rc = rc
            session.kills_skipped = len(pending)
            break
        # Exited on its own with another code (stopped, usage error, crash): resume it,
        # keeping the rest of the current kill gap for the next process.
        print(f"  run #{start.n} exited {rc} by itself; resuming", file=sys.stderr)
        if pending:
            pending[0] = max(0.0, pending[0] - start.seconds)
    return session


def merged_gap(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Total length of the union of intervals, clipped to [lo, hi]."""
    total, end = 0.0, lo
    for a, b in sorted(intervals):
        a, b = max(a, end), min(b, hi)
        if b > a:
            total += b - a
            end = b
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="scale windows and latencies (default 1)"
    )
    parser.add_argument("--seed", type=int, default=1, help="kill moments and simulator seed")
    parser.add_argument(
        "--slow-download-bps",
        type=int,
        default=200_000,
        help="throttle each result download to this many bytes/s (0: off)",
    )
    parser.add_argument(
        "--timeout", type=float, help="overall seconds [default: 3 x expected + 120]"
    )
    parser.add_argument("--max-restarts", type=int, help="[default: kills + 10]")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--work-dir", type=Path, help="keep manifest, DIR and logs here (default: a temp dir)"
    )
    args = parser.parse_args()
    scale: float = args.time_scale
    if args.jobs < 1 or args.kills < 0 or not scale > 0:
        parser.error("--jobs >= 1, --kills >= 0 and --time-scale > 0 please")

    create_rate = CREATE_LIMIT / (CREATE_WINDOW * scale)  # per second
    slowest = max(typical_seconds().values()) * 1.3 * scale
    expected = args.jobs / create_rate + slowest
    timeout = args.timeout if args.timeout is not None else 3 * expected + 120
    max_restarts = args.max_restarts if args.max_restarts is not None else args.kills + 10
    rng = random.Random(args.seed)
    moments = sorted(rng.uniform(0, expected) for _ in range(args.kills))
    gaps = [b - a for a, b in zip([0.0, *moments], moments, strict=False)]

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    out, logs = work / "out", work / "logs"
    if out.exists():
        parser.error(f"{out} exists: use an empty --work-dir")
    logs.mkdir(exist_ok=True)
    manifest = work / "crash.csv"
    write_manifest(manifest, args.jobs)
    catalog = None
    if scale != 1.0:
        catalog = work / "fast.yaml"
        write_fast_catalog(catalog, scale)

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()
    bps = args.slow_download_bps or None
    server = ctx.Process(target=_serve, args=(ports, scale, args.seed, bps), daemon=True)
    server.start()
    try:
        base_url: str = ports.get(timeout=60)
        cmd = run_command(manifest, out, catalog, scale)
        print(f"simulator  {base_url}  (time scale {scale}, slow downloads {bps} B/s)")
        print(f"command    LIANGXIN_API_KEY=... LIANGXIN_BASE_URL={base_url} {' '.join(cmd)}")
        print(
            f"schedule   {args.kills} kills over the expected {expected:.1f}s "
            f"(seed {args.seed}; timeout {timeout:.0f}s, max restarts {max_restarts})"
        )
        wall0 = time.monotonic()
        session = drive(cmd, run_env(base_url), out, logs, gaps, timeout, max_restarts)
        wall = time.monotonic() - wall0
        ledger = fetch_ledger(base_url)
        (work / "ledger.json").write_text(json.dumps(ledger), encoding="utf-8")
    finally:
        server.terminate()
        server.join(10)

    from liangxin_batch.simulator._ledger import CREATED_OUTCOMES

    events: list[dict[str, Any]] = ledger["events"]
    creates = [e for e in events if e.get("kind") == "create"]
    created = sorted(creates, key=lambda e: float(e["at"]))
    created = [e for e in created if e.get("outcome") in CREATED_OUTCOMES]
    created_at = [float(e["at"]) for e in created]
    rejected = sum(1 for e in creates if e.get("outcome") == "429")
    other_create_outcomes = Counter(
        str(e.get("outcome"))
        for e in creates
        if e.get("outcome") not in CREATED_OUTCOMES and e.get("outcome") != "429"
    )
    prompts = Counter(str((e.get("input") or {}).get("prompt")) for e in created)
    twice = {p: n for p, n in prompts.items() if n > 1}
    files = [e for e in events if e.get("kind") == "file"]

    # Create rate over first -> last create. Kill-and-restart gaps count against it: a
    # dead process submits nothing, and the resume needs interpreter start-up, state
    # checks and sync before its first POST. So also: the rate with those gaps (kill ->
    # first create after the resume was started) taken out of the span.
    span = created_at[-1] - created_at[0] if len(created_at) > 1 else 0.0
    ratio = len(created_at) / (span * create_rate) if span > 0 else float("nan")
    intervals: list[tuple[float, float]] = []
    for kill in session.kills:
        if kill.restart_unix is None:
            continue
        later = [t for t in created_at if t >= kill.restart_unix]
        if later:
            kill.gap = later[0] - kill.unix
            intervals.append((kill.unix, later[0]))
    gap_total = merged_gap(intervals, created_at[0], created_at[-1]) if created_at else 0.0
    busy = span - gap_total
    ratio_busy = len(created_at) / (busy * create_rate) if busy > 0 else float("nan")

    final_states = state_counts(out) or {}
    unknown_end = final_states.get("unknown", 0)
    unknown_prompts = unknown_job_prompts(out)
    unknown_created = sum(1 for p in unknown_prompts if p in prompts)
    kills_done = len(session.kills)
    per_kill = unknown_end / kills_done if kills_done else float("nan")
    parts_left = part_files(out)
    done = final_states.get("done", 0)
    tracebacks = [p.name for p in sorted(logs.glob("run-*.err")) if b"Traceback" in p.read_bytes()]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print()
    print("kill  at(s)  alive(s)  submitting  unknown  .part  restart gap(s)  states")
    for k in session.kills:
        gap = f"{k.gap:.2f}" if k.gap is not None else "-"
        states = ", ".join(f"{s} {n}" for s, n in sorted((k.states or {}).items())) or "no state"
        print(
            f"{k.n:>4}  {k.at:>5.1f}  {k.alive:>8.2f}  {k.submitting!s:>10}  "
            f"{k.unknown!s:>7}  {k.parts:>5}  {gap:>14}  {states}"
        )
    print()
    print(f"jobs                      {args.jobs} (time scale {scale})")
    print(
        f"unknown jobs per kill     {per_kill:.3f}  ({unknown_end} unknown at the end / "
        f"{kills_done} kills; {unknown_created} of them the service did create)  "
        f"[target <= 0.2: {mark(per_kill <= 0.2)}]"
    )
    print(
        f"submitting at the kill    {sum(k.submitting or 0 for k in session.kills)} in all, "
        f"max {max((k.submitting or 0 for k in session.kills), default=0)} at one kill"
    )
    print(
        f"tasks created twice       {len(twice)}  ({sum(twice.values()) - len(twice)} extra "
        f"tasks; ledger duplicates: {len(ledger.get('duplicates') or {})})  "
        f"[target 0: {mark(not twice)}]"
    )
    print(
        f"partial files left        {len(parts_left)}  "
        f"(kills that found .part files: {sum(1 for k in session.kills if k.parts)})  "
        f"[target 0: {mark(not parts_left)}]"
    )
    print(
        f"create rate / limit       {ratio:.3f}  ({len(created_at)} created in {span:.1f}s, "
        f"limit {create_rate:.2f}/s; 429s: {rejected}"
        + (f"; other: {dict(other_create_outcomes)}" if other_create_outcomes else "")
        + f")  [target >= 0.97: {mark(ratio >= 0.97)}]"
    )
    print(
        f"  excluding restart gaps  {ratio_busy:.3f}  ({gap_total:.1f}s of gaps between "
        f"first and last create)"
    )
    print(
        f"kills done                {kills_done} of {args.kills}"
        + (f" (run finished before {session.kills_skipped})" if session.kills_skipped else "")
    )
    print(f"restarts                  {len(session.starts) - 1}")
    print(
        f"jobs done at the end      {done} of {args.jobs}  (final exit {session.final_rc}; "
        + ", ".join(f"{s} {n}" for s, n in sorted(final_states.items()))
        + f"; output files {output_files(out)}; file serves {len(files)})"
    )
    print(f"total wall time           {wall:.1f}s  (expected without kills {expected:.1f}s)")
    if session.timed_out:
        print(f"TIMED OUT after {timeout:.0f}s")
    if session.max_restarts_hit:
        print(f"STOPPED after {max_restarts} restarts")
    if tracebacks:
        print(f"tracebacks in stderr      {', '.join(tracebacks)}")
    if session.final_rc not in FINAL_EXIT_CODES:
        last = logs / f"run-{session.starts[-1].n:03d}.err"
        print(f"last stderr ({last}):\n{last.read_text(errors='replace')[-2000:]}")
    if args.work_dir is None:
        keep = session.final_rc not in FINAL_EXIT_CODES or twice or parts_left or tracebacks
        if keep:
            print(f"kept for inspection: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work dir                  {work}")

    if args.json:
        result = {
            "jobs": args.jobs,
            "time_scale": scale,
            "seed": args.seed,
            "slow_download_bps": bps,
            "unknown_jobs_per_kill": per_kill,
            "unknown_at_end": unknown_end,
            "unknown_created_by_service": unknown_created,
            "tasks_created_twice": len(twice),
            "extra_tasks": sum(twice.values()) - len(twice),
            "partial_files_left": len(parts_left),
            "create_rate_over_limit": ratio,
            "create_rate_over_limit_excluding_gaps": ratio_busy,
            "restart_gap_seconds": gap_total,
            "creates": len(created_at),
            "create_429s": rejected,
            "kills_done": kills_done,
            "kills_requested": args.kills,
            "restarts": len(session.starts) - 1,
            "jobs_done": done,
            "final_states": final_states,
            "final_exit_code": session.final_rc,
            "timed_out": session.timed_out,
            "wall_seconds": wall,
            "kills": [asdict(k) for k in session.kills],
            "starts": [asdict(s) for s in session.starts],
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
