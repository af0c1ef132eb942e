"""Benchmark: validate and plan a 1,000,000-row CSV manifest through the CLI.

    python bench/bench_manifest.py              # 1,000,000 rows (generated once, then reused)
    python bench/bench_manifest.py --rows 50000 --regenerate

The CSV goes to bench/_data/ (gitignored). Each command runs as its own subprocess; the
figures are its wall time and peak RSS (ru_maxrss of that child alone, measured from a
small wrapper process so one command's peak cannot hide the other's). Targets from the
issue: peak RSS under 300 MB and well under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "_data"

# (model, aspect ratios it takes, extra columns it takes with their values)
MODELS: list[tuple[str, list[str], dict[str, list[str]]]] = [
    ("z-image", ["1:1", "4:3", "3:4", "16:9", "9:16"], {}),
    (
        "seedream/4.5-text-to-image",
        ["1:1", "16:9", "9:16", "2:3", "3:2"],
        {"quality": ["basic", "high"]},
    ),
    ("google/nano-banana", ["1:1", "16:9", "4:5", "auto"], {"output_format": ["png", "jpeg"]}),
    ("nano-banana-pro", ["1:1", "16:9", "21:9"], {"resolution": ["1K", "2K", "4K"]}),
    ("flux-2/pro-text-to-image", ["1:1", "3:2", "16:9"], {"resolution": ["1K", "2K"]}),
]
COLUMNS = [
    "id",
    "model",
    "prompt",
    "aspect_ratio",
    "quality",
    "resolution",
    "output_format",
    "_batch",
]
WORDS = [
    *("a", "an", "the", "red", "blue", "green", "quiet", "busy", "tiny", "huge", "old", "new"),
    *("fox", "cat", "city", "river", "mountain", "teapot", "bicycle", "lantern", "garden"),
    *("at dawn", "at dusk", "in the rain", "under neon light", "in watercolor", "on film"),
]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for i in range(rows):
            model, ratios, extra = MODELS[i % len(MODELS)]
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
            # Every 50th prompt spans two lines, quoted, as spreadsheets write them.
            prompt = f"{words}, shot {i}" + ("\nsecond line" if i % 50 == 0 else "")
            row = {
                "id": f"job-{i:07d}" if i % 3 == 0 else "",  # the rest get derived ids
                "model": model,
                "prompt": prompt,
                "aspect_ratio": rng.choice(ratios),
                "_batch": f"b{i // 10_000}",
            }
            for name, values in extra.items():
                row[name] = rng.choice(values)
            out.writerow([row.get(c, "") for c in COLUMNS])
    tmp.replace(path)


def measure(cmd: list[str]) -> dict[str, float | int]:
    """Run cmd in a fresh wrapper process so ru_maxrss covers this command alone."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': p.returncode, 'wall': wall, 'rss_kb': rss,"
        " 'out': p.stdout[-2000:], 'err': p.stderr[-2000:]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True
    )
    result: dict[str, float | int] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--regenerate", action="store_true", help="rewrite the CSV even if it exists"
    )
    args = parser.parse_args()

    path = DATA / f"manifest_{args.rows}.csv"
    if args.regenerate or not path.exists():
        t = time.perf_counter()
        generate(path, args.rows)
        took = time.perf_counter() - t
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {took:.1f}s")
    else:
        print(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")

    cli = [sys.executable, "-m", "liangxin_batch"]
    failed = False
    for name, cmd in (
        ("validate", [*cli, "validate", str(path)]),
        ("plan", [*cli, "plan", str(path), "--out", str(DATA / "out")]),
    ):
        r = measure(cmd)
        rss_mb = float(r["rss_kb"]) / 1024  # Linux reports KiB
        ok = r["rc"] == 0 and rss_mb < 300
        failed |= not ok
        print(
            f"{name:9s} rc={r['rc']}  wall {float(r['wall']):6.1f}s  peak RSS {rss_mb:6.1f} MB"
            f"  {'OK' if ok else 'OVER TARGET OR FAILED'}"
        )
        text = str(r["out"]).strip() or str(r["err"]).strip()
        print("    " + text.splitlines()[0] if text else "")
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
