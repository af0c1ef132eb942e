"""Hostile inputs and peers: memory of `validate` on bombs, and Ctrl-C against a drip.

    .venv/bin/python bench/bench_hostile.py

Prints:
- peak RSS of `liangxin-batch validate` on a billion-laughs YAML (10^9 nodes once
  expanded), on a CSV with a 50 MB cell, and on a YAML with a 50 MB value;
- seconds from the first Ctrl-C (SIGINT) to the exit of a `run` whose downloads drip
  (50 bytes/s from the simulator over loopback), and its exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-hostile"

_PEAK = """
import sys
from liangxin_batch.cli import main
try:
    main(["validate", sys.argv[1]], standalone_mode=False)
    code = 0
except SystemExit as e:
    code = e.code
except Exception as e:  # a library error: the CLI would print it and exit 2
    code = type(e).__name__
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(code, int(hwm.split()[1]) / 1024)
"""


def validate_peak(path: Path) -> tuple[str, float, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True
    )
    code, mb = done.stdout.split()[-2:]
    return code, float(mb), time.monotonic() - started


def bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]")
    lines += ["jobs:", f"  - {{model: z-image, prompt: x, aspect_ratio: '1:1', note: *a{levels}}}"]
    return "\n".join(lines) + "\n"


def ctrl_c_during_a_drip(tmp: Path) -> tuple[float, int, int]:
    from liangxin_batch.simulator import FaultProfile, SimConfig, create_app, serve_in_thread

    config = SimConfig(
        api_key=KEY,
        latency_scale=0.02,
        seed=5,
        faults=FaultProfile(slow_download_bps=50),
    )
    manifest = tmp / "drip.csv"
    manifest.write_text(
        "id,model,prompt\n" + "".join(f"d{i},google/nano-banana,drip {i}\n" for i in range(8))
    )
    catalog = tmp / "fast.yaml"
    catalog.write_text(
        "models:\n  - id: google/nano-banana\n    patch: true\n    typical_seconds: 0.1\n"
    )
    out = tmp / "out"
    with serve_in_thread(create_app(config)) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIANGXIN_")}
        env.update(LIANGXIN_API_KEY=KEY, LIANGXIN_BASE_URL=url)
        cmd = [sys.executable, "-m", "liangxin_batch", "--catalog", str(catalog), "run"]
        cmd += [str(manifest), "--out", str(out), "--quiet"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not any(out.glob("outputs/**/.*.part")):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("no download in progress within 60 s")
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        took = time.monotonic() - sent
    parts = len(list(out.glob("outputs/**/.*.part")))
    return took, code, parts


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cases = {
            "alias bomb (10^9 nodes)": ("bomb.yaml", bomb()),
            "CSV with a 50 MB cell": (
                "cell.csv",
                'model,prompt,aspect_ratio\nz-image,"' + "x" * 50_000_000 + '",1:1\n',
            ),
            "YAML with a 50 MB value": (
                "value.yaml",
                "jobs:\n  - {model: z-image, aspect_ratio: '1:1', prompt: "
                + "x" * 50_000_000
                + "}\n",
            ),
        }
        for what, (file_name, text) in cases.items():
            path = tmp / file_name
            path.write_text(text)
            code, mb, seconds = validate_peak(path)
            print(f"validate, {what:<26} exit {code}  peak RSS {mb:6.1f} MB  {seconds:5.2f} s")
        took, exit_code, parts = ctrl_c_during_a_drip(tmp)
        print(
            f"Ctrl-C to exit with a dripping download: {took:.2f} s (exit {exit_code}, "
            f"{parts} .part files left)"
        )


if __name__ == "__main__":
    main()
