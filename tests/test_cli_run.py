"""`run`, `status` and signals end to end: real simulator on loopback, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from liangxin_batch.cli import main
from liangxin_batch.simulator import SimConfig, Simulator, create_app, serve_in_thread
from tests.cli_support import child_env, fast_catalog, write_manifest
from tests.sim_support import sim_of
from tests.state_support import counts_in

KEY = "sk-cli-SECRET-9f8e7d6c5b4a3210"


@pytest.fixture
def sim() -> Iterator[tuple[str, Simulator]]:
    app = create_app(SimConfig(api_key=KEY, create_window=1.0, latency_scale=0.02, seed=2))
    with serve_in_thread(app) as url:
        yield url, sim_of(app)


def manifest(path: Path, n: int, *, model: str = "google/nano-banana") -> Path:
    write_manifest(path, n, model=model)
    return path


def env_for(url: str, key: str = KEY) -> dict[str, str]:
    return child_env(url, key)


def run_args(tmp: Path, m: Path, out: Path) -> list[str]:
    """`run` with a fast catalog and a 1-s window: the CLI tests' common command line."""
    return [
        "--catalog",
        str(fast_catalog(tmp)),
        "run",
        str(m),
        "--out",
        str(out),
        "--rate",
        "20/1s",
    ]


def test_run_succeeds_and_the_key_appears_nowhere(
    tmp_path: Path, sim: tuple[str, Simulator]
) -> None:
    url, _ = sim
    out = tmp_path / "out"
    m = manifest(tmp_path / "m.csv", 12)
    result = CliRunner().invoke(main, run_args(tmp_path, m, out), env=env_for(url))
    assert result.exit_code == 0, result.output
    assert "12 succeeded" in result.stdout
    status = CliRunner().invoke(main, ["status", str(out)])
    assert status.exit_code == 0 and "succeeded: 12" in status.stdout
    seen = result.output + status.output
    for path in out.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("utf-8", "replace")
    assert KEY not in seen


def test_bad_manifest_exits_2_and_sends_nothing(tmp_path: Path, sim: tuple[str, Simulator]) -> None:
    url, simulator = sim
    m = tmp_path / "bad.csv"
    m.write_text("id,model,prompt,aspect_ratio\nok,z-image,fine,1:1\nbad,z-image,x,16-9\n")
    result = CliRunner().invoke(
        main, ["run", str(m), "--out", str(tmp_path / "o")], env=env_for(url)
    )
    assert result.exit_code == 2
    assert "bad.csv:3" in result.stderr and "16:9" in result.stderr
    assert "Traceback" not in result.output
    assert simulator.ledger.create_attempts() == []
    assert not (tmp_path / "o" / "state.db").exists()


def test_wrong_key_stops_with_exit_3_and_says_what_to_fix(
    tmp_path: Path, sim: tuple[str, Simulator]
) -> None:
    url, _ = sim
    m = manifest(tmp_path / "m.csv", 3)
    result = CliRunner().invoke(
        main,
        ["run", str(m), "--out", str(tmp_path / "o")],
        env=env_for(url, key="sk-wrong-key-000000000"),
    )
    assert result.exit_code == 3
    assert "401" in result.stdout and "LIANGXIN_API_KEY" in result.stdout
    assert "sk-wrong-key-000000000" not in result.output


def test_missing_base_url_names_the_variable(tmp_path: Path) -> None:
    m = manifest(tmp_path / "m.csv", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANGXIN_")}
    env["LIANGXIN_API_KEY"] = KEY
    result = CliRunner().invoke(main, ["run", str(m), "--out", str(tmp_path / "o")], env=env)
    assert result.exit_code == 2
    assert "LIANGXIN_BASE_URL" in result.stderr and "--simulate" in result.stderr


def test_max_credits_refuses_before_sending(tmp_path: Path, sim: tuple[str, Simulator]) -> None:
    url, simulator = sim
    m = manifest(tmp_path / "m.csv", 10)
    result = CliRunner().invoke(
        main, ["run", str(m), "--out", str(tmp_path / "o"), "--max-credits", "5"], env=env_for(url)
    )
    assert result.exit_code == 2
    assert "--max-credits" in result.stderr
    assert simulator.ledger.create_attempts() == []


@pytest.mark.slow
def test_first_sigint_checkpoints_and_exits_130_then_resume_finishes(
    tmp_path: Path, sim: tuple[str, Simulator]
) -> None:
    url, simulator = sim
    m = manifest(tmp_path / "m.csv", 60)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "liangxin_batch", *run_args(tmp_path, m, out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env_for(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not simulator.ledger.creates() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition with a deadline, not timing
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert "Resume with" in stdout.decode()
    states = counts_in(out)
    assert "submitting" not in states
    assert states.get("pending", 0) > 0
    again = subprocess.run(cmd, env=env_for(url), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert simulator.ledger.duplicates() == {}
    assert len(simulator.ledger.creates()) == 60
