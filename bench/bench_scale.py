"""One batch over several workers and accounts (issue 18): worker processes running the
same `run --state postgresql://… --accounts FILE` against one simulator that serves
every key, on loopback, with time scaled (each account 80 creates per 4 s, latencies
/ 50), and a throwaway PostgreSQL server (tests/pg_support.py: fsync off).

    .venv/bin/python bench/bench_scale.py                # 1, 2, 4 workers x 1, 3 accounts
    .venv/bin/python bench/bench_scale.py --jobs 1200 --workers 4 --accounts 3

Prints, per scenario: the create rate achieved (creates per second between the first and
the last) / the sum of the accounts' limits; wall seconds; 429s. Then the claim overhead:
milliseconds of database time per job to claim a batch's jobs, 4 connections claiming at
once in batches of 20; and the time from a worker's SIGKILL to its jobs being taken over
(lease 3 s), read from the state every 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liangxin_batch.core._states import JobState
from liangxin_batch.simulator import SimConfig, SimKey, create_app, serve_in_thread
from liangxin_batch.state._backends import open_state
from tests import cli_support
from tests.pg_support import PgServer, fresh_database, running_server
from tests.sim_support import sim_of
from tests.workers_support import Fleet

RATE, WINDOW = 80, 4.0


def keys(n: int) -> dict[str, str]:
    return {f"acct-{i}": f"sk-bench-scale-{i:04d}" for i in range(n)}


def simulator(accounts: dict[str, str]) -> SimConfig:
    (first, key), *more = accounts.items()
    return SimConfig(
        api_key=key,
        key_name=first,
        more_keys={
            k: SimKey(name=name, create_limit=RATE, create_window=WINDOW, poll_limit=40)
            for name, k in more
        },
        create_limit=RATE,
        create_window=WINDOW,
        poll_limit=40,
        latency_scale=0.02,
    )


def fleet(
    folder: Path, base_url: str, url: str, accounts: dict[str, str], jobs: int, lease: str
) -> Fleet:
    manifest = folder / "m.csv"
    cli_support.write_manifest(manifest, jobs, prefix="s", prompt="a scale prompt {i}")
    cli_support.fast_catalog(folder, typical_seconds=0.15)
    lines = ["accounts:"]
    env = cli_support.child_env(base_url, "unused")
    for name, key in accounts.items():
        var = "LIANGXIN_KEY_" + name.upper().replace("-", "_")
        lines += [f"  - name: {name}", f"    key_env: {var}"]
        env[var] = key
    (folder / "accounts.yaml").write_text("\n".join(lines) + "\n")
    return Fleet(
        manifest=manifest,
        out=folder / "out",
        state_url=url,
        base_url=base_url,
        env=env,
        extra=[
            *("--accounts", str(folder / "accounts.yaml")),
            *("--rate", f"{RATE}/{WINDOW:g}s", "--poll-rate", "40/1s", "--lease", lease),
        ],
    )


def scenario(server: PgServer, workers: int, n_accounts: int, jobs: int) -> str:
    accounts = keys(n_accounts)
    app = create_app(simulator(accounts))
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_in_thread(app) as base_url,
        fresh_database(server) as url,
    ):
        runs = fleet(Path(tmp), base_url, url, accounts, jobs, "60s")
        started = time.monotonic()
        runs.start(workers)
        results = runs.wait(timeout=3600)
        wall = time.monotonic() - started
        ledger = sim_of(app).ledger
    failed = [code for code, _ in results if code != 0]
    creates = sorted(e.at for e in ledger.creates())
    rate = (len(creates) - 1) / (creates[-1] - creates[0]) if len(creates) > 1 else 0.0
    limit = n_accounts * RATE / WINDOW
    rejected = sum(e.outcome == "429" for e in ledger.create_attempts())
    return (
        f"{workers} worker(s) x {n_accounts} account(s), {jobs:,} jobs: create rate "
        f"{rate:.1f}/s = {rate / limit:.3f} of {limit:g}/s; wall {wall:.1f} s; 429s {rejected}; "
        f"duplicates {len(ledger.duplicates())}; failed workers {failed or 'none'}"
    )


def claim_overhead(server: PgServer, jobs: int, connections: int = 4) -> str:
    spent: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, fresh_database(server) as url:
        folder = Path(tmp)
        with contextlib.closing(open_state(folder, url=url)) as first:
            first.upsert_jobs(
                (f"c{i:07d}", i, "z-image", json.dumps({"prompt": f"p{i}"}), "{}", f"h{i}")
                for i in range(jobs)
            )

        def claimer(name: str) -> None:
            store = open_state(folder, url=url)
            with contextlib.closing(store):
                store.register_worker(name, host="bench", pid=0, lease=600)
                store.holder = name
                while True:
                    t = time.perf_counter()
                    got = store.claim(name, [JobState.PENDING], 20)
                    spent.append(time.perf_counter() - t)
                    if not got:
                        return

        threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return (
        f"claim overhead: {sum(spent) / jobs * 1e3:.3f} ms of database time per job "
        f"({jobs:,} jobs, {connections} connections claiming 20 at a time)"
    )


def adoption_time(server: PgServer, jobs: int) -> str:
    accounts = keys(1)
    app = create_app(simulator(accounts))
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_in_thread(app) as base_url,
        fresh_database(server) as url,
    ):
        runs = fleet(Path(tmp), base_url, url, accounts, jobs, "3s")
        runs.start(4)
        sim = sim_of(app)
        cli_support.wait_for(lambda: len(sim.ledger.creates()) >= jobs // 4, "a quarter", 300)
        reader = open_state(runs.out, url=url, readonly=True)
        before = {w for w, *_ in reader.live_workers()}
        runs.kill(0)
        killed_at = time.monotonic()
        adopted = None
        while adopted is None and time.monotonic() - killed_at < 120:
            alive = {w for w, *_ in reader.live_workers()}
            gone = before - alive
            held = reader.db.execute(
                "SELECT COUNT(*) FROM jobs WHERE worker IN (SELECT id FROM workers"
                " WHERE ended_how = 'lease expired')"
            ).fetchone()[0]
            if gone and not held:
                adopted = time.monotonic() - killed_at
            time.sleep(0.02)  # a reading every 20 ms: the figure's resolution
        reader.close()
        runs.wait(timeout=600)
    said = f"{adopted:.2f} s" if adopted is not None else "not within 120 s"
    return f"a SIGKILLed worker's jobs taken over (lease 3 s, renewed every 1 s): {said}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--accounts", type=int, nargs="*", default=[1, 3])
    args = parser.parse_args()
    with running_server() as server:
        for n_accounts in args.accounts:
            for workers in args.workers:
                print(scenario(server, workers, n_accounts, args.jobs), flush=True)
        print(claim_overhead(server, 2000), flush=True)
        print(adoption_time(server, 400), flush=True)


if __name__ == "__main__":
    main()
