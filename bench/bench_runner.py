"""Runner benchmark against the simulator running in a separate process.

    .venv/bin/python bench/bench_runner.py                 # 300 jobs, time scaled 1/10
    .venv/bin/python bench/bench_runner.py --jobs 600 --time-scale 1
    .venv/bin/python bench/bench_runner.py --callbacks     # with the callback receiver

Time scale: the service allows 20 creates per 10 s; with --time-scale 0.1 both the
simulator and the client use 20 per 1 s and model latencies shrink by 10, so ratios
(achieved rate / limit, total time / lower bound, polls per task) are the real ones
while the run takes a tenth of the time.

The throughput scenarios (a catalog wrong by ten times, trusted callbacks, videos under
the in-flight cap, drifting latencies) are in `bench_throughput.py`.

Reports: achieved create rate / configured limit, total time / lower bound (jobs / rate
+ slowest generation), recordInfo calls per task, client CPU ms per job, and peak RSS of
a process holding a 100,000-job state (`--state-jobs`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import multiprocessing
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-local"
MODELS = [("google/nano-banana", {}), ("nano-banana-pro", {}), ("z-image", {"aspect_ratio": "1:1"})]


HMAC = "bench-hmac-key-0123456789"


def _serve(port_queue: multiprocessing.Queue, scale: float) -> None:
    from liangxin_batch.simulator import SimConfig, run_simulator

    config = SimConfig(
        api_key=KEY,
        create_window=10.0 * scale,
        poll_window=1.0 * scale,
        latency_scale=scale,
        seed=11,
        hmac_key=HMAC,
    )
    run_simulator(config, "127.0.0.1", 0, on_ready=port_queue.put)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_manifest(
    path: Path,
    n: int,
    *,
    models: list[tuple[str, dict[str, str]]] = MODELS,
    prefix: str = "b",
    prompt: str = "benchmark prompt",
) -> None:
    """`n` jobs cycling through `models` (with the fields each requires)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "model", "prompt", "aspect_ratio"])
        for i in range(n):
            model, extra = models[i % len(models)]
            writer.writerow(
                [f"{prefix}{i:06d}", model, f"{prompt} {i}", extra.get("aspect_ratio", "")]
            )


@contextlib.contextmanager
def simulator_process(serve: Any, *args: Any) -> Iterator[str]:
    """`serve(port_queue, *args)` in a process of its own; its base URL while it runs."""
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(ports, *args), daemon=True)
    server.start()
    try:
        yield ports.get(timeout=60)
    finally:
        server.terminate()
        server.join(10)


def ledger(base_url: str, since: int = 0) -> list[dict[str, Any]]:
    """The simulator's events (after the first `since`)."""
    with urllib.request.urlopen(f"{base_url}/_sim/ledger?since={since}") as resp:
        data = json.load(resp)
    events: list[dict[str, Any]] = data["data"]["events"]
    return events


def run_once(
    base_url: str, manifest: Path, out: Path, scale: float, callbacks: bool
) -> dict[str, float]:
    import liangxin_batch.run._callback_setup as _callbacks
    import liangxin_batch.run._run as _run
    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.core._settings import RunSettings

    settings = RunSettings(create_window=10.0 * scale, poll_window=1.0 * scale, poll_scale=scale)
    callback_options: _callbacks.CallbackOptions | None = None
    if callbacks:
        port = free_port()
        callback_options = _callbacks.CallbackOptions(
            public_base=f"http://127.0.0.1:{port}/hook", listen=f"127.0.0.1:{port}", hmac_key=HMAC
        )
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    summary = asyncio.run(
        _run.run_batch_async(
            manifest,
            out_dir=out,
            settings=settings,
            api_key=KEY,
            base_url=base_url,
            catalog=default_catalog(),
            callbacks=callback_options,
        )
    )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    assert summary.succeeded == summary.total, summary.counts
    return {
        "wall": wall,
        "cpu": cpu,
        "jobs": summary.total,
        "polls": summary.polls,
        "by_callback": summary.finished_by_callback,
    }


def state_rss(n: int) -> float:
    """Peak RSS (MB) of a fresh process that loads an n-job manifest into a state and resumes it."""
    code = f"""
import asyncio, resource, sqlite3, sys, tempfile
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from bench.bench_runner import write_manifest
from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.run._manifest_jobs import load_manifest_jobs
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from liangxin_batch.run._runner import Runner
from liangxin_batch.core._settings import RunSettings
d = Path(tempfile.mkdtemp())
write_manifest(d / "m.csv", {n})
jobs = load_manifest_jobs(d / "m.csv", catalog=default_catalog())
store = StateStore.in_dir(d / "out")
sync_jobs(store, jobs, allow_changed=False)
store.db.execute("UPDATE jobs SET state = 'done'")
from liangxin_batch.run._client import LiangXinClient
client = LiangXinClient(api_key="unused", base_url="http://127.0.0.1:9")  # nothing is sent
async def main():
    r = Runner(store=store, client=client, catalog=default_catalog(), settings=RunSettings())
    return await r.run()
s = asyncio.run(main())
assert s.total == {n}, s.counts
# VmHWM, not ru_maxrss: after fork+exec Linux carries the parent's peak into ru_maxrss,
# and the parent here is the whole benchmark. VmHWM belongs to this process image alone.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) / 1024)
"""
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--callbacks", action="store_true")
    parser.add_argument("--state-jobs", type=int, default=100_000)
    args = parser.parse_args()
    scale = args.time_scale

    with simulator_process(_serve, scale) as base_url, tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "bench.csv"
        write_manifest(manifest, args.jobs)
        r = run_once(base_url, manifest, Path(tmp) / "out", scale, args.callbacks)
        events = ledger(base_url)

    from liangxin_batch.catalog._catalog import default_catalog

    catalog = default_catalog()

    def typical_seconds(model: str) -> float:
        spec = catalog.get(model)
        assert spec is not None, model
        return spec.typical_seconds

    creates = sorted(
        float(e["at"])
        for e in events
        if e.get("kind") == "create" and e.get("outcome") == "created"
    )
    rejected = sum(1 for e in events if e.get("kind") == "create" and e.get("outcome") == "429")
    polls = sum(1 for e in events if e.get("kind") == "poll")
    rate_limit = 20 / (10.0 * scale)
    # Creates are paced evenly from the first one (no opening burst of a whole window), so
    # the achieved rate is (creates - 1) over the span from the first to the last.
    span = creates[-1] - creates[0] if len(creates) > 1 else 1.0
    achieved = (len(creates) - 1) / span if span > 0 else float("nan")
    slowest = max(typical_seconds(m) for m, _ in MODELS) * 1.3 * scale
    lower = args.jobs / rate_limit + slowest
    rss = state_rss(args.state_jobs) if args.state_jobs else float("nan")

    mode = "callbacks" if args.callbacks else "polling"
    print(f"mode                      {mode}")
    print(f"jobs                      {args.jobs} (time scale {scale})")
    ratio = achieved / rate_limit
    print(
        f"create rate / limit       {ratio:.3f}  "
        f"({achieved:.2f}/s of {rate_limit:.2f}/s; 429s: {rejected})"
    )
    print(f"total time / lower bound  {r['wall'] / lower:.3f}  ({r['wall']:.1f}s vs {lower:.1f}s)")
    print(f"recordInfo per task       {polls / args.jobs:.2f}")
    print(f"finished by callback      {r['by_callback']:.0f} of {args.jobs}")
    print(f"client CPU per job        {1000 * r['cpu'] / args.jobs:.2f} ms")
    print(f"peak RSS, {args.state_jobs:,}-job state  {rss:.0f} MB")


if __name__ == "__main__":
    main()
