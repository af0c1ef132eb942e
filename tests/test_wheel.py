"""Issue 15, install and demo: `liangxin-batch demo` works from any folder and from the
wheel (the quickstart manifest ships inside the package)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.cli_support import child_env, cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
#: hatchling comes with the dev extras, so the wheel builds without the network.
_PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]


def _demo_ok(done: subprocess.CompletedProcess[str], out: Path) -> None:
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert (out / "results.csv").exists() and (out / "report.html").exists()
    assert len(list((out / "outputs").rglob("*.png"))) >= 5


def test_demo_runs_from_a_folder_that_is_not_the_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("demo", "--out", "d"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=child_env("http://127.0.0.1:9"),
        timeout=300,
    )
    _demo_ok(done, tmp_path / "d")


def test_the_wheel_has_what_demo_needs(tmp_path: Path) -> None:
    """Build the wheel, install it alone into a fresh venv (its dependencies come from
    this environment's site-packages, so no network), run `liangxin-batch demo` from
    another folder."""
    dist = tmp_path / "dist"
    subprocess.run(
        [*_PIP_WHEEL, "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    wheel = next(dist.glob("liangxin_batch-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's packages, but not its editable install of the repository.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = child_env("http://127.0.0.1:9")
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(python), "-c", "import liangxin_batch; print(liangxin_batch.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert str(env_dir) in where  # the wheel's copy, not the repository's
    done = subprocess.run(
        [str(env_dir / "bin" / "liangxin-batch"), "demo", "--out", "d"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    _demo_ok(done, work / "d")
