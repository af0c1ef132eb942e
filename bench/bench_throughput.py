"""Throughput scenarios: does the runner keep the account's rate saturated, whatever
the latencies? Each runs the real CLI-free library path against the simulator in its own
process over loopback, in real time (scaled where the scenario says).

    .venv/bin/python bench/bench_throughput.py                    # every scenario
    .venv/bin/python bench/bench_throughput.py --only wrong-catalog,video

Printed per scenario: create rate / limit (or / the rate the in-flight cap allows),
wall time / lower bound, recordInfo calls per task, client CPU per job split into
per-job overhead and per-MB work, and peak RSS of the client process.

- wrong-catalog: 400 jobs, 40 creates per 2 s, 30 recordInfo/s, generations of 1-3 s for
  models the catalog thinks take 15-19 s;
- wrong-catalog-callbacks: the same with 10 recordInfo/s and signed callbacks trusted
  (`--trust-signed-callbacks`);
- default: 400 jobs at the service's default limits (20 per 10 s, 10/s), catalog-true
  latencies, time scaled 1/2;
- video: 300 video jobs with generations of 60-300 s, the in-flight cap 100 binding,
  time scaled 1/20;
- drift: 400 jobs at default limits, generations doubling after the 200th create, time
  scaled 1/2 (polls per task before, just after, and in the last quarter);
- cpu (only with --only cpu): 10,000 jobs at limits the client cannot reach (400 creates
  per second), for the client's CPU per job with start-up amortised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-throughput"
IMAGE_MODELS = ("seedream/4.5-text-to-image", "nano-banana-pro", "flux-2/pro-text-to-image")
TRUE_MODELS = ("google/nano-banana", "nano-banana-pro", "z-image")


@dataclass(frozen=True)
class Scenario:
    name: str
    jobs: int
    models: tuple[str, ...]
    create_limit: int = 20
    create_window: float = 10.0
    poll_limit: int = 10
    poll_window: float = 1.0
    scale: float = 1.0  # time: latencies and windows multiplied by this
    latency_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    drift: tuple[int, float] | None = None
    callbacks: bool = False
    max_in_flight: int = 100


SCENARIOS = [
    Scenario(
        "wrong-catalog",
        400,
        IMAGE_MODELS,
        create_limit=40,
        create_window=2.0,
        poll_limit=30,
        latency_range={"*": (1.0, 3.0)},
    ),
    Scenario(
        "wrong-catalog-callbacks",
        400,
        IMAGE_MODELS,
        create_limit=40,
        create_window=2.0,
        poll_limit=10,
        latency_range={"*": (1.0, 3.0)},
        callbacks=True,
    ),
    # Time scaled 1/2, not 1/10: the limiter's margin for arrival jitter is at least 50 ms,
    # which is 2% of a 5-s window but 5% of a 1-s one.
    Scenario("default", 400, TRUE_MODELS, scale=0.5),
    Scenario("video", 300, ("kling-3.0/video",), scale=0.05, latency_range={"*": (60.0, 300.0)}),
    Scenario("drift", 400, TRUE_MODELS, scale=0.5, drift=(200, 2.0)),
]

#: Run only when named (--only cpu): the client's CPU per job over 10,000 jobs, with
#: limits high enough that the client itself is what binds.
EXTRA = [
    Scenario(
        "cpu",
        10_000,
        IMAGE_MODELS,
        create_limit=400,
        create_window=1.0,
        poll_limit=800,
        latency_range={"*": (0.5, 1.0)},
        max_in_flight=400,
    ),
]


def _serve(queue: multiprocessing.Queue, sc: Scenario) -> None:
    from bench.bench_runner import HMAC
    from liangxin_batch.simulator import SimConfig, run_simulator

    config = SimConfig(
        api_key=KEY,
        create_limit=sc.create_limit,
        create_window=sc.create_window * sc.scale,
        poll_limit=sc.poll_limit,
        poll_window=sc.poll_window * sc.scale,
        latency_scale=sc.scale,
        latency_range=sc.latency_range,
        latency_drift=sc.drift,
        seed=5,
        hmac_key=HMAC,
    )
    run_simulator(config, "127.0.0.1", 0, on_ready=queue.put)


def _write_manifest(path: Path, sc: Scenario) -> None:
    from liangxin_batch.testing import sample_input

    with path.open("w", encoding="utf-8") as fh:
        for i in range(sc.jobs):
            model = sc.models[i % len(sc.models)]
            row = {"id": f"t{i:06d}", "model": model, **sample_input(model, f"throughput {i}")}
            fh.write(json.dumps(row) + "\n")


def _client(base_url: str, sc: Scenario, out: Path, result: multiprocessing.Queue) -> None:
    """The client, in a process of its own: its CPU and peak RSS are the run's alone."""
    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.run._callback_setup import CallbackOptions
    from liangxin_batch.run._progress import NullObserver
    from liangxin_batch.run._run import run_batch_async

    class Phases(NullObserver):
        """Client CPU at the first submit and at the last file: start-up, run, end."""

        first: float | None = None
        last = 0.0
        files = 0

        def submitted(self, job_id: str) -> None:
            if self.first is None:
                self.first = time.process_time()

        def downloaded(self, job_id: str) -> None:
            # Only at the last: reading the process's CPU clock sums every thread's,
            # which at each of 10,000 files would be the bench's own cost.
            self.files += 1
            if self.files >= sc.jobs:
                self.last = time.process_time()

    phases = Phases()

    manifest = out.parent / "manifest.jsonl"  # written by the parent: this process
    # imports only what a run imports, so its RSS is a run's
    settings = RunSettings(
        create_limit=sc.create_limit,
        create_window=sc.create_window * sc.scale,
        poll_limit=sc.poll_limit,
        poll_window=sc.poll_window * sc.scale,
        poll_scale=sc.scale,
        max_in_flight=sc.max_in_flight,
    )
    callbacks = None
    if sc.callbacks:
        from bench.bench_runner import free_port

        port = free_port()
        from bench.bench_runner import HMAC

        callbacks = CallbackOptions(
            public_base=f"http://127.0.0.1:{port}/hook",
            listen=f"127.0.0.1:{port}",
            hmac_key=HMAC,
            trust_signed=True,
        )
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    wall0 = time.time()
    summary = asyncio.run(
        run_batch_async(
            manifest,
            out_dir=out,
            settings=settings,
            api_key=KEY,
            base_url=base_url,
            callbacks=callbacks,
            observer=phases,
        )
    )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    megabytes = sum(p.stat().st_size for p in media_files(out / "outputs")) / 1e6
    status = Path("/proc/self/status").read_text(encoding="utf-8").splitlines()
    hwm = next(line for line in status if line.startswith("VmHWM:"))
    result.put(
        {
            "wall": wall,
            "cpu": cpu,
            "counts": summary.counts,
            "megabytes": megabytes,
            "rss": int(hwm.split()[1]) / 1024,
            "by_callback": summary.finished_by_callback,
            "started": wall0,
            "cpu_start": (phases.first or cpu0) - cpu0,
            "cpu_end": time.process_time() - phases.last if phases.last else 0.0,
        }
    )


#: The downloaded results, which the downloader hashes, decodes and thumbnails (not the
#: provenance sidecars beside them: those are per-job work).
MEDIA = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".mov", ".webm"})


def media_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in MEDIA and p.is_file())


def per_mb_cpu_ms(sample_dir: Path) -> float:
    """Client CPU per MB of result files: sha256, the decoding check and the thumbnail,
    by the calls the downloader makes (the thumbnail from the check's decode, written as
    a JPEG), measured on 200 of the files the scenario downloaded (every model's; the
    sidecars' JSON is left out: writing it is per-job work)."""
    import hashlib

    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.outputs._thumbs import preview_from_decoded, preview_of_file
    from liangxin_batch.run._media_check import check_media

    max_pixels = RunSettings().max_image_pixels

    every = media_files(sample_dir)
    files = every[:: max(1, len(every) // 200)][:200]
    if not files:
        return float("nan")
    size = sum(p.stat().st_size for p in files) / 1e6
    with tempfile.TemporaryDirectory() as scratch:
        cpu0 = time.process_time()
        for i, p in enumerate(files):
            hashlib.sha256(p.read_bytes()).hexdigest()
            decoded: list[Any] = []
            check_media(p, ext=p.suffix, max_pixels=max_pixels, decoded=decoded)
            if decoded:
                preview_from_decoded(decoded[0], Path(scratch), f"b{i}", 0)
            else:  # not decoded by the check (a video, an animation): from the file
                preview_of_file(Path(scratch), f"b{i}", 0, str(p), max_pixels)  # absolute
        return 1000 * (time.process_time() - cpu0) / size


def run(sc: Scenario) -> dict[str, Any]:
    from bench.bench_runner import ledger, simulator_process

    ctx = multiprocessing.get_context("spawn")
    with simulator_process(_serve, sc) as base_url, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _write_manifest(Path(tmp) / "manifest.jsonl", sc)
        results: multiprocessing.Queue = ctx.Queue()
        client = ctx.Process(target=_client, args=(base_url, sc, out, results))
        client.start()
        r = results.get(timeout=3600)
        client.join(60)
        events = ledger(base_url)
        r["per_mb_ms"] = per_mb_cpu_ms(out / "outputs")
    return r | {"events": events}


def report(sc: Scenario, r: dict[str, Any]) -> None:
    from liangxin_batch.catalog._catalog import default_catalog

    events = r["events"]
    creates = [e for e in events if e.get("kind") == "create" and e.get("outcome") == "created"]
    times = sorted(float(e["at"]) for e in creates)
    rejected = sum(1 for e in events if e.get("kind") == "create" and e.get("outcome") == "429")
    polls = [e for e in events if e.get("kind") == "poll"]
    limit = sc.create_limit / (sc.create_window * sc.scale)
    # From the cap's first fill on (the first `max_in_flight` creates cost no waiting),
    # so the rate is the steady one the limits allow.
    steady = times[min(sc.max_in_flight, len(times) // 3) :] if sc.name == "video" else times
    span = steady[-1] - steady[0] if len(steady) > 1 else float("nan")
    achieved = (len(steady) - 1) / span
    ranges = sc.latency_range.get("*")
    catalog = default_catalog()
    if ranges is not None:
        mean, slowest = sum(ranges) / 2 * sc.scale, ranges[1] * sc.scale
    else:
        typical = [catalog.models[m].typical_seconds for m in sc.models]
        mean, slowest = sum(typical) / len(typical) * sc.scale, max(typical) * 1.3 * sc.scale
    if sc.drift is not None:
        slowest *= sc.drift[1]
    cap_rate = sc.max_in_flight / mean  # what the in-flight cap allows at these latencies
    bound_rate = min(limit, cap_rate)
    lower = sc.jobs / bound_rate + slowest
    cpu_job = 1000 * r["cpu"] / sc.jobs
    per_mb = r["per_mb_ms"]
    run_cpu = r["cpu"] - r["cpu_start"] - r["cpu_end"]
    per_job_overhead = (1000 * run_cpu - per_mb * r["megabytes"]) / sc.jobs
    print(f"== {sc.name}: {sc.jobs} jobs, {r['counts']}")
    print("load average at the end       " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    basis = "limit" if limit <= cap_rate else "in-flight cap's rate"
    print(
        f"create rate / {basis:<20} {achieved / bound_rate:.3f}  "
        f"({achieved:.2f}/s; limit {limit:.2f}/s, cap allows {cap_rate:.2f}/s; 429s {rejected})"
    )
    print(
        f"wall / lower bound            {r['wall'] / lower:.3f}  ({r['wall']:.1f}s vs {lower:.1f}s)"
    )
    print(
        f"  start to first create {times[0] - r['started']:.1f}s, last create to end "
        f"{r['started'] + r['wall'] - times[-1]:.1f}s"
    )
    print(
        f"recordInfo per task           {len(polls) / sc.jobs:.2f}"
        f"  (finished by callback: {r['by_callback']})"
    )
    if sc.drift is not None:
        order = {e["task_id"]: i for i, e in enumerate(sorted(creates, key=lambda e: e["at"]))}

        def per_task(low: int, high: int) -> float:
            n = sum(1 for p in polls if low <= order.get(p.get("task_id"), -1) < high)
            return n / (high - low)

        d, q = sc.drift[0], sc.jobs - (sc.jobs - sc.drift[0]) // 2
        print(
            f"  polls per task: before {per_task(0, d):.2f}, the {q - d} after "
            f"{per_task(d, q):.2f}, the last {sc.jobs - q} {per_task(q, sc.jobs):.2f}"
        )
    print(
        f"client CPU per job            {cpu_job:.2f} ms = {per_job_overhead:.2f} ms per-job "
        f"overhead + {per_mb:.1f} ms/MB x {r['megabytes'] / sc.jobs:.3f} MB + "
        f"{1000 * (r['cpu_start'] + r['cpu_end']) / sc.jobs:.2f} ms start-up and reports"
    )
    print(
        f"  of which start-up {r['cpu_start']:.2f}s CPU, the run {run_cpu:.2f}s, "
        f"after the last file (reports) {r['cpu_end']:.2f}s"
    )
    print(f"peak RSS (client)             {r['rss']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args()
    wanted = {n for n in args.only.split(",") if n}
    for sc in SCENARIOS + EXTRA:
        if (not wanted and sc in SCENARIOS) or sc.name in wanted:
            report(sc, run(sc))
            sys.stdout.flush()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
