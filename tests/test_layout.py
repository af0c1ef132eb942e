"""Output paths: the default layout, templates, slugs, refusals and uniqueness."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangxin_batch.core._provenance import sidecar_path, stem_key
from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._layout import Layout, PathClaims, extension_for, slugify

T0 = 1_750_000_000.0  # 2025-06-15 UTC
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def path(
    layout: Layout, job_id: str = "j1", index: int = 1, ext: str = ".png", **columns: str
) -> str:
    return layout.relative_path(
        job_id=job_id,
        model="google/nano-banana",
        task_id="t" + job_id,
        index=index,
        ext=ext,
        completed_at=T0,
        columns=columns,
    )


def test_default_layout_and_several_files() -> None:
    layout = Layout.parse()
    assert path(layout) == "outputs/google-nano-banana/j1.png"
    # The first file keeps the plain name; the others are numbered from 2.
    assert path(layout, index=2) == "outputs/google-nano-banana/j1_2.png"
    assert path(layout, index=10) == "outputs/google-nano-banana/j1_10.png"


def test_template_fields_and_columns() -> None:
    layout = Layout.parse("{date}/{subject}/{job_id}-{task_id}")
    assert path(layout, subject="Red Fox") == "outputs/2025-06-15/Red-Fox/j1-tj1.png"
    # A template that numbers files itself gets no extra suffix.
    numbered = Layout.parse("{job_id}/{index}")
    assert path(numbered, index=1) == "outputs/j1/1.png"
    assert path(numbered, index=3) == "outputs/j1/3.png"


def test_builtin_fields_win_over_manifest_columns() -> None:
    layout = Layout.parse("{model}/{job_id}")
    assert path(layout, model="nano") == "outputs/google-nano-banana/j1.png"


def test_template_without_an_id_gets_the_job_id() -> None:
    layout = Layout.parse("{subject}")
    assert path(layout, "a", subject="cat") == "outputs/cat-a.png"
    assert path(layout, "b", subject="cat") == "outputs/cat-b.png"
    assert path(layout, "b", index=2, subject="cat") == "outputs/cat-b_2.png"


def test_missing_column_value_is_never_empty() -> None:
    assert path(Layout.parse("{subject}/{job_id}")) == "outputs/none/j1.png"


@pytest.mark.parametrize(
    "template",
    [
        "",
        "   ",
        "../{job_id}",
        "{model}/../{job_id}",
        "{model}/./{job_id}",
        "/abs/{job_id}",
        "/{job_id}",
        "C:/x/{job_id}",
        "C:{job_id}",
        "a\\{job_id}",
        "\\\\server\\share\\{job_id}",
        "a//{job_id}",
        "{job_id}/",
        ".hidden/{job_id}",
        "..{job_id}",
        "a\0{job_id}",
        "{job_id} x",
        "ｆｏｏ/{job_id}",  # fullwidth letters
        "café/{job_id}",
        "{job_id}\u202e",  # right-to-left override
        "{job_id!r}",
        "{job_id:>5}",
        "{0}",
        "{}",
        "{a.b}",
        "{a[0]}",
        "{job_id",
        "job_id}",
        "x" * 300,
    ],
)
def test_unsafe_templates_are_refused(template: str) -> None:
    with pytest.raises(ConfigError, match="--layout"):
        Layout.parse(template)


def test_unknown_column_is_named_with_a_suggestion() -> None:
    layout = Layout.parse("{subjct}/{job_id}")
    with pytest.raises(ConfigError, match=r"\{subjct\} \(did you mean \{subject\}\?\)"):
        layout.check_columns(["prompt", "subject"])
    layout.check_columns(["subjct"])  # known: no error
    Layout.parse("{model}/{date}/{job_id}").check_columns([])  # built-ins need no column


@pytest.mark.parametrize(
    ("value", "slug"),
    [
        ("Red Fox", "Red-Fox"),
        ("café au lait", "cafe-au-lait"),
        ("ｆｏｏ１", "foo1"),  # NFKC: fullwidth -> ASCII
        ("ﬁle", "file"),  # NFKC: ligature
        ("../../etc/passwd", "etc-passwd"),
        ("..", "none"),
        ("", "none"),
        ("   ", "none"),
        ("猫", "none"),
        ("a\0b", "a-b"),
        ("a/b\\c:d", "a-b-c-d"),
        (".env", "env"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("trailing.", "trailing"),
        ("x" * 200, "x" * 80),
    ],
)
def test_slugify(value: str, slug: str) -> None:
    assert slugify(value) == slug


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.text(), min_size=3, max_size=3), index=st.integers(1, 20))
def test_any_value_stays_inside_outputs(values: list[str], index: int) -> None:
    layout = Layout.parse("{a}/{b}-{c}/{job_id}")
    rel = layout.relative_path(
        job_id=values[0] or "j",
        model=values[1],
        task_id=None,
        index=index,
        ext=".png",
        completed_at=T0,
        columns=dict(zip("abc", values, strict=True)),
    )
    segments = rel.split("/")
    assert segments[0] == "outputs" and len(segments) == 4
    assert all(SAFE_SEGMENT.fullmatch(s) for s in segments), rel
    root = Path("/srv/out").resolve()
    assert (root / rel).resolve().is_relative_to(root / "outputs")


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.text(min_size=1, max_size=90), min_size=2, max_size=30, unique=True),
    subject=st.text(max_size=10),
)
def test_two_jobs_never_share_a_path(ids: list[str], subject: str) -> None:
    # Any ids at all: ones that slugify alike ("a b", "a-b"), differ only by case, or
    # mimic another job's file number ("a" file 2 against job "a_2").
    # Nor a stem: the files of one job are images, of the next videos ("a" file 2 as
    # a_2.png against job "a_2" as a_2.mp4), and each has a sidecar NAME.json.
    for template in (None, "{subject}", "{subject}/{model}", "{task_id}", "fixed/name"):
        layout, claims = Layout.parse(template), PathClaims()
        paths = [
            claims.claim(path(layout, job_id, i, ext, subject=subject), job_id, i)
            for k, job_id in enumerate(ids)
            for i in (1, 2)
            for ext in [(".png", ".mp4")[k % 2]]
        ]
        assert len({p.casefold() for p in paths}) == len(paths), template
        assert len({sidecar_path(p).casefold() for p in paths}) == len(paths), template


def test_claims_are_stable_and_seeded_from_the_state() -> None:
    """Recorded paths are asked of the state (here a dict standing in for its index):
    memory holds only the claims not recorded yet."""
    state: dict[str, list[tuple[str, int]]] = {"outputs/m/a-b.png": [("a b", 0)]}

    def recorded(path: str) -> list[tuple[str, int]]:  # as the state's: any extension
        return [h for p, hs in state.items() if stem_key(p) == stem_key(path) for h in hs]

    claims = PathClaims(recorded)
    assert claims.claim("outputs/m/a-b.png", "a b", 0) == "outputs/m/a-b.png"
    other = claims.claim("outputs/m/A-B.png", "a-b", 0)
    assert other.startswith("outputs/m/A-B-") and other.endswith(".png")
    assert claims.claim("outputs/m/A-B.png", "a-b", 0) == other  # same owner, same answer
    # An owner that moves (another extension) frees its old path once it is recorded.
    assert claims.claim("outputs/m/a-b.jpg", "a b", 0) == "outputs/m/a-b.jpg"
    state["outputs/m/a-b.jpg"] = state.pop("outputs/m/a-b.png")
    claims.release("a b", 0)
    # Its stem stays taken (a-b.json is its sidecar): another job's a-b.png gets a tag.
    assert claims.claim("outputs/m/a-b.png", "c", 0) != "outputs/m/a-b.png"
    assert claims.claim("outputs/m/c.png", "c", 0) == "outputs/m/c.png"
    # A claim not recorded yet holds its stem against everyone else.
    assert claims.claim("outputs/m/c.webp", "d", 0) != "outputs/m/c.webp"


def test_disambiguate_keeps_the_extension() -> None:
    out = Layout.disambiguate("outputs/m/a-b.png", "a b")
    assert re.fullmatch(r"outputs/m/a-b-[0-9a-f]{8}\.png", out)
    assert out != Layout.disambiguate("outputs/m/a-b.png", "a-b")


@pytest.mark.parametrize(
    ("content_type", "url", "ext"),
    [
        ("image/png", "https://x/f", ".png"),
        ("image/jpeg; charset=binary", "https://x/f.png", ".jpg"),
        ("image/webp", "https://x/f.png", ".webp"),
        ("video/mp4", "https://x/f", ".mp4"),
        ("application/octet-stream", "https://x/a/f.JPEG?sig=1", ".jpg"),
        (None, "https://x/a/f.mp4#t=1", ".mp4"),
        ("text/html", "https://x/a/page.html", ".bin"),
        ("", "https://x/state.db", ".bin"),
        (None, "https://x/", ".bin"),
    ],
)
def test_extension_for(content_type: str | None, url: str, ext: str) -> None:
    assert extension_for(content_type, url) == ext
