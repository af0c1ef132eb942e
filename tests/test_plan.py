"""The plan: counts, credits, currency, shortest duration, output paths, rate parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.errors import ConfigError, ManifestError
from liangxin_batch.manifest._manifest import iter_jobs, validate_manifest
from liangxin_batch.outputs._plan import (
    check_budget,
    format_duration,
    format_plan,
    make_plan,
    parse_rate,
)
from tests.manifest_support import CATALOG, write


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20/10s", (20, 10.0)),
        ("5/s", (5, 1.0)),
        ("10/1s", (10, 1.0)),
        ("100/min", (100, 60.0)),
        ("30/2m", (30, 120.0)),
        ("1000/h", (1000, 3600.0)),
        ("20/10", (20, 10.0)),
        (" 20 / 10 s ", (20, 10.0)),
        ("3/0.5s", (3, 0.5)),
    ],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["", "20", "abc", "0/s", "20/0s", "-1/s", "20/10x", "20/", "1.5/s"]
)
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="20/10s"):
        parse_rate(text)


def zimage_csv(tmp: Path, n: int, name: str = "z.csv") -> Path:
    rows = "".join(f"z-image,prompt {i},1:1\n" for i in range(n))
    return write(tmp, name, "model,prompt,aspect_ratio\n" + rows)


def test_rate_bound(tmp_path: Path) -> None:
    report = validate_manifest(zimage_csv(tmp_path, 45), catalog=CATALOG)
    plan = make_plan(report, CATALOG, create_limit=20, create_window=10.0, max_in_flight=100)
    # 45 tasks at 20 per 10 s: batches at t=0, 10, 20; the last needs z-image's 5 s.
    assert plan.submit_seconds == 20.0
    assert plan.rate_seconds == 25.0
    assert plan.concurrency_seconds == pytest.approx(45 * 5 / 100)
    assert (plan.shortest_seconds, plan.bound) == (25.0, "create rate")
    assert plan.jobs == 45 and plan.slowest_model == "z-image"


def test_concurrency_bound(tmp_path: Path) -> None:
    report = validate_manifest(zimage_csv(tmp_path, 45), catalog=CATALOG)
    plan = make_plan(report, CATALOG, create_limit=20, create_window=10.0, max_in_flight=1)
    assert (plan.shortest_seconds, plan.bound) == (225.0, "concurrency")


def test_a_single_batch_needs_only_the_latency(tmp_path: Path) -> None:
    plan = make_plan(validate_manifest(zimage_csv(tmp_path, 20), catalog=CATALOG), CATALOG)
    assert plan.submit_seconds == 0.0 and plan.shortest_seconds == 5.0


def test_credits_currency_and_outputs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
jobs:
  - {id: a, model: nano-banana-pro, prompt: p, resolution: 4K, output_format: jpg}
  - {id: b, model: nano-banana-pro, prompt: q}
  - {id: v, model: kling-3.0/video, prompt: r, mode: std, duration: "3"}
""",
    )
    plan = make_plan(validate_manifest(path, catalog=CATALOG), CATALOG, out_dir=tmp_path / "out")
    by_model = {m.model: m for m in plan.models}
    assert by_model["nano-banana-pro"].jobs == 2
    assert by_model["nano-banana-pro"].credits == pytest.approx(24 + 18)
    assert by_model["kling-3.0/video"].credits == pytest.approx(14 * 3)
    assert plan.credits == pytest.approx(84)
    assert plan.usd == pytest.approx(84 * 0.005)
    assert (
        by_model["nano-banana-pro"].example_output
        == f"{tmp_path}/out/outputs/nano-banana-pro/a.jpg"
    )
    assert by_model["kling-3.0/video"].example_output.endswith("/outputs/kling-3.0-video/v.mp4")
    assert plan.shortest_seconds == 120.0  # kling's typical latency


def test_no_currency_without_a_rate(tmp_path: Path) -> None:
    catalog = Catalog(CATALOG.models, credit_usd=None)
    plan = make_plan(validate_manifest(zimage_csv(tmp_path, 3), catalog=catalog), catalog)
    assert plan.usd is None and plan.models[0].usd is None
    assert "$" not in format_plan(plan)


def test_a_plan_from_a_job_stream_matches_the_report(tmp_path: Path) -> None:
    path = zimage_csv(tmp_path, 30)
    from_report = make_plan(validate_manifest(path, catalog=CATALOG), CATALOG)
    from_stream = make_plan(iter_jobs(path, catalog=CATALOG), CATALOG, manifest=str(path))
    assert from_stream == from_report


def test_no_plan_for_a_manifest_with_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", "model,prompt,aspect_ratio\nz-image,p,9:9\n")
    with pytest.raises(ManifestError):
        make_plan(validate_manifest(path, catalog=CATALOG), CATALOG)
    with pytest.raises(ManifestError, match=r"bad\.csv:2"):
        make_plan(iter_jobs(path, catalog=CATALOG), CATALOG)


def test_bad_limits() -> None:
    with pytest.raises(ConfigError):
        make_plan([], CATALOG, max_in_flight=0)
    with pytest.raises(ConfigError):
        make_plan([], CATALOG, create_limit=0)


def test_format_plan(tmp_path: Path) -> None:
    plan = make_plan(validate_manifest(zimage_csv(tmp_path, 45), catalog=CATALOG), CATALOG)
    text = format_plan(plan)
    assert text.splitlines()[0] == f"Plan for {tmp_path / 'z.csv'}: 45 jobs"
    assert "z-image" in text and "45.0  (~$0.23)" in text  # 0.8 a task, billed as 1
    assert "Shortest possible duration: 25s (set by the create rate)" in text
    assert "create rate 20/10s: submitting takes 20s" in text
    assert "out/outputs/z-image/z-image-" in text


def test_check_budget(tmp_path: Path) -> None:
    plan = make_plan(validate_manifest(zimage_csv(tmp_path, 10), catalog=CATALOG), CATALOG)
    check_budget(plan, None)
    check_budget(plan, 10.0)  # ten tasks of 0.8 credits, each billed as 1
    with pytest.raises(ConfigError, match=r"10\.0 credits, more than --max-credits 9\.9"):
        check_budget(plan, 9.9)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.2, "1s"), (59, "59s"), (60, "1m 00s"), (3725, "1h 02m"), (90061, "1d 01h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_plan_set_by_the_slowest_model_names_it(tmp_path: Path) -> None:
    """Five jobs go out at once; what sets the duration is z-image's latency, not the rate
    (issue 15: the plan said "set by the create rate")."""
    report = validate_manifest(zimage_csv(tmp_path, 5), catalog=CATALOG)
    plan = make_plan(report, CATALOG, create_limit=20, create_window=10.0, max_in_flight=100)
    assert plan.bound == "latency of z-image"
    assert "(set by the latency of z-image" in format_plan(plan)


def test_the_estimate_rounds_each_task_up_as_the_service_bills(tmp_path: Path) -> None:
    """Seedream 4.5 lists 6.5 credits; the service bills whole credits per task, rounded
    up, so the plan says 7 a task and says why (issue 15: plan 65.4, the demo billed 67)."""
    from liangxin_batch.catalog._catalog import estimate_credits

    spec = CATALOG.get("seedream/4.5-text-to-image")
    assert spec is not None and spec.price.credits == 6.5
    assert estimate_credits(spec, {}) == 7
    path = write(
        tmp_path,
        "s.csv",
        "model,prompt,aspect_ratio,quality\n"
        + "".join(f"seedream/4.5-text-to-image,p{i},1:1,basic\n" for i in range(3)),
    )
    plan = make_plan(validate_manifest(path, catalog=CATALOG), CATALOG)
    assert plan.credits == 21
    assert "rounded up to whole credits" in format_plan(plan)


def test_a_catalog_can_say_its_service_does_not_round(tmp_path: Path) -> None:
    from liangxin_batch.catalog._catalog import estimate_credits, load_catalog

    extra = tmp_path / "exact.yaml"
    extra.write_text("credits_round_up: false\n")
    spec = load_catalog([extra]).get("seedream/4.5-text-to-image")
    assert spec is not None and estimate_credits(spec, {}) == 6.5
