"""SIGKILL the CLI while it uploads local input files, resume, and prove that no file
was uploaded for nothing more than once per kill (the uploads in flight at the kill)
and no createTask was sent twice. A real subprocess against the simulator over
loopback; the uploads are slowed by their own limits so the kills land among them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from liangxin_batch.simulator import SimConfig, create_app, serve_in_thread, upload_base_url
from tests import cli_support
from tests.sim_support import sim_of
from tests.state_support import jobs_in

KEY = "sk-crash-upload-0002"
FILES = 24
JOBS = 48
CONCURRENCY = 2

pytestmark = pytest.mark.slow


def _files(folder: Path) -> list[str]:
    """Distinct PNG-headed files of 1.5 MB (what the manifest check sniffs is the head)."""
    from PIL import Image

    (folder / "photos").mkdir()
    names = []
    for i in range(FILES):
        path = folder / "photos" / f"p{i:02d}.png"
        Image.new("RGB", (4, 4), (i * 10, 0, 0)).save(path, "PNG")
        with path.open("ab") as fh:  # trailing bytes after IEND: still a PNG to readers
            fh.write(os.urandom(1_500_000))
        names.append(f"photos/p{i:02d}.png")
    return names


def _manifest(folder: Path, names: list[str]) -> Path:
    path = folder / "m.csv"
    rows = ["id,model,prompt,image_urls"]
    for i in range(JOBS):
        rows.append(f"k{i:03d},google/nano-banana-edit,crash upload {i},{names[i % FILES]}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cli_support.fast_catalog(folder, 0.2, model="google/nano-banana-edit")
    return path


def _start(manifest: Path, out: Path, base_url: str) -> subprocess.Popen[bytes]:
    cmd = cli_support.cli(
        "--catalog",
        str(manifest.parent / "fast.yaml"),
        "run",
        str(manifest),
        "--out",
        str(out),
        "--rate",
        "5/1s",
        "--upload-base-url",
        upload_base_url(base_url),
        "--upload-concurrency",
        str(CONCURRENCY),
        "--upload-rate",
        "6/1s",
        "--quiet",
    )
    env = cli_support.child_env(base_url, KEY)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_during_uploads_then_resume_uploads_no_file_for_nothing_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(16)
    manifest = _manifest(tmp_path, _files(tmp_path))
    out = tmp_path / "out"
    app = create_app(SimConfig(api_key=KEY, create_window=1.0, latency_scale=0.01, seed=7))
    sim = sim_of(app)
    with serve_in_thread(app) as base_url:
        kills = 0
        for _ in range(4):
            before = len(sim.ledger.uploads())
            proc = _start(manifest, out, base_url)
            deadline = time.monotonic() + 30
            # Kill once this run has uploaded something, at a random moment after.
            while len(sim.ledger.uploads()) == before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.05, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
        final = _start(manifest, out, base_url)
        _stdout, stderr = final.communicate(timeout=180)
    assert kills >= 3, "the runs finished before they could be killed"
    assert final.returncode in (0, 1), (_stdout + stderr).decode()[-3000:]
    states = {j: job.state.value for j, job in jobs_in(out).items()}
    # A kill between a job's intent and its taskId parks it unknown (never sent again).
    assert set(states.values()) <= {"done", "unknown"}, states
    # A kill may catch as many creates in flight as the client keeps POSTs going at once:
    # two (run/_places.py's floor; at 5/s it grows only past 320 ms round trips). One per
    # kill was too tight a bound: the test failed now and then, two caught by one kill.
    in_flight = kills * 2
    assert list(states.values()).count("done") >= JOBS - in_flight
    # Uploads: each file once, plus at most the uploads in flight at each kill (their
    # answers never reached the state), never one the state already had.
    counts = sim.ledger.upload_counts_by_sha256()
    assert len(counts) == FILES
    again = sum(n - 1 for n in counts.values())
    assert again <= kills * CONCURRENCY, counts
    assert all(n <= 1 + kills for n in counts.values()), counts
    # No createTask twice.
    prompts = [(e.input or {}).get("prompt") for e in sim.ledger.creates()]
    assert len(prompts) == len(set(prompts)) >= JOBS - in_flight
