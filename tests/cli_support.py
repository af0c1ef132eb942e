"""One harness for the tests that run the CLI in a subprocess: the manifest, the fast
catalog that matches the simulator's scaled latencies, and an environment without the
developer's own LIANGXIN_* variables."""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["KEY", "child_env", "cli", "fast_catalog", "wait_for", "write_manifest"]

KEY = "sk-cli-test-0123456789"


def write_manifest(
    path: Path,
    n: int,
    *,
    model: str = "google/nano-banana",
    prefix: str = "r",
    prompt: str = "a lighthouse at dusk, take {i}",
) -> list[str]:
    """A CSV of `n` jobs (id, model, prompt); returns the ids in order."""
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "model", "prompt"])
        for i, job_id in enumerate(ids):
            w.writerow([job_id, model, prompt.format(i=i)])
    return ids


def fast_catalog(
    folder: Path, typical_seconds: float = 0.1, *, model: str = "google/nano-banana"
) -> Path:
    """A user catalog (fast.yaml in `folder`) that tells the poll schedule the simulator
    runs fast: it patches one field, typical_seconds, of the built-in `model`."""
    path = folder / "fast.yaml"
    path.write_text(
        f"models:\n  - id: {model}\n    patch: true\n    typical_seconds: {typical_seconds}\n"
    )
    return path


def child_env(url: str, key: str = KEY, **extra: str) -> dict[str, str]:
    """This process's environment without LIANGXIN_* variables, plus the key and URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANGXIN_")}
    env.update(LIANGXIN_API_KEY=key, LIANGXIN_BASE_URL=url, **extra)
    return env


def cli(*args: str) -> list[str]:
    """The command line of `liangxin-batch ARGS` with this interpreter."""
    return [sys.executable, "-m", "liangxin_batch", *args]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a condition with a deadline, not timing
