"""The simulated service's state and rules, independent of HTTP.

`Simulator` answers createTask / recordInfo / credit / download-url as `Reply` values
and file GETs as `FileServe` values; the Starlette layer (`_app.py`) only moves bytes.
All time comes from the injected clock and all randomness from `unit(seed, ...)`, so a
run is reproducible.

createTask checks, in order: rate limit (a real HTTP 429; nothing else happens), body shape
(400), model and input against the catalog (422), injected faults (500/455 and any
`create_errors` code: nothing created), credits (402), then creates and charges; a
`lost_reply` roll still creates and charges, and only the answer is withheld; a
`gateway_500/502_after_create` roll creates and charges, then answers a gateway's HTML
page; `duplicate_task_id` answers the previous task's id. recordInfo checks its rate
limit, then `poll_errors`, then the taskId (400/404); `garbled_success` may then spoil a
success answer's `resultJson`. Envelope quirks (`FaultProfile.quirks`) change only what
is sent: the ledger records the real outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import hmac
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ._callbacks import CallbackSender
from ._clock import Clock
from ._config import SimConfig
from ._files import FILE_PATH, FileServe, FileStore
from ._ledger import EventKind, Ledger, LedgerEvent
from ._limits import SlidingWindow
from ._reply import ERROR_MESSAGES, Reply, gateway_page, injected_error, rate_limited
from ._saved import Saved, TaskJournal, upload_event
from ._tasks import _WAITING_END, SimTask, output_shape, unit
from ._uploads import UploadRecord, UploadStore, input_problem

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog, ModelSpec

__all__ = ["INVALID_JSON", "Simulator"]

INVALID_JSON: Any = object()  # stands for a request body that is not JSON
_NO_CREDITS = ERROR_MESSAGES[402]  # injected and real refusals read the same
_NOT_FOUND = ERROR_MESSAGES[404]
#: What `unknown_state` reports instead of the documented running states.
_ODD_STATES = {"waiting": "pending", "queuing": "queued", "generating": "processing"}
#: createTask faults that create and charge the task, then spoil the answer.
_GATEWAY_STATUS = {"gateway_500": 500, "gateway_502": 502}


def _quirky_record(data: dict[str, Any], quirks: frozenset[str]) -> dict[str, Any] | None:
    """recordInfo `data` with the record-level `FaultProfile.quirks` applied."""
    if not quirks:
        return data
    state = data["state"]
    running = state not in ("success", "fail")
    if "null_data" in quirks and running:
        return None
    data = dict(data)
    if "null_result_json" in quirks and state != "success":
        data["resultJson"] = None
    if "unknown_state" in quirks and running:
        data["state"] = _ODD_STATES.get(state, "processing")
    if "extra_fields" in quirks:
        data["progress"] = 100 if not running else 42
        data["recordId"] = f"rec_{data['taskId'][:12]}"
        data["vendor"] = {"queue": "sim-a", "retries": 0}
    return data


class Simulator:
    """State of one simulated LiangXin account; `app.state.sim`."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Clock | None = None,
        catalog: Catalog | None = None,
        callback_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if catalog is None:
            from liangxin_batch.catalog._catalog import default_catalog

            catalog = default_catalog()
        config = config or SimConfig()
        self._journal: TaskJournal | None = None
        saved = Saved()
        if config.state_path is not None:
            self._journal = TaskJournal(config.state_path)
            saved = self._journal.load()
            if saved.id_salt is None or saved.credits is None:
                self._journal.append_account(config.id_salt, config.credits)
            else:  # the same account as before: its ids go on from where they were
                config = dataclasses.replace(config, id_salt=saved.id_salt, credits=saved.credits)
        self.config = config
        self.clock: Clock = clock or time.time
        self.catalog = catalog
        self.ledger = Ledger()
        self.sleep = sleep or asyncio.sleep  # slow downloads pace themselves with this
        self.files = FileStore(self.config)
        uploads_dir = config.uploads_dir
        if uploads_dir is None and config.state_path is not None:
            uploads_dir = config.state_path.parent / "uploads"
        self.uploads = UploadStore(
            uploads_dir,
            max_bytes=config.upload_max_bytes,
            lifetime=config.upload_lifetime_seconds,
        )
        self._lock = threading.RLock()  # uvicorn's thread and a test thread both call in
        cfg = self.config
        #: Each key's account, by its key: its name (the ledger's), limits and balance.
        self._names = {cfg.api_key: cfg.key_name, **{k: m.name for k, m in cfg.more_keys.items()}}
        self._balances = {
            cfg.key_name: cfg.credits,
            **{m.name: m.credits for m in cfg.more_keys.values()},
        }
        self._limits = {
            cfg.key_name: (cfg.create_limit, cfg.create_window, cfg.poll_limit, cfg.poll_window),
            **{
                m.name: (m.create_limit, m.create_window, m.poll_limit, m.poll_window)
                for m in cfg.more_keys.values()
            },
        }
        self._tasks: dict[str, SimTask] = {}
        self._unsettled: list[tuple[float, str]] = []  # (done_at, task_id) heap
        self._created = 0
        self._fault_rolls = 0
        self._poll_rolls = 0
        self._task_polls: dict[str, int] = {}  # task_id -> recordInfo answers given for it
        self._garbled_last: set[str] = set()  # tasks whose latest answer was garbled
        limits = self._limits.items()
        self._create_windows = {n: SlidingWindow(c, cw) for n, (c, cw, _, _) in limits}
        self._poll_windows = {n: SlidingWindow(p, pw) for n, (_, _, p, pw) in limits}
        self.callbacks = CallbackSender(
            clock=self.clock,
            wall_clock=clock is None,
            ledger=self.ledger,
            payload_for=self._callback_payload,
            config=self.config,
            client=callback_client,
        )
        self._restore(saved)

    # -- saved tasks (SimConfig.state_path) ------------------------------------------

    def _restore(self, saved: Saved) -> None:
        """Take over an earlier simulator's tasks: charged as they were, failed ones
        refunded when their end is passed (by `_settle`, as if it had run all along)."""
        for event in saved.events:  # its creates and uploads, in order
            self.ledger.record(event)
        for upload in saved.uploads:
            self.uploads.add(upload)
        self._balances[self.config.key_name] += saved.top_ups
        for task in saved.tasks:
            self._tasks[task.task_id] = task
            heapq.heappush(self._unsettled, (task.done_at, task.task_id))
            self._balances[task.owner] = self._balances.get(task.owner, 0) - task.price
        self._created = len(saved.tasks)
        self._saved_url = saved.base_url

    @property
    def saved_url(self) -> str | None:
        """Where the latest loaded task was created (None: none was loaded): listening
        there again keeps the result URLs a client holds working."""
        return self._saved_url

    def rebase(self, base_url: str) -> None:
        """This simulator listens on `base_url`: loaded tasks' result URLs point here now."""
        root = base_url if base_url.endswith("/") else base_url + "/"
        with self._lock:
            for task in self._tasks.values():
                task.base_url = root

    def resume_callbacks(self) -> None:
        """Schedule the callbacks of loaded tasks that are still running (one whose end
        passed while no simulator ran had its one callback lost, as with the service)."""
        now = self.clock()
        with self._lock:
            due = [t for t in self._tasks.values() if t.callback_url and t.done_at > now]
        for task in due:
            assert task.callback_url is not None
            self.callbacks.schedule(task.task_id, task.callback_url, task.done_at)

    # -- account -----------------------------------------------------------------

    def authorize(self, header: str | None) -> str | None:
        """The API key if `Authorization: Bearer <key>` matches, else None."""
        if not header or header[:7].lower() != "bearer ":
            return None
        key = header[7:].strip()
        # Constant-time: the comparison must not leak how much of a guess was right.
        found = None
        for known in self._names:
            if hmac.compare_digest(key.encode("utf-8"), known.encode("utf-8")):
                found = known
        return found

    def balance(self, account: str | None = None) -> int:
        """A key's balance, by its account's name (default: `api_key`'s)."""
        with self._lock:
            self._settle(self.clock())
            return self._balances[account or self.config.key_name]

    def top_up(self, credits: int, account: str | None = None) -> int:
        """Add credits (tests/demos: recover from 402) to a key's account, by name
        (default: `api_key`'s); returns the new balance."""
        if credits <= 0:
            raise ValueError("top up by a positive number of credits")
        name = account or self.config.key_name
        with self._lock:
            now = self.clock()
            self._balances[name] += credits
            self.ledger.record(LedgerEvent(kind="top_up", at=now, outcome="ok", credits=credits))
            if self._journal is not None and name == self.config.key_name:
                self._journal.append_top_up(credits, now)
            self._settle(now)
            return self._balances[name]

    def _settle(self, now: float) -> None:
        """Refund failed tasks whose end has passed (a failed task consumes 0 credits)."""
        while self._unsettled and self._unsettled[0][0] <= now:
            _, task_id = heapq.heappop(self._unsettled)
            task = self._tasks[task_id]
            if task.fails and not task.refunded:
                task.refunded = True
                self._balances[task.owner] += task.price

    # -- createTask ----------------------------------------------------------------

    def create(self, api_key: str, body: Any, base_url: str) -> Reply:
        with self._lock:
            now = self.clock()
            self._settle(now)
            owner = self._names[api_key]
            wait = self._create_windows[owner].try_admit(api_key, now)
            if wait is not None:
                self._log_create(now, "429", body, 429, account=owner)
                limit, window, _, _ = self._limits[owner]
                return rate_limited(wait, "createTask", limit, window)
            if body is INVALID_JSON or not isinstance(body, dict):
                self._log_create(now, "400", None, 200, account=owner)
                return Reply(400, "The request body must be a JSON object.")
            problem = self._check_body(body)
            if problem is not None:
                self._log_create(now, "422", body, 200, account=owner)
                return Reply(422, problem)
            # One roll per well-formed request, split between the create faults.
            faults = self.config.faults
            roll = unit(self.config.seed, "create", self._fault_rolls)
            self._fault_rolls += 1
            fault = faults.create_fault(roll)
            if isinstance(fault, int):  # create_500, create_455, create_errors
                reply = injected_error(fault, faults.error_style)
                self._log_create(now, str(fault), body, reply.http_status, account=owner)
                return reply
            lost = fault == "lost_reply"
            gateway = _GATEWAY_STATUS.get(fault) if isinstance(fault, str) else None
            spec = self.catalog.models[body["model"]]
            from liangxin_batch.catalog._catalog import estimate_credits

            price = math.ceil(estimate_credits(spec, body["input"]))
            if self._balances[owner] < price:
                self._log_create(now, "402", body, 200, credits=price, account=owner)
                return Reply(402, _NO_CREDITS)
            earlier = next(reversed(self._tasks), None)  # the task created just before
            netloc = urlsplit(base_url).netloc

            def fetch_problem(fetched_at: float) -> str | None:
                return input_problem(
                    spec,
                    body["input"],
                    self.uploads,
                    now=fetched_at,
                    netloc=netloc,
                    foreign=self.config.foreign_inputs,
                )

            task = self._new_task(spec, body, base_url, now, price, fetch_problem, owner)
            answered_id = task.task_id
            outcome: str
            status: int | None
            if lost:
                outcome, status = "lost_reply", None
            elif gateway is not None:
                outcome, status = f"gateway_{gateway}", gateway
            elif earlier is not None and (
                unit(self.config.seed, "duplicate", task.task_id) < faults.duplicate_task_id
            ):
                outcome, status, answered_id = "duplicate_task_id", 200, earlier
            else:
                outcome, status = "created", 200
            if self._journal is not None:  # before the answer: a client never knows more
                self._journal.append_task(task, outcome, status)
            self._log_create(
                now, outcome, body, status, task_id=task.task_id, credits=price, account=owner
            )
        if task.callback_url:
            self.callbacks.schedule(task.task_id, task.callback_url, task.done_at)
        if gateway is not None:
            return gateway_page(gateway)
        data = {"taskId": answered_id}
        if "extra_fields" in self.config.faults.quirks:
            data["recordId"] = f"rec_{task.task_id[:12]}"  # the documented variant
        return Reply(200, "success", data, drop=lost)

    def _check_body(self, body: dict[str, Any]) -> str | None:
        """The 422 message for a bad body, naming the field; None when it is fine."""
        from liangxin_batch.catalog._catalog import validate_input

        model = body.get("model")
        if not isinstance(model, str) or not model:
            return "model: required (a model id string)"
        if model not in self.catalog.models:
            # The service knows ids only; our aliases are a client-side convenience.
            known = self.catalog.get(model)
            if known is not None:
                return f"model: {model!r} is not a model id; use {known.id!r}"
            hint = self.catalog.suggest(model)
            tail = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
            return f"model: unknown model {model!r}{tail}"
        callback = body.get("callBackUrl")
        if callback is not None and not (
            isinstance(callback, str) and callback.startswith(("http://", "https://"))
        ):
            return f"callBackUrl: expected an http(s) URL, got {str(callback)[:60]!r}"
        values = body.get("input")
        if not isinstance(values, dict):
            return "input: required (a JSON object of model fields)"
        parts = []
        for p in validate_input(self.catalog.models[model], values):
            text = f"input.{p.field}: expected {p.expected}, got {p.got}"
            parts.append(f"{text} ({p.suggestion})" if p.suggestion else text)
        return "; ".join(parts) or None

    def _new_task(
        self,
        spec: ModelSpec,
        body: dict[str, Any],
        base_url: str,
        now: float,
        price: int,
        fetch_problem: Callable[[float], str | None] | None = None,
        owner: str | None = None,
    ) -> SimTask:
        """A new task, its whole life fixed now. `fetch_problem(t)`: why its inputs
        could not be fetched at time t (None: they could)."""
        seed = self.config.seed
        salt = f"{self.config.id_salt}|" if self.config.id_salt else ""
        task_id = hashlib.sha256(f"task|{seed}|{salt}{self._created}".encode()).hexdigest()[:32]
        self._created += 1
        values: dict[str, Any] = body["input"]
        outputs, ext, aspect = output_shape(spec, values)
        draw = unit(seed, "jitter", task_id)
        ranges = self.config.latency_range
        span = ranges.get(spec.id) or ranges.get("*")
        if span is not None:
            seconds = span[0] + (span[1] - span[0]) * draw
        else:
            seconds = spec.typical_seconds * (0.7 + 0.6 * draw)
        drift = self.config.latency_drift
        if drift is not None and self._created > drift[0]:
            seconds *= drift[1]
        # The service fetches the inputs as the task leaves its waiting phase, not at
        # create: an upload that expires in between fails the task (what the client's
        # --upload-margin is for). The uploads are looked at as they stand now; one
        # renewed under the same name before the fetch is not seen (stricter than the
        # service, which would serve the new file).
        fetched_at = now + seconds * self.config.latency_scale * _WAITING_END
        problem = fetch_problem(fetched_at) if fetch_problem is not None else None
        if problem is not None:  # an input it cannot fetch: it fails as it leaves waiting
            seconds *= _WAITING_END
        task = SimTask(
            task_id=task_id,
            model=spec.id,
            kind=spec.kind,
            body=body,
            input=values,
            callback_url=body.get("callBackUrl") or None,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            created_at=now,
            duration=seconds * self.config.latency_scale,
            fails=unit(seed, "fail", task_id) < self.config.faults.fail,
            price=price,
            outputs=outputs,
            ext=ext,
            aspect_ratio=aspect,
            owner=owner or self.config.key_name,
        )
        if problem is not None:
            task.fails, task.fail_code, task.fail_msg = True, "400", problem
        self._tasks[task_id] = task
        heapq.heappush(self._unsettled, (task.done_at, task_id))
        self._balances[task.owner] -= price  # reserved now: kept on success, refunded on fail
        return task

    def _log_create(
        self,
        now: float,
        outcome: str,
        body: Any,
        status: int | None,
        *,
        task_id: str | None = None,
        credits: int | None = None,
        account: str | None = None,
    ) -> None:
        body = body if isinstance(body, dict) else {}
        model, values = body.get("model"), body.get("input")
        event = LedgerEvent(
            kind="create",
            at=now,
            outcome=outcome,
            task_id=task_id,
            model=model if isinstance(model, str) else None,
            input=dict(values) if isinstance(values, dict) else None,
            http_status=status,
            credits=credits,
            account=account,
        )
        self.ledger.record(event)

    # -- recordInfo / credit / download-url ---------------------------------------

    def record_info(self, api_key: str, task_id: str | None) -> Reply:
        with self._lock:
            now = self.clock()
            self._settle(now)
            owner = self._names[api_key]
            wait = self._poll_windows[owner].try_admit(api_key, now)
            if wait is not None:
                self._log(now, "poll", "429", task_id, 429, account=owner)
                _, _, limit, window = self._limits[owner]
                return rate_limited(wait, "recordInfo", limit, window)
            faults = self.config.faults
            if faults.poll_errors:
                code = faults.poll_fault(unit(self.config.seed, "poll", self._poll_rolls))
                self._poll_rolls += 1
                if code is not None:
                    reply = injected_error(code, faults.error_style)
                    self._log(now, "poll", str(code), task_id, reply.http_status)
                    return reply
            if not task_id:
                self._log(now, "poll", "400", None)
                return Reply(400, "taskId is required")
            task = self._tasks.get(task_id)
            if task is not None and task.owner != owner:
                task = None  # another key's task: as the service, "not found"
            if task is None or now - task.created_at < faults.poll_404_seconds:
                self._log(now, "poll", "404", task_id, account=owner)
                return Reply(404, _NOT_FOUND)
            data = task.record(now)
            outcome = data["state"]  # the real state, quirks or not
            if self._garble(task_id, data):
                outcome += " (garbled)"
            self._log(now, "poll", outcome, task_id, account=owner)
            return Reply(200, "success", _quirky_record(data, faults.quirks))

    def _garble(self, task_id: str, data: dict[str, Any]) -> bool:
        """Apply `garbled_success` to a recordInfo `data` in place; True if it did.

        Drawn per (task, n-th recordInfo answer of that task); never twice in a row.
        """
        number = self._task_polls.get(task_id, 0)
        self._task_polls[task_id] = number + 1
        seed, share = self.config.seed, self.config.faults.garbled_success
        if (
            data["state"] != "success"
            or task_id in self._garbled_last
            or not unit(seed, "garble", task_id, number) < share
        ):
            self._garbled_last.discard(task_id)
            return False
        self._garbled_last.add(task_id)
        if unit(seed, "garble-kind", task_id, number) < 0.5:
            data["resultJson"] = "{not json"
        else:
            data["resultJson"] = json.dumps({"resultUrls": []})
        return True

    def _log(
        self,
        now: float,
        kind: EventKind,
        outcome: str,
        task_id: str | None,
        status: int = 200,
        *,
        account: str | None = None,
    ) -> None:
        self.ledger.record(
            LedgerEvent(
                kind=kind,
                at=now,
                outcome=outcome,
                task_id=task_id,
                http_status=status,
                account=account,
            )
        )

    def credit(self, api_key: str | None = None) -> Reply:
        return Reply(200, "success", self.balance(self._names.get(api_key or "")))

    def download_url(self, body: Any, api_key: str | None = None) -> Reply:
        """Trade a result URL of ours for a signed one valid for 20 minutes."""
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            return Reply(422, "url: required (a file URL generated by this service)")
        parts = urlsplit(url)
        match = FILE_PATH.match(parts.path)
        with self._lock:
            now = self.clock()
            task = self._tasks.get(match.group(1)) if match else None
            if task is not None and api_key is not None and task.owner != self._names[api_key]:
                task = None  # another key's file: not one it may ask for
            if match is None or task is None or urlsplit(task.base_url).netloc != parts.netloc:
                self._log(now, "download_url", "422", None)
                return Reply(422, "url: only file URLs generated by this service are accepted")
            index = int(match.group(2))
            if task.state_at(now) != "success" or index >= task.outputs or match[3] != task.ext:
                self._log(now, "download_url", "404", task.task_id)
                return Reply(404, "url: no such file")
            self._log(now, "download_url", "ok", task.task_id)
            return Reply(200, "success", self.files.signed_url(task, index, now))

    # -- uploads (the upload host: `_upload_app.py`, `_uploads.py`) ---------------------

    def record_upload(self, record: UploadRecord) -> None:
        """A stored upload: journalled (a saved simulator), named, ledgered."""
        with self._lock:
            if self._journal is not None:
                self._journal.append_upload(record)
            self.uploads.add(record)
            self.ledger.record(upload_event(record))

    def log_upload(self, endpoint: str, status: int) -> None:
        """A refused upload request (401, 400, 413)."""
        event = LedgerEvent(
            kind="upload",
            at=self.clock(),
            outcome=str(status),
            http_status=status,
            endpoint=endpoint,
        )
        self.ledger.record(event)

    def upload_base_url(self, base_url: str) -> str:
        """The upload host's base URL on the server whose API base URL is `base_url`."""
        return self.config.upload_base_url(base_url)

    # -- files -----------------------------------------------------------------------

    def serve_file(self, task_id: str, name: str, query: str) -> FileServe:
        """Decide how to answer GET /files/{task_id}/{name}; ledgers the outcome."""
        path = f"files/{task_id}/{name}"
        now = self.clock()
        with self._lock:
            task = self._tasks.get(task_id)
        serve = self.files.decide(task, path, query, now)
        ok = serve.status == 200
        sent = serve.sent
        if not ok:
            outcome = "error"
        elif serve.cut_at is not None:
            outcome = "broken"
        else:
            outcome = "short" if serve.short_by else "complete"
        event = LedgerEvent(
            kind="file",
            at=now,
            outcome=outcome,
            task_id=task_id,
            path=path,
            http_status=serve.status,
            sha256=hashlib.sha256(serve.content).hexdigest() if ok else None,
            size=len(serve.content) if ok else None,
            bytes_sent=sent if ok else 0,
            complete=sent == len(serve.content) if ok else None,
        )
        self.ledger.record(event)
        return serve

    def file_bytes(self, task_id: str, index: int) -> bytes:
        """The exact bytes of result file `index` of a task (deterministic; cached)."""
        return self.files.content(self.task(task_id), index)

    # -- inspection & lifecycle ---------------------------------------------------

    def task(self, task_id: str) -> SimTask:
        with self._lock:
            return self._tasks[task_id]

    def task_ids(self) -> list[str]:
        with self._lock:
            return list(self._tasks)

    def _callback_payload(self, task_id: str, now: float) -> dict[str, Any]:
        with self._lock:
            self._settle(now)
            return self._tasks[task_id].callback_payload(now)

    async def run_due_callbacks(self) -> int:
        """Send callbacks that are due now (tests with a ManualClock); returns how many."""
        return await self.callbacks.run_due()

    async def aclose(self) -> None:
        """Cancel pending callbacks and close the callback client we own."""
        await self.callbacks.aclose()
        with self._lock:
            if self._journal is not None:
                self._journal.close()
        # The uploads' temporary folder (if any) goes with the simulator object: an app
        # may be served again after a shutdown.
