"""Upload benchmark: local input files to the simulator's upload host, streamed.

    .venv/bin/python bench/bench_uploads.py                  # 100 x 2 MB, 20 x 10 MB, 6 x 30 MB
    .venv/bin/python bench/bench_uploads.py --sizes 2 --files 100

The simulator runs in a process of its own and the uploads in another, so the peak RSS
printed is the uploading client's alone: `UploadClient` with the run's default settings
(`--upload-concurrency 4`, `--upload-rate 10`/s, stream method) unless `--concurrency`
and `--rate` say otherwise. Files are random bytes behind a PNG signature (the host sniffs
the type from the first bytes; random bytes make nothing compressible on the way).

Prints, per size: uploads per second, MB/s, and the client's peak RSS. Streaming means
the RSS stays flat as the files grow (a whole-file read would add each file's size
times the concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-local"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _serve(port_queue: multiprocessing.Queue[str], max_bytes: int) -> None:
    from liangxin_batch.simulator import SimConfig, run_simulator

    config = SimConfig(api_key=KEY, seed=3, upload_max_bytes=max_bytes)
    run_simulator(config, "127.0.0.1", 0, on_ready=port_queue.put)


def _make_files(folder: Path, count: int, size: int) -> list[Any]:
    import hashlib

    from liangxin_batch.core._local_files import LocalFile

    files = []
    for i in range(count):
        path = folder / f"f{size}-{i:03d}.png"
        digest = hashlib.sha256()
        with path.open("wb") as out:
            out.write(PNG_SIGNATURE)
            digest.update(PNG_SIGNATURE)
            left = size - len(PNG_SIGNATURE)
            while left > 0:
                piece = os.urandom(min(left, 1 << 20))
                out.write(piece)
                digest.update(piece)
                left -= len(piece)
        files.append(LocalFile(digest.hexdigest(), size, "image/png", str(path), path.name))
    return files


def _upload_all(args: tuple[str, list[Any], int, int], out: multiprocessing.Queue[Any]) -> None:
    """The client process: upload every file at once (the client's gate and limiter pace
    them), then report the wall time and this process's peak RSS."""
    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.run._upload_client import UploadClient

    upload_url, files, concurrency, rate = args
    settings = RunSettings(upload_concurrency=concurrency, upload_limit=rate)

    async def main() -> float:
        client = UploadClient(upload_base_url=upload_url, api_key=KEY, settings=settings)
        try:
            start = time.perf_counter()
            answers = await asyncio.gather(*(client.upload(f) for f in files))
            took = time.perf_counter() - start
        finally:
            await client.aclose()
        assert len({a.url for a in answers}) == len(files)
        return took

    took = asyncio.run(main())
    out.put((took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,10,30", help="file sizes in MB (10**6 bytes)")
    parser.add_argument("--files", type=int, default=0, help="files per size (0: 200 MB each)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=int, default=10, help="uploads per second")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[str] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports, 100_000_000), daemon=True)
    server.start()
    from liangxin_batch.simulator import upload_base_url

    upload_url = upload_base_url(ports.get(timeout=60))
    print(f"client: concurrency {args.concurrency}, {args.rate} uploads/s, stream method")
    try:
        for mb in sizes:
            size = int(mb * 1e6)
            count = args.files or max(1, int(200 / mb))
            with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
                files = _make_files(Path(tmp), count, size)
                out: multiprocessing.Queue[Any] = ctx.Queue()
                client = ctx.Process(
                    target=_upload_all, args=((upload_url, files, args.concurrency, args.rate), out)
                )
                client.start()
                took, rss_kb = out.get(timeout=600)
                client.join()
            total = count * size / 1e6
            print(
                f"{count:>4} files of {mb:g} MB: {count / took:6.1f} uploads/s, "
                f"{total / took:6.1f} MB/s, {took:6.2f} s; client peak RSS {rss_kb / 1024:.0f} MB"
            )
    finally:
        server.terminate()
        server.join()
    print("load average at the end " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
