"""A hypothesis state machine drives whole runs against the simulator, with random faults
and kills between any two steps, and checks the money rules after every step.

Each step is one run (`run_batch_async`, downloads included) on a fresh virtual-time
loop whose clock continues where the last one stopped, so the simulator's tasks keep
their timing across "process" lifetimes. A kill cancels the run at a random virtual
moment (its `finally` blocks still run, unlike a SIGKILL's); the next step reopens the
same state, as a restarted process would. (Real SIGKILLs of a subprocess:
tests/test_crash.py and bench/bench_crash.py.)

Invariants, after every step:
- no prompt has two tasks, unless the earlier one provably failed (a failed generation
  retried by --retry-failed) or the tool marked the job `unknown`;
- every task the service created is on its job in the state, or the job is `unknown`;
- every transition recorded is in the table, and each job's state is the target of its
  last recorded transition (nothing else changed it);
- credits charged equal the sum the service charged for the billed tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import BILLED_STATES, TRANSITIONS, JobState
from liangxin_batch.errors import LiangXinBatchError
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.simulator import FaultProfile, SimConfig, create_app
from liangxin_batch.simulator._ledger import canonical_job_key
from liangxin_batch.state._backends import open_state
from liangxin_batch.state._store import StateStore
from tests.runner_harness import KEY, make_jobs, records_for
from tests.sim_support import sim_of
from tests.virtual_time import VirtualTimeLoop

JOBS = make_jobs(10, models=("z-image", "google/nano-banana"))
ALLOWED = {(a.value, b.value, e.value) for a, b, e in TRANSITIONS}

faults = st.builds(
    FaultProfile,
    create_500=st.sampled_from([0.0, 0.2]),
    lost_reply=st.sampled_from([0.0, 0.15]),
    gateway_500_after_create=st.sampled_from([0.0, 0.15]),
    fail=st.sampled_from([0.0, 0.2]),
    broken_download=st.sampled_from([0.0, 0.3]),
    garbled_success=st.sampled_from([0.0, 0.3]),
    error_style=st.sampled_from(["body", "status", "bare"]),
)


class BatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(_tmp_factory().mktemp("stateful"))
        self.out = self.root / "out"
        self.now = 1_000.0
        self.loop: VirtualTimeLoop | None = None
        self.retried = Counter[str]()

    @initialize(seed=st.integers(0, 2**30))
    def simulator(self, seed: int) -> None:
        """Drawn by hypothesis, so a failure reproduces and shrinks."""
        self.config = SimConfig(api_key=KEY, seed=seed)
        # The simulator outlives each "process": its clock is the current step's loop
        # (read from threads too, so not through get_running_loop()).
        self.app = create_app(self.config, clock=self._clock)
        self.sim = sim_of(self.app)

    def _clock(self) -> float:
        return self.loop.time() if self.loop is not None else self.now

    # -- steps ------------------------------------------------------------------------

    def _run(self, run_settings: RunSettings, kill_after: float | None) -> None:
        self.loop = loop = VirtualTimeLoop(start=self.now)
        run_settings = dataclasses.replace(run_settings, state_url=_STATE_URL[0])

        async def main() -> None:
            task = asyncio.ensure_future(
                run_batch_async(
                    records_for(JOBS),
                    out_dir=self.out,
                    catalog=default_catalog(),
                    settings=run_settings,
                    api_key=KEY,
                    base_url="http://sim",
                    transport=httpx.ASGITransport(app=self.app),
                    download_transport=httpx.ASGITransport(app=self.app),
                )
            )
            if kill_after is not None:
                loop.call_later(kill_after, task.cancel)
            try:
                await task
            except (asyncio.CancelledError, LiangXinBatchError):
                pass

        try:
            loop.run_until_complete(main())
        finally:
            self.now = loop.time() + 1.0
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self.loop = None

    @rule(profile=faults, kill_after=st.none() | st.floats(0.1, 120.0))
    def run(self, profile: FaultProfile, kill_after: float | None) -> None:
        self.sim.config.faults = profile
        self._run(RunSettings(create_retries=3), kill_after)

    @rule(kill_after=st.none() | st.floats(0.1, 60.0))
    def storm_of_429s(self, kill_after: float | None) -> None:
        """We believe in 40 per 10 s; the service allows 20."""
        self.sim.config.faults = FaultProfile()
        self._run(RunSettings(create_limit=40, create_retries=3), kill_after)

    @rule()
    def retry_failed(self) -> None:
        """--retry-failed: failed generations may be paid again; the user said so."""
        for job in self._jobs().values():
            if job.state in (JobState.FAILED, JobState.TIMED_OUT):
                self.retried[job.job_id] += 1
        self.sim.config.faults = FaultProfile()
        self._run(RunSettings(retry_failed=True), None)

    @rule(data=st.data())
    def delete_an_output(self, data: st.DataObject) -> None:
        files = sorted((self.out / "outputs").rglob("*.*")) if self.out.exists() else []
        files = [f for f in files if not f.name.startswith(".")]
        if files:
            data.draw(st.sampled_from(files)).unlink()

    # -- checks -----------------------------------------------------------------------

    def _reader(self) -> StateStore | None:
        """The state as `status` reads it, on either backend; None before the first run."""
        if not (self.out / "state.db").exists() and not (self.out / "batch.id").exists():
            return None
        return open_state(self.out, url=_STATE_URL[0], readonly=True)

    def _jobs(self) -> dict[str, Any]:
        store = self._reader()
        if store is None:
            return {}
        try:
            return {j.job_id: j for j in store.iter_jobs()}
        finally:
            store.close()

    @invariant()
    def no_prompt_paid_twice_without_cause(self) -> None:
        jobs = self._jobs()
        created = Counter(
            canonical_job_key(e.model or "", e.input or {}) for e in self.sim.ledger.creates()
        )
        for job in jobs.values():
            key = canonical_job_key(job.model, job.input)
            allowed = 1 + self.retried[job.job_id]
            assert created[key] <= allowed, (job.job_id, created[key], job.state)

    @invariant()
    def every_created_task_is_on_its_job_or_the_job_is_unknown(self) -> None:
        jobs = self._jobs()
        by_key = {canonical_job_key(j.model, j.input): j for j in jobs.values()}
        holders = {j.task_id for j in jobs.values() if j.task_id}
        for event in self.sim.ledger.creates():
            job = by_key.get(canonical_job_key(event.model or "", event.input or {}))
            assert job is not None
            if event.task_id in holders:
                continue
            # Not on the job: only a job we said we do not know about, an older task of a
            # retried job, or an intent left by the kill (next start parks it unknown).
            assert (
                job.state in (JobState.UNKNOWN, JobState.SUBMITTING) or self.retried[job.job_id]
            ), (job.job_id, job.state, event.task_id)

    @invariant()
    def every_transition_is_in_the_table(self) -> None:
        store = self._reader()
        if store is None:
            return
        try:
            last: dict[str, str] = {}
            for job_id, source, target, event in store.transitions_taken():
                assert (source, target, event) in ALLOWED, (job_id, source, target, event)
                assert last.get(job_id, "pending") == source, (job_id, source, last.get(job_id))
                last[job_id] = target
            for job in store.iter_jobs():
                assert job.state.value == last.get(job.job_id, "pending"), job.job_id
        finally:
            store.close()

    @invariant()
    def credits_charged_are_what_the_service_charged(self) -> None:
        jobs = self._jobs()
        charged = {e.task_id: e.credits or 0 for e in self.sim.ledger.creates()}
        expected = sum(charged.get(j.task_id, 0) for j in jobs.values() if j.state in BILLED_STATES)
        store_total = sum(j.credits or 0 for j in jobs.values() if j.state in BILLED_STATES)
        assert store_total == pytest.approx(expected), (store_total, expected)

    def teardown(self) -> None:
        loop = VirtualTimeLoop(start=self.now)
        loop.run_until_complete(self.sim.aclose())
        loop.close()


_FACTORY: list[pytest.TempPathFactory] = []
#: The backend of this test's runs: None (state.db) or a PostgreSQL database's URL.
_STATE_URL: list[str | None] = [None]


def _tmp_factory() -> pytest.TempPathFactory:
    return _FACTORY[0]


@pytest.mark.slow
def test_money_rules_hold_under_random_faults_and_kills(
    tmp_path_factory: pytest.TempPathFactory, state_url: str | None
) -> None:
    """On both backends of the state: the same store and transition table."""
    _FACTORY[:] = [tmp_path_factory]
    _STATE_URL[:] = [state_url]
    BatchMachine.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=6,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    BatchMachine.TestCase().runTest()
