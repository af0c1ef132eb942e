"""Worker processes of one batch against the simulator, for the multi-worker tests and
bench/bench_scale.py: the same `run` command several times, a shared PostgreSQL state,
one simulator on a real loopback socket (time scaled: its create window is shorter)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import cli_support

__all__ = ["Fleet", "create_rate_windows"]


@dataclass
class Fleet:
    """`workers` processes running `manifest` into `out` with the state at `state_url`."""

    manifest: Path
    out: Path
    state_url: str
    base_url: str
    env: dict[str, str]
    extra: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, workers: int) -> None:
        # At a lower priority than this process, which serves the simulator: on a 2-core
        # machine four workers (and the database) could otherwise starve the service's
        # stand-in, which then reads the requests that queued meanwhile as one burst
        # (a 429 the real service, on its own machines, would never give).
        for _ in range(workers):
            self.procs.append(
                subprocess.Popen(
                    ["nice", "-n", "10", *self.command()],
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )

    def command(self) -> list[str]:
        return cli_support.cli(
            "--catalog",
            str(self.manifest.parent / "fast.yaml"),
            "run",
            str(self.manifest),
            "--out",
            str(self.out),
            "--state",
            self.state_url,
            "--quiet",
            *self.extra,
        )

    def kill(self, i: int) -> None:
        """SIGKILL worker `i`: no `finally`, no release of its leases."""
        os.killpg(self.procs[i].pid, signal.SIGKILL)

    def wait(self, timeout: float) -> list[tuple[int, str]]:
        """(exit code, stderr) of each worker, in start order."""
        deadline = time.monotonic() + timeout
        results = []
        for proc in self.procs:
            try:
                _out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                _out, err = proc.communicate()
            results.append((proc.returncode, err.decode(errors="replace")))
        return results


def create_rate_windows(times: list[float], window: float) -> int:
    """The most createTask arrivals in any `window` seconds (a sliding window)."""
    times = sorted(times)
    most, lo = 0, 0
    for hi, at in enumerate(times):
        while at - times[lo] >= window:
            lo += 1
        most = max(most, hi - lo + 1)
    return most
