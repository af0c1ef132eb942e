"""A simulator's saved tasks (`SimConfig.state_path`): a second simulator on the same file
carries on with the first one's tasks where the clock puts them. Over loopback sockets,
on a ManualClock: "time passing while nothing ran" is a clock jump, not a wait."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from liangxin_batch.errors import ConfigError
from liangxin_batch.simulator import (
    SAVED_FILE,
    FaultProfile,
    ManualClock,
    SimConfig,
    create_app,
    local_simulator,
    saved_ledger,
    serve_in_thread,
)
from tests.sim_support import AUTH, CREATE, MODEL, RECORD, sim_of


def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=AUTH, timeout=10)


def _create(c: httpx.Client, prompt: str) -> str:
    body = c.post(CREATE, json={"model": MODEL, "input": {"prompt": prompt}}).json()
    assert body["code"] == 200, body
    task_id: str = body["data"]["taskId"]
    return task_id


def _record(c: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = c.get(RECORD, params={"taskId": task_id}).json()
    assert body["code"] == 200, body
    data: dict[str, Any] = body["data"]
    return data


def _credit(c: httpx.Client) -> int:
    balance: int = c.get("/api/v1/chat/credit").json()["data"]
    return balance


@pytest.mark.slow
def test_a_task_that_ended_while_nothing_ran_is_finished_in_the_next_session(
    tmp_path: Path,
) -> None:
    path = tmp_path / SAVED_FILE
    clock = ManualClock()
    first = create_app(SimConfig(id_salt="one", state_path=path, credits=100), clock=clock)
    with serve_in_thread(first) as url, _client(url) as c:
        old = [_create(c, "a heron"), _create(c, "a crane")]
        assert _record(c, old[0])["state"] == "waiting"
        ends = [sim_of(first).task(t).done_at for t in old]
        spent = 100 - _credit(c)

    clock.set(max(ends) + 60)  # both ended a minute ago, while no simulator ran
    second = create_app(SimConfig(id_salt="two", state_path=path, credits=100), clock=clock)
    with serve_in_thread(second) as url, _client(url) as c:
        sim_of(second).rebase(url)  # what local_simulator does once it listens
        for task_id in old:
            data = _record(c, task_id)
            assert data["state"] == "success"
            assert json.loads(data["resultJson"])["resultUrls"][0].startswith(url + "/files/")
            assert c.get(json.loads(data["resultJson"])["resultUrls"][0]).status_code == 200
        assert _credit(c) == 100 - spent  # charged once, in the first session
        new = _create(c, "a stork")
        assert new not in old  # ids go on from the saved ones (the first salt is kept)
        assert sim_of(second).config.id_salt == "one"
    creates = saved_ledger(tmp_path).creates()  # path is tmp_path / SAVED_FILE
    assert [e.task_id for e in creates] == [*old, new]
    assert {e.model for e in creates} == {MODEL}


@pytest.mark.slow
def test_a_failed_task_is_refunded_when_its_end_passed_between_sessions(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    clock = ManualClock()
    faults = FaultProfile(fail=1.0)
    first = create_app(SimConfig(state_path=path, credits=50, faults=faults), clock=clock)
    with serve_in_thread(first) as url, _client(url) as c:
        task_id = _create(c, "a failing fox")
        assert _credit(c) < 50
        end = sim_of(first).task(task_id).done_at
    clock.set(end + 1)
    second = create_app(SimConfig(state_path=path, credits=50, faults=faults), clock=clock)
    with serve_in_thread(second) as url, _client(url) as c:
        assert _record(c, task_id)["state"] == "fail"
        assert _credit(c) == 50


@pytest.mark.slow
def test_local_simulator_keeps_its_port_and_moves_when_it_is_taken(tmp_path: Path) -> None:
    with local_simulator(latency_scale=0, out_dir=tmp_path) as (url, _), _client(url) as c:
        task_id = _create(c, "a lantern")
    with local_simulator(latency_scale=0, out_dir=tmp_path) as (again, _), _client(again) as c:
        assert again == url  # result URLs a client holds from last time still work
        assert _record(c, task_id)["state"] == "success"
    port = urlsplit(url).port
    assert port is not None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        with local_simulator(latency_scale=0, out_dir=tmp_path) as (moved, _), _client(moved) as c:
            assert moved != url
            urls = json.loads(_record(c, task_id)["resultJson"])["resultUrls"]
            assert all(u.startswith(moved + "/") for u in urls)
    assert [e.task_id for e in saved_ledger(tmp_path).creates()] == [task_id]


def test_a_torn_last_line_is_dropped_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    config = SimConfig(id_salt="s", state_path=path)
    first = sim_of(create_app(config, clock=ManualClock()))  # writes the account line
    asyncio.run(first.aclose())  # gone, as a simulator is after a power cut
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"record":"task","task_id":"ab')  # a power cut mid-line
    sim = sim_of(create_app(config, clock=ManualClock()))
    assert sim.task_ids() == []
    assert path.read_bytes() == whole  # cut off: the next line starts on a line of its own
    path.write_bytes(b'{"record":"task"}\n' + whole)
    with pytest.raises(ConfigError, match=r"tasks.jsonl:1: .*damaged"):
        create_app(config, clock=ManualClock())


def test_nothing_saved_reads_as_an_empty_ledger(tmp_path: Path) -> None:
    assert saved_ledger(tmp_path).creates() == []
