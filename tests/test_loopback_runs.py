"""Whole runs over real loopback sockets, on the wall clock, through `run_batch`.

The simulator serves on 127.0.0.1 (uvicorn in a thread); the run talks to it, downloads
from it and (with callbacks) listens for its callbacks on another loopback port. Time is
scaled down on both sides by the same factor, as bench/bench_runner.py does: the service's
20 creates per 10 s become 20 per 0.5 s, its 10 polls per second 10 per 0.05 s, and model
latencies shrink by 20, so the ratios (rate held, polls per task) are the real ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch import RunSettings, run_batch
from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._callback_setup import CallbackOptions
from liangxin_batch.simulator import FaultProfile, SimConfig, create_app, serve_in_thread

pytestmark = pytest.mark.slow

KEY = "sk-loopback-runs-0123"
HMAC = "whsec-loopback-0123456789"
SCALE = 0.05
CREATE_LIMIT = 20
CREATE_WINDOW = 10.0 * SCALE
POLL_WINDOW = 1.0 * SCALE

#: Image models with their own latencies and shapes; extra fields vary the outputs.
MODELS: list[tuple[str, dict[str, Any]]] = [
    ("z-image", {"aspect_ratio": "16:9"}),
    ("google/nano-banana", {"output_format": "jpeg"}),
    ("google/imagen4-fast", {}),
    ("seedream/4.5-text-to-image", {"aspect_ratio": "3:4", "quality": "basic"}),
    ("flux-2/pro-text-to-image", {"aspect_ratio": "1:1", "resolution": "1K"}),
]


def make_records(n: int, tag: str) -> list[dict[str, Any]]:
    records = []
    for i in range(n):
        model, extra = MODELS[i % len(MODELS)]
        records.append(
            {"id": f"{tag}-{i:04d}", "model": model, "prompt": f"{tag} prompt {i}", **extra}
        )
    return records


def settings(**kw: Any) -> RunSettings:
    """The simulator's limits, exactly, with time scaled like the simulator's.

    max_concurrent_creates=2: the window lets a burst of 20 through at once, and the
    simulator shares this process (and its GIL) in one uvicorn thread, so the tail of a
    burst of 8 parallel creates can reach it 50-100 ms after the runner admitted it: more
    than the limiter's 50 ms margin, which at this time scale is a tenth of the window
    (at the real 10 s window it is 200 ms). Two at a time keeps arrival within ~25 ms of
    admission and costs no wall time (the window, not the calls, sets the pace).
    """
    values: dict[str, Any] = {
        "create_limit": CREATE_LIMIT,
        "create_window": CREATE_WINDOW,
        "poll_window": POLL_WINDOW,
        "poll_scale": SCALE,
        "max_concurrent_creates": 2,
        # The margin stands for send->arrival jitter. At the real 10 s window the default
        # (200 ms) covers it; scaled to 0.5 s it would be 50 ms, less than an in-process
        # simulator's jitter on a busy 2-core machine. 150 ms keeps the same share of the
        # window that ~3 s would at full scale; it slows the scaled run by about a quarter.
        "create_margin": 0.15,
    }
    return RunSettings(**(values | kw))


def sim_config(**kw: Any) -> SimConfig:
    return SimConfig(
        api_key=KEY,
        create_limit=CREATE_LIMIT,
        create_window=CREATE_WINDOW,
        poll_window=POLL_WINDOW,
        latency_scale=SCALE,
        **kw,
    )


def free_port() -> int:
    """A loopback port nobody holds now (the receiver's public URL must name it upfront)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ledger_events(base_url: str) -> list[dict[str, Any]]:
    """The simulator's ledger, read the way any client can: GET /_sim/ledger."""
    body = httpx.get(f"{base_url}/_sim/ledger", timeout=30).json()
    assert body["code"] == 200
    events: list[dict[str, Any]] = body["data"]["events"]
    assert body["data"]["duplicates"] == {}
    return events


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def assert_created_once_each(
    events: list[dict[str, Any]], records: list[dict[str, Any]], sent: dict[str, list[float]]
) -> None:
    creates = of(events, "create")
    outcomes = Counter(e["outcome"] for e in creates)
    # No 429, no retry, no error.
    assert outcomes == {"created": len(records)}, (outcomes, rejected_report(events, sent))
    prompts = Counter(e["input"]["prompt"] for e in creates)
    assert prompts == Counter(r["prompt"] for r in records)  # every job, exactly once
    assert len({e["task_id"] for e in creates}) == len(records)


class SendTimes(httpx.AsyncBaseTransport):
    """The real socket transport, noting when each createTask left (for failure messages)."""

    def __init__(self) -> None:
        # The pool LiangXinClient builds for itself (httpx ignores its limits once a
        # transport is given).
        pool = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.inner = httpx.AsyncHTTPTransport(limits=pool)
        self.sent: dict[str, list[float]] = {}  # prompt -> wall times each send was handed over

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/createTask"):
            prompt = json.loads(request.content)["input"]["prompt"]
            self.sent.setdefault(prompt, []).append(time.time())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def rejected_report(events: list[dict[str, Any]], sent: dict[str, list[float]]) -> str:
    """For a failure: each 429, and the send->arrival delays of the creates around it."""
    creates = of(events, "create")
    delays: list[int | None] = []
    seen: Counter[str] = Counter()
    for e in creates:  # the n-th arrival of a prompt is its n-th send
        prompt = e["input"]["prompt"]
        times = sent.get(prompt, [])
        delays.append(
            round(1000 * (e["at"] - times[seen[prompt]])) if seen[prompt] < len(times) else None
        )
        seen[prompt] += 1
    lines = [
        f"429 at {e['at']:.3f}: send->arrival delays (ms) of the creates up to it: "
        f"{delays[max(0, i - CREATE_LIMIT - 1) : i + 1]}"
        for i, e in enumerate(creates)
        if e["outcome"] == "429"
    ]
    return "; ".join(lines)


def assert_window_held(events: list[dict[str, Any]]) -> None:
    """At most CREATE_LIMIT admitted creates in ANY window (server clock, sliding)."""
    times = sorted(e["at"] for e in of(events, "create") if e["outcome"] != "429")
    for first, later in zip(times, times[CREATE_LIMIT:], strict=False):
        assert later - first >= CREATE_WINDOW, (first, later)


def assert_files_on_disk(out: Path, records: list[dict[str, Any]], events: list[Any]) -> None:
    """results.csv: every job succeeded; each file exists and matches what was served."""
    served = {e["task_id"]: e["sha256"] for e in of(events, "file") if e["complete"]}
    with (out / "results.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["job_id"] for r in rows] == [r["id"] for r in records]
    for row in rows:
        assert row["status"] == "succeeded", row
        (path,) = row["output_paths"].split(";")
        data = (out / path).read_bytes()
        assert data and hashlib.sha256(data).hexdigest() == row["output_sha256"]
        assert served[row["task_id"]] == row["output_sha256"]


@pytest.fixture
def workdir(tmp_path: Path, frozen_heap: None) -> Path:
    """The run's folder; the process' heap is frozen for the test (`frozen_heap`).

    Time is scaled down 20x but garbage collection is not: a full collection of this
    test process' heap takes 35-60 ms (more on a busy machine) and stops the runner and
    the in-process simulator alike. One landing between a create's admission and its
    arrival eats into the limiter's margin (see `settings`). Freezing what exists before
    the run leaves only the run's own objects to collect.
    """
    return tmp_path / "out"


def test_hundreds_of_jobs_across_models_over_loopback(workdir: Path) -> None:
    """300 jobs, 5 image models: created once each, the window held, no 429, all done."""
    records = make_records(300, "bulk")
    summary, events, sent = run_over_loopback(workdir, records, seed=21)

    assert summary.counts == {"succeeded": 300}, summary.counts
    assert summary.exit_code == 0 and summary.unknown_jobs == []
    assert_created_once_each(events, records, sent)
    assert len({e["model"] for e in of(events, "create")}) == len(MODELS)
    assert_window_held(events)
    assert [e for e in of(events, "poll") if e["outcome"] == "429"] == []
    assert_files_on_disk(workdir, records, events)


def run_over_loopback(
    out: Path,
    records: list[dict[str, Any]],
    *,
    seed: int,
    faults: FaultProfile | None = None,
    callbacks: bool = False,
) -> tuple[RunSummary, list[dict[str, Any]], dict[str, list[float]]]:
    """One run against a simulator on a socket (signed callbacks to a receiver on another
    socket when asked); the summary, the simulator's ledger, and when each create left."""
    hmac_key = HMAC if callbacks else None
    app = create_app(sim_config(seed=seed, hmac_key=hmac_key, faults=faults or FaultProfile()))
    options = None
    if callbacks:
        port = free_port()
        options = CallbackOptions(
            public_base=f"http://127.0.0.1:{port}/liangxin",
            listen=f"127.0.0.1:{port}",
            hmac_key=hmac_key,
        )
    transport = SendTimes()
    with serve_in_thread(app) as base_url:
        summary: RunSummary = run_batch(
            records,
            out_dir=out,
            settings=settings(),
            catalog=default_catalog(),
            api_key=KEY,
            base_url=base_url,
            transport=transport,
            callbacks=options,
        )
        events = ledger_events(base_url)
    return summary, events, transport.sent


def test_callbacks_over_loopback_finish_tasks_with_few_polls(workdir: Path) -> None:
    """Real signed callbacks from the simulator to the run's receiver, both on sockets."""
    records = make_records(120, "hook")
    summary, events, sent = run_over_loopback(workdir, records, seed=33, callbacks=True)

    assert summary.counts == {"succeeded": 120}, summary.counts
    assert summary.finished_by_callback > 0
    assert summary.callbacks_received > 0
    callbacks = of(events, "callback")
    assert len(callbacks) == 120
    assert all(e["path"].startswith("http://127.0.0.1:") for e in callbacks)
    delivered = [e for e in callbacks if e["outcome"] == "delivered"]
    assert len(delivered) >= summary.finished_by_callback
    polls = of(events, "poll")
    assert len(polls) / 120 < 1.5, f"{len(polls)} recordInfo calls for 120 tasks"
    assert_created_once_each(events, records, sent)
    assert_window_held(events)
    assert_files_on_disk(workdir, records, events)


def test_dropped_callbacks_over_loopback_still_finish_by_polling(workdir: Path) -> None:
    records = make_records(60, "drop")
    summary, events, sent = run_over_loopback(
        workdir, records, seed=33, faults=FaultProfile(drop_callbacks=True), callbacks=True
    )

    assert summary.counts == {"succeeded": 60}, summary.counts
    assert summary.finished_by_callback == 0 and summary.callbacks_received == 0
    assert Counter(e["outcome"] for e in of(events, "callback")) == {"dropped": 60}
    finished = {e["task_id"] for e in of(events, "poll") if e["outcome"] == "success"}
    assert len(finished) == 60  # polling saw every task end
    assert_created_once_each(events, records, sent)
    assert_window_held(events)
    assert_files_on_disk(workdir, records, events)
