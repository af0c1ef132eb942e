"""The dataset exports of a finished batch: wall time and peak RSS of `export --format hf`
(copies, and `--link`), `--format webdataset` and `--format parquet --embed-images`, each
its own process as a user runs it (under /usr/bin/time).

    .venv/bin/python bench/bench_datasets.py                  # 10,000 tiny images
    .venv/bin/python bench/bench_datasets.py --images 2000 --image-bytes 1000000

The batch is bench_state.py's (a state synced through the library, the done jobs written
into it with a PNG each), built once per size under $TMPDIR/liangxin-bench-datasets/;
with `--image-bytes` each output is then made that big (random bytes after a real PNG:
the exports never decode an image, so what matters is the bytes moved and held).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_state import EXE, PENDING, _measure, build  # noqa: E402


def _grow(out: Path, size: int) -> None:
    """Every output file made `size` bytes (its recorded size too: else it is 'lost')."""
    db = sqlite3.connect(out / "state.db")
    rows = db.execute("SELECT job_id, n, path FROM files").fetchall()
    for job_id, n, path in rows:
        target = out / path
        head = target.read_bytes()[:200]
        target.write_bytes(head + os.urandom(max(0, size - len(head))))
        db.execute(
            "UPDATE files SET size = ?, mtime_ns = ? WHERE job_id = ? AND n = ?",
            (target.stat().st_size, target.stat().st_mtime_ns, job_id, n),
        )
    db.commit()
    db.close()


def _folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="done jobs, an image each")
    parser.add_argument("--image-bytes", type=int, default=0, help="make each image this big")
    args = parser.parse_args()
    base = Path(tempfile.gettempdir()) / "liangxin-bench-datasets" / f"{args.images}"
    if args.image_bytes:
        base = base.with_name(f"{args.images}-{args.image_bytes}")
    fresh = not (base / "built").exists()
    _manifest, out = build(base, args.images + PENDING)
    if fresh and args.image_bytes:
        _grow(out, args.image_bytes)
    work = base / "exports"
    print(f"{args.images:,} done jobs, an image each, in {out}")
    runs = [
        ("hf (copies)", ["--format", "hf"], work / "hf"),
        ("hf --link", ["--format", "hf", "--link"], work / "hf-link"),
        ("webdataset", ["--format", "webdataset"], work / "wds"),
        ("parquet --embed-images", ["--format", "parquet", "--embed-images"], work / "e.parquet"),
    ]
    for name, flags, target in runs:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        took = _measure([*EXE, "export", str(out), str(target), *flags])
        size = _folder_bytes(target) if target.exists() else 0
        print(
            f"  {name:24s} {took.wall:6.2f} s wall  {took.cpu:6.2f} s CPU  "
            f"peak RSS {took.rss_mb:6.0f} MB  {size / 1e6:8.1f} MB written"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
