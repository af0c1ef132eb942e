"""One simulated task: its timeline, its files and its recordInfo/callback view.

Nothing here reads a clock: every question takes `now`. The whole life of a task
(state changes, success or fail, completion time) is fixed when it is created, so
polling, callbacks and downloads all agree without any background work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import ModelSpec

__all__ = ["SimTask", "envelope", "output_shape", "result_path", "unit"]

# Share of the total latency spent in each non-terminal state.
_WAITING_END = 0.10
_QUEUING_END = 0.25


def unit(seed: int, *parts: object) -> float:
    """A uniform draw in [0, 1) fixed by the seed and the parts (no shared RNG state)."""
    text = "|".join([str(seed), *map(str, parts)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def envelope(code: int, msg: str, data: Any = None) -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": data}


def _ms(t: float) -> int:
    return round(t * 1000)


def result_path(task_id: str, index: int, ext: str) -> str:
    return f"files/{task_id}/{index}.{ext}"


@dataclass(slots=True)
class SimTask:
    """A created task. `price` was charged at create; a failed task gets it back."""

    task_id: str
    model: str
    kind: str  # "image" | "video"
    body: dict[str, Any]  # the whole createTask body, for `param`
    input: dict[str, Any]
    callback_url: str | None
    base_url: str  # where the create request arrived: result URLs point back here
    created_at: float
    duration: float  # seconds from create to the terminal state
    fails: bool
    price: int
    outputs: int
    ext: str  # "png" | "jpg" | "mp4"
    aspect_ratio: str | None
    refunded: bool = field(default=False)
    #: The name of the key that created it: only that key sees it.
    owner: str = "default"
    #: A failed task's failCode and failMsg: an injected generation failure by default;
    #: "400" and the fetch message for inputs the service could not use (`_uploads`).
    fail_code: str = "500"
    fail_msg: str = "Internal error during generation (simulated)"

    @property
    def done_at(self) -> float:
        return self.created_at + self.duration

    def _mark(self, share: float) -> float:
        """The time `share` of the way through; `done_at` is _mark(1.0) exactly."""
        return self.created_at + self.duration * share

    def state_at(self, now: float) -> str:
        # Compare absolute times (not now - created_at against a duration): float
        # rounding then agrees with done_at, which callbacks and tests use.
        if now >= self.done_at:
            return "fail" if self.fails else "success"
        if now >= self._mark(_QUEUING_END):
            return "generating"
        if now >= self._mark(_WAITING_END):
            return "queuing"
        return "waiting"

    def _changed_at(self, now: float) -> float:
        """When the state seen at `now` began: that is the task's updateTime."""
        for mark in (1.0, _QUEUING_END, _WAITING_END):
            if now >= self._mark(mark):
                return self._mark(mark)
        return self.created_at

    @property
    def prompt(self) -> str:
        prompt = self.input.get("prompt")
        if isinstance(prompt, str) and prompt:
            return prompt
        shots = self.input.get("multi_prompt")
        if isinstance(shots, list) and shots and isinstance(shots[0], dict):
            return str(shots[0].get("prompt", ""))
        return ""

    def result_urls(self) -> list[str]:
        return [self.base_url + result_path(self.task_id, n, self.ext) for n in range(self.outputs)]

    def record(self, now: float) -> dict[str, Any]:
        """The recordInfo `data` object as the service shows it at `now`."""
        state = self.state_at(now)
        terminal = state in ("success", "fail")
        return {
            "taskId": self.task_id,
            "model": self.model,
            "state": state,
            "param": json.dumps(self.body, ensure_ascii=False),
            "resultJson": (
                json.dumps({"resultUrls": self.result_urls()}) if state == "success" else ""
            ),
            "failCode": self.fail_code if state == "fail" else "",
            "failMsg": self.fail_msg if state == "fail" else "",
            "costTime": _ms(self.duration) if terminal else None,
            "createTime": _ms(self.created_at),
            "updateTime": _ms(self._changed_at(now)),
            "completeTime": _ms(self.done_at) if terminal else None,
            "creditsConsumed": self.price if state == "success" else 0,
        }

    def callback_payload(self, now: float) -> dict[str, Any]:
        """The callback body: the recordInfo envelope with the callback's code and msg."""
        data = self.record(max(now, self.done_at))
        if data["state"] == "success":
            return envelope(200, "Playground task completed successfully.", data)
        # The callback specs show a null resultJson on failure (recordInfo shows "").
        data["resultJson"] = None
        return envelope(501, "Playground task failed.", data)


def output_shape(spec: ModelSpec, values: Mapping[str, Any]) -> tuple[int, str, str | None]:
    """(file count, extension, aspect ratio) of a task's results, from its input."""
    count = spec.outputs_per_task
    try:  # imagen4-fast's num_images is a string enum ("1".."4")
        count = int(values.get("num_images", count))
    except (TypeError, ValueError):
        pass
    if not 1 <= count <= 10:
        count = spec.outputs_per_task
    if spec.kind == "video":
        ext = "mp4"
    else:
        fmt = values.get("output_format", _field_default(spec, "output_format"))
        # Models that omit output_format still honour their documented default (jpg/png).
        ext = "jpg" if str(fmt).lower() in ("jpeg", "jpg") else "png"
    aspect = None
    for name in ("aspect_ratio", "image_size"):  # image_size: nano-banana's old name
        value = values.get(name)
        if isinstance(value, str):
            aspect = value
            break
    else:
        default = _field_default(spec, "aspect_ratio")
        aspect = default if isinstance(default, str) else None
    return count, ext, aspect


def _field_default(spec: ModelSpec, name: str) -> Any:
    spec_field = spec.fields.get(name)
    return spec_field.default if spec_field is not None else None
