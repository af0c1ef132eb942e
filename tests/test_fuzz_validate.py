"""Fuzz `validate` with hostile input: random bytes, random YAML with aliases, random CSV
dialects. Whatever comes in: exit 0 or 2, never a traceback, bounded memory, no request."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liangxin_batch.cli import main

#: What one validate of these small inputs may allocate at its peak.
PEAK_BYTES = 64 * 1024 * 1024

pytestmark = pytest.mark.slow  # about a minute and a half: tracemalloc slows every allocation


@pytest.fixture(autouse=True)
def no_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("validate sent a request")

    monkeypatch.setattr(httpx.Client, "send", refuse)
    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)
    yield


def validate(path: Path) -> None:
    tracemalloc.start()
    try:
        result = CliRunner().invoke(main, ["validate", str(path)])
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert peak < PEAK_BYTES, f"{peak:,} bytes at the peak"


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(data=st.binary(max_size=4000), suffix=st.sampled_from([".csv", ".tsv", ".yaml", ".jsonl"]))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"m{suffix}"
    path.write_bytes(data)
    validate(path)


scalars = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["16:9", "00042", "no", "z-image", "1:1", "~", "", "-1", "1e9"]),
)


@st.composite
def alias_yaml(draw: st.DrawFn) -> str:
    """Documents whose anchors are reused at random, up to bomb-like fan-outs."""
    lines = [f"a0: &a0 [{', '.join(repr(draw(scalars)) for _ in range(3))}]"]
    levels = draw(st.integers(1, 12))
    for i in range(1, levels + 1):
        width = draw(st.integers(1, 12))
        refs = ", ".join(f"*a{draw(st.integers(0, i - 1))}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]")
    fields = draw(st.sampled_from(["prompt", "note", "aspect_ratio", "image_input"]))
    lines.append("jobs:")
    lines.append(
        f"  - {{model: {draw(st.sampled_from(['z-image', 'nano-banana-pro']))}, "
        f"prompt: p, {fields}: *a{draw(st.integers(0, levels))}}}"
    )
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=alias_yaml())
def test_random_yaml_with_aliases(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "m.yaml"
    path.write_text(text)
    validate(path)


@FUZZ
@given(
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    rows=st.lists(st.lists(scalars, min_size=1, max_size=5), max_size=8),
    header=st.lists(
        st.sampled_from(["model", "prompt", "aspect_ratio", "id", "seed", "x"]), max_size=5
    ),
)
def test_random_csv_dialects(
    tmp_path_factory: pytest.TempPathFactory,
    delimiter: str,
    quoting: Literal[0, 1, 2],  # csv.QUOTE_MINIMAL, QUOTE_ALL, QUOTE_NONNUMERIC
    rows: list[list[str]],
    header: list[str],
) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, quoting=quoting)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path_factory.mktemp("fuzz") / ("m.tsv" if delimiter == "\t" else "m.csv")
    path.write_text(buf.getvalue())
    validate(path)
