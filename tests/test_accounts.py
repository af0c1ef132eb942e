"""Several accounts in one process (`--accounts`): the file, the spread of jobs over the
accounts, each account's own limits, a task's calls with its creator's key, a 402 on one
account, a resume, and a task whose account left the file. Against the in-process
simulator serving several keys, in virtual time."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.cli import main as cli_main
from liangxin_batch.cli._launch import format_summary
from liangxin_batch.core._accounts import AccountSpec
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError
from liangxin_batch.run._credentials import AccountKey, Secret, load_accounts
from liangxin_batch.run._run import RunHandle, run_batch_async
from liangxin_batch.simulator import SimConfig, SimKey, Simulator, create_app
from liangxin_batch.state._status import format_status, read_status
from liangxin_batch.state._store import StateStore
from tests.runner_harness import make_jobs, records_for
from tests.sim_support import sim_of
from tests.virtual_time import run_virtual

KEY_A = "sk-acct-a-0000"
KEY_B = "sk-acct-b-1111"

# -- the file ----------------------------------------------------------------------------

GOOD = """\
accounts:
  - name: studio-a
    key_env: LX_KEY_A
    rate: 20/10s
    poll_rate: 10/s
  - name: studio-b
    key_env: LX_KEY_B
"""
ENV = {"LX_KEY_A": KEY_A, "LX_KEY_B": KEY_B}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_gives_each_account_its_key_and_limits(tmp_path: Path) -> None:
    accounts = load_accounts(write(tmp_path, GOOD), environ=ENV)
    assert [a.name for a in accounts] == ["studio-a", "studio-b"]
    assert accounts[0].spec.rate == (20, 10.0)
    assert accounts[0].spec.poll_rate == (10, 1.0)
    assert accounts[1].spec.rate is None  # the run's --rate
    assert accounts[0].key.reveal() == KEY_A
    assert KEY_A not in repr(accounts)


@pytest.mark.parametrize(
    ("text", "env", "where"),
    [
        (GOOD.replace("    poll_rate:", "    pol_rate:"), ENV, ":5: unknown field 'pol_rate'"),
        (GOOD.replace("studio-b", "studio-a"), ENV, ":6: name: account 'studio-a' is named twice"),
        (GOOD.replace("    key_env: LX_KEY_B\n", ""), ENV, ":6: key_env: missing"),
        (GOOD, {"LX_KEY_A": KEY_A}, ":7: key_env: LX_KEY_B is not set"),
        (GOOD, {"LX_KEY_A": KEY_A, "LX_KEY_B": "  "}, ":7: key_env: LX_KEY_B is not set"),
        (GOOD.replace("rate: 20/10s", "rate: 20 per 10s"), ENV, ":4: rate: expected a rate"),
        (GOOD.replace("poll_rate: 10/s", "poll_rate: 0/s"), ENV, ":5: poll_rate: expected"),
        ("accounts: []\n", ENV, ":1: accounts: expected a non-empty list"),
        ("accounts:\n", ENV, ":1: accounts: expected a non-empty list"),
        ("other: 1\n", ENV, ":1: unknown field 'other'"),
        ("- a\n", ENV, ":1: expected a mapping"),
        (
            GOOD.replace("    key_env: LX_KEY_B\n", "    key: sk-live-secret\n"),
            ENV,
            ":7: key: the key never goes in the file",
        ),
        ("accounts:\n  - name: [a\n", ENV, ":3:"),
    ],
)
def test_a_bad_file_is_refused_saying_where(
    tmp_path: Path, text: str, env: dict[str, str], where: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_accounts(path, environ=env)
    message = str(caught.value)
    assert message.startswith(str(path) + ":"), message
    assert where in message, message
    assert "sk-live-secret" not in message


def test_cli_refuses_a_bad_accounts_file_with_exit_2_and_sends_nothing(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("model,prompt,aspect_ratio\nz-image,a,1:1\n", encoding="utf-8")
    accounts = write(tmp_path, GOOD.replace("key_env: LX_KEY_B", "key_env: LX_UNSET_FOR_TEST"))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--accounts", str(accounts)]
    env = {"LX_KEY_A": KEY_A, "LX_UNSET_FOR_TEST": "", "LIANGXIN_BASE_URL": "http://127.0.0.1:9"}
    result = CliRunner().invoke(cli_main, args, env=env)
    assert result.exit_code == 2, result.output
    assert f"{accounts}:7: key_env: LX_UNSET_FOR_TEST is not set" in result.output
    assert "Traceback" not in result.output
    assert not (out / "state.db").exists()


# -- runs against a simulator serving two keys -------------------------------------------


def two_keys(*, a: SimKey | None = None, b: SimKey | None = None) -> SimConfig:
    """A simulator whose main key is A; B is another account of its own."""
    a = a or SimKey("a", create_limit=4, create_window=10.0)
    return SimConfig(
        api_key=KEY_A,
        key_name="a",
        create_limit=a.create_limit,
        create_window=a.create_window,
        poll_limit=a.poll_limit,
        poll_window=a.poll_window,
        credits=a.credits,
        more_keys={KEY_B: b or SimKey("b", create_limit=8, create_window=10.0)},
        seed=5,
    )


def keys(rate_a: tuple[int, float] = (4, 10.0), rate_b: tuple[int, float] = (8, 10.0)) -> list:
    return [
        AccountKey(AccountSpec("a", "LX_KEY_A", rate=rate_a), Secret(KEY_A)),
        AccountKey(AccountSpec("b", "LX_KEY_B", rate=rate_b), Secret(KEY_B)),
    ]


async def run_once(
    out: Path,
    sim_app: object,
    jobs: Sequence[object],
    accounts: list[AccountKey],
    *,
    stop_at: float | None = None,
) -> RunSummary:
    transport = httpx.ASGITransport(app=sim_app)  # type: ignore[arg-type]
    handle = RunHandle()
    if stop_at is not None:
        asyncio.get_running_loop().call_later(stop_at, handle.interrupt)
    return await run_batch_async(
        records_for(jobs),  # type: ignore[arg-type]
        out_dir=out,
        catalog=default_catalog(),
        settings=RunSettings(max_in_flight=40),
        accounts=accounts,
        base_url="http://sim",
        transport=transport,
        download_transport=transport,
        handle=handle,
    )


def assert_window(times: list[float], limit: int, window: float) -> None:
    """No `limit + 1` admissions inside any `window` seconds."""
    times = sorted(times)
    for i in range(len(times) - limit):
        assert times[i + limit] - times[i] >= window, (i, times[i : i + limit + 1])


def assert_each_task_asked_by_its_creator(sim: Simulator, out: Path) -> None:
    creator = {e.task_id: e.account for e in sim.ledger.creates()}
    polls = sim.ledger.polls()
    assert polls
    for poll in polls:
        assert poll.outcome != "404", poll  # never asked with another key
        assert poll.account == creator[poll.task_id], poll
    store = StateStore(out / "state.db", readonly=True)
    with contextlib.closing(store):
        for job in store.iter_jobs(None):
            if job.task_id:
                assert job.account == creator[job.task_id]
        for attempt in store.attempts():
            if attempt.task_id:
                assert attempt.account == creator[attempt.task_id]


def test_two_accounts_each_within_its_own_limit_every_job_created_once(tmp_path: Path) -> None:
    jobs = make_jobs(36, models=("z-image",))

    async def main() -> tuple[RunSummary, Simulator]:
        app = create_app(two_keys(), clock=asyncio.get_running_loop().time)
        summary = await run_once(tmp_path, app, jobs, keys())
        return summary, sim_of(app)

    summary, sim = run_virtual(main)
    assert summary.counts == {"succeeded": 36}
    attempts = sim.ledger.create_attempts()
    assert [e for e in attempts if e.outcome == "429"] == []
    assert sim.ledger.duplicates() == {}
    assert len(sim.ledger.creates()) == 36
    by_account = Counter(e.account for e in sim.ledger.creates())
    # Spread by who admits soonest: about in proportion to the limits (4 and 8 per 10 s).
    assert 9 <= by_account["a"] <= 15 and by_account["a"] + by_account["b"] == 36
    for name, limit in (("a", 4), ("b", 8)):
        assert_window([e.at for e in attempts if e.account == name], limit, 10.0)
    assert_each_task_asked_by_its_creator(sim, tmp_path)
    assert summary.accounts_to_top_up == []


def test_402_on_one_account_the_other_finishes_and_the_summary_names_it(
    tmp_path: Path,
) -> None:
    jobs = make_jobs(12, models=("z-image",))

    async def main() -> tuple[RunSummary, Simulator]:
        config = two_keys(b=SimKey("b", create_limit=8, create_window=10.0, credits=0))
        app = create_app(config, clock=asyncio.get_running_loop().time)
        summary = await run_once(tmp_path, app, jobs, keys())
        return summary, sim_of(app)

    summary, sim = run_virtual(main)
    assert summary.counts == {"succeeded": 12}
    assert summary.accounts_to_top_up == ["b"]
    assert summary.stopped_reason is None
    assert {e.account for e in sim.ledger.creates()} == {"a"}
    assert [e.outcome for e in sim.ledger.create_attempts() if e.account == "b"] == ["402"]
    assert sim.ledger.duplicates() == {}
    text = format_summary(summary, tmp_path)
    assert "out of credits: b" in text and KEY_B not in text
    assert "accounts out of credits (top up): b" in format_status(read_status(tmp_path))


def test_every_account_out_of_credits_stops_the_run_as_a_402_does(tmp_path: Path) -> None:
    jobs = make_jobs(4, models=("z-image",))

    async def main() -> RunSummary:
        config = two_keys(
            a=SimKey("a", create_limit=4, credits=0), b=SimKey("b", create_limit=8, credits=0)
        )
        app = create_app(config, clock=asyncio.get_running_loop().time)
        return await run_once(tmp_path, app, jobs, keys())

    summary = run_virtual(main)
    assert summary.stopped_reason is not None
    assert sorted(summary.accounts_to_top_up) == ["a", "b"]
    assert summary.exit_code == 3
    assert summary.counts == {"pending": 4}


def test_resume_after_ctrl_c_with_accounts(tmp_path: Path) -> None:
    jobs = make_jobs(30, models=("z-image",))

    async def main() -> tuple[RunSummary, RunSummary, Simulator]:
        app = create_app(two_keys(), clock=asyncio.get_running_loop().time)
        first = await run_once(tmp_path, app, jobs, keys(), stop_at=12.0)
        second = await run_once(tmp_path, app, jobs, keys())
        return first, second, sim_of(app)

    first, second, sim = run_virtual(main)
    assert first.interrupted and first.counts.get("pending", 0) > 0
    assert second.counts == {"succeeded": 30}
    assert sim.ledger.duplicates() == {}
    assert [e for e in sim.ledger.create_attempts() if e.outcome == "429"] == []
    for name, limit in (("a", 4), ("b", 8)):
        times = [e.at for e in sim.ledger.create_attempts() if e.account == name]
        assert_window(times, limit, 10.0)  # across the restart too
    assert_each_task_asked_by_its_creator(sim, tmp_path)


def test_a_task_whose_account_left_the_file_is_not_polled_with_another_key(
    tmp_path: Path,
) -> None:
    jobs = make_jobs(8, models=("kling-3.0/video",))  # long tasks: in flight at the stop

    async def main() -> tuple[RunSummary, RunSummary, Simulator, int]:
        app = create_app(two_keys(), clock=asyncio.get_running_loop().time)
        await run_once(tmp_path, app, jobs, keys(), stop_at=20.0)
        sim = sim_of(app)
        polls_before = len(sim.ledger.polls())
        only_a = await run_once(tmp_path, app, jobs, keys()[:1])
        polls_of_b = [e for e in sim.ledger.polls()[polls_before:] if e.account != "a"]
        assert polls_of_b == []
        both = await run_once(tmp_path, app, jobs, keys())
        return only_a, both, sim, polls_before

    only_a, both, sim, _ = run_virtual(main)
    missing = only_a.accounts_missing.get("b", 0)
    assert missing > 0
    assert only_a.counts.get("submitted", 0) == missing
    text = format_summary(only_a, tmp_path)
    assert "account(s) not in the accounts file: b" in text
    store = StateStore(tmp_path / "state.db", readonly=True)
    with contextlib.closing(store):
        notes = [e.detail for e in store.events() if "not among this run's accounts" in e.detail]
    assert len(notes) >= missing and all("'b'" in n for n in notes)
    assert both.counts == {"succeeded": 8}
    assert sim.ledger.duplicates() == {}
    assert_each_task_asked_by_its_creator(sim, tmp_path)


def test_without_accounts_the_one_account_is_default(tmp_path: Path) -> None:
    jobs = make_jobs(3, models=("z-image",))

    async def main() -> RunSummary:
        app = create_app(SimConfig(api_key=KEY_A, seed=1), clock=asyncio.get_running_loop().time)
        transport = httpx.ASGITransport(app=app)
        return await run_batch_async(
            records_for(jobs),
            out_dir=tmp_path,
            catalog=default_catalog(),
            api_key=KEY_A,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
        )

    summary = run_virtual(main)
    assert summary.counts == {"succeeded": 3}
    store = StateStore(tmp_path / "state.db", readonly=True)
    with contextlib.closing(store):
        assert {j.account for j in store.iter_jobs(None)} == {"default"}
    assert "out of credits" not in format_summary(summary, tmp_path)


def test_without_accounts_a_402_reads_as_it_always_did(tmp_path: Path) -> None:
    jobs = make_jobs(2, models=("z-image",))

    async def main() -> RunSummary:
        config = SimConfig(api_key=KEY_A, seed=1, credits=0)
        app = create_app(config, clock=asyncio.get_running_loop().time)
        transport = httpx.ASGITransport(app=app)
        return await run_batch_async(
            records_for(jobs),
            out_dir=tmp_path,
            catalog=default_catalog(),
            api_key=KEY_A,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
        )

    summary = run_virtual(main)
    assert summary.exit_code == 3 and summary.stopped_reason
    assert summary.accounts_to_top_up == []
    assert "Account(s) out of credits" not in format_summary(summary, tmp_path)
