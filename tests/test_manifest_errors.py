"""Every kind of manifest problem, with its location: file:line [field] expected; got; hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from liangxin_batch.errors import ManifestError
from liangxin_batch.manifest._manifest import Problem, SourceRef, load_jobs, validate_manifest
from tests.manifest_support import CATALOG, only_problem, read, where, write


def one(tmp: Path, header: str, row: str, name: str = "m.csv") -> Problem:
    _jobs, problems = read(write(tmp, name, f"{header}\n{row}\n"))
    return only_problem(problems)


def test_problem_format() -> None:
    p = Problem(
        SourceRef("prompts.csv", 48213),
        "aspect_ratio",
        "one of 1:1, 16:9",
        "'16-9'",
        "did you mean '16:9'?",
    )
    assert p.format() == (
        "prompts.csv:48213 [aspect_ratio] expected one of 1:1, 16:9; got '16-9'; "
        "did you mean '16:9'?"
    )
    assert Problem(SourceRef("a.yaml", 3), None, "valid YAML", "x").format() == (
        "a.yaml:3 expected valid YAML; got x"
    )
    assert "(affects 7 jobs" in Problem(SourceRef("f", 1), "x", "e", "g", count=7).format()


def test_unknown_model_with_a_suggestion(tmp_path: Path) -> None:
    p = one(tmp_path, "model,prompt", "nano-banana-pr,a cat")
    assert where(p) == ("m.csv", 2, "model")
    assert p.expected == "a model in the catalog" and p.got == "'nano-banana-pr'"
    assert p.suggestion == "did you mean 'nano-banana-pro'?"


def test_missing_model_is_one_problem_for_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "prompt,aspect_ratio\na,1:1\nb,1:1\nc,1:1\n")
    _jobs, problems = read(path)
    p = only_problem(problems)
    assert (where(p), p.count) == (("m.csv", 2, "model"), 3)
    assert "--model" in p.expected
    jobs, problems = read(path, default_model="z-image")
    assert problems == [] and len(jobs) == 3


def test_an_unknown_default_model(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "prompt,aspect_ratio\na,1:1\nb,1:1\n")
    p = only_problem(read(path, default_model="zimag")[1])
    assert (p.field, p.count, p.suggestion) == ("model", 2, "did you mean 'zimage'?")


def test_missing_required_field(tmp_path: Path) -> None:
    p = one(tmp_path, "model,prompt,aspect_ratio", "z-image,,1:1")
    assert where(p) == ("m.csv", 2, "prompt")
    assert (p.expected, p.got) == ("a value", "nothing")


def test_a_missing_required_column_is_one_problem(tmp_path: Path) -> None:
    rows = "".join(f"z-image,p{i}\n" for i in range(40))
    _jobs, problems = read(write(tmp_path, "m.csv", "model,prompt\n" + rows))
    p = only_problem(problems)
    assert (where(p), p.count) == (("m.csv", 2, "aspect_ratio"), 40)
    assert p.suggestion is not None and "1:1" in p.suggestion


def test_wrong_type(tmp_path: Path) -> None:
    p = one(tmp_path, "model,prompt,seed", "google/imagen4-fast,p,forty-two")
    assert where(p) == ("m.csv", 2, "seed")
    assert (p.expected, p.got) == ("an integer", "'forty-two'")


def test_value_outside_an_enum(tmp_path: Path) -> None:
    p = one(
        tmp_path, "model,prompt,aspect_ratio,quality", "seedream/4.5-text-to-image,p,16x9,basic"
    )
    assert where(p) == ("m.csv", 2, "aspect_ratio")
    assert p.expected.startswith("one of 1:1, 4:3") and p.suggestion == "did you mean '16:9'?"


def test_value_outside_a_range(tmp_path: Path) -> None:
    text = (
        "jobs:\n"
        "  - model: kling-3.0/video\n"
        "    multi_shots: true\n"
        "    multi_prompt:\n"
        "      - {prompt: a, duration: 20}\n"
    )
    _jobs, problems = read(write(tmp_path, "r.yaml", text))
    p = only_problem(problems)
    assert where(p) == ("r.yaml", 4, "multi_prompt[0].duration")
    assert p.expected == "between 1 and 12"


def test_prompt_too_long(tmp_path: Path) -> None:
    p = one(tmp_path, "model,prompt,aspect_ratio", "z-image," + "x" * 1005 + ",1:1")
    assert where(p) == ("m.csv", 2, "prompt")
    assert p.expected == "at most 1000 characters" and p.got == "1005 characters"


def test_too_many_images_and_a_bad_url(tmp_path: Path) -> None:
    urls = "|".join(f"https://e.com/{i}.png" for i in range(11))
    _jobs, problems = read(
        write(
            tmp_path,
            "m.csv",
            f"model,prompt,image_urls\ngoogle/nano-banana-edit,p,{urls}\ngoogle/nano-banana-edit,p,ftp://x|/local.png\n",
        )
    )
    assert [(where(p), p.expected) for p in problems] == [
        (("m.csv", 2, "image_urls"), "at most 10 item(s)"),
        (("m.csv", 3, "image_urls"), "an image file (jpeg/png/webp) ≤ 10 MB"),  # a path
        (("m.csv", 3, "image_urls[0]"), "an http(s) URL"),
    ]


def test_a_column_the_model_does_not_take_is_one_problem_per_model(tmp_path: Path) -> None:
    rows = "".join(f"z-image,p{i},1:1,2K\n" for i in range(30))
    rows += "z-image,empty cell is fine,1:1,\n"
    rows += "nano-banana-pro,takes it,1:1,2K\n"
    jobs, problems = read(write(tmp_path, "m.csv", "model,prompt,aspect_ratio,resolution\n" + rows))
    assert [j.input["prompt"] for j in jobs] == ["empty cell is fine", "takes it"]
    p = only_problem(problems)
    assert (where(p), p.count) == (("m.csv", 2, "resolution"), 30)
    assert p.expected == "a field of z-image" and p.got == "column 'resolution'"
    assert "z-image takes: prompt, aspect_ratio, nsfw_checker" in (p.suggestion or "")


def test_a_misspelt_column_gets_a_suggestion(tmp_path: Path) -> None:
    p = one(tmp_path, "model,prompt,aspect_raito", "google/nano-banana,p,1:1")
    assert p.field == "aspect_raito" and p.suggestion == "did you mean 'aspect_ratio'?"


def test_cells_past_the_header_and_nameless_columns(tmp_path: Path) -> None:
    text = "model,prompt,aspect_ratio,\nz-image,p,1:1,x\nz-image,q,1:1,,extra\n"
    _jobs, problems = read(write(tmp_path, "m.csv", text))
    assert sorted((where(p), p.suggestion) for p in problems) == [
        (("m.csv", 2, "(column 4)"), "give the column a header, or remove it"),
        (("m.csv", 3, "(column 5)"), "give the column a header, or remove it"),
    ]


def test_a_column_named_twice(tmp_path: Path) -> None:
    _jobs, problems = read(
        write(tmp_path, "m.csv", "model,prompt,prompt,aspect_ratio\nz-image,a,b,1:1\n")
    )
    p = only_problem(problems)
    assert where(p) == ("m.csv", 1, "prompt") and "column 3" in p.got


@pytest.mark.parametrize(
    ("given", "slug"),
    [("my job", "my-job"), (".hidden", "hidden"), ("a/b", "a-b"), ("x" * 101, "x" * 100)],
)
def test_ids_that_cannot_name_files(tmp_path: Path, given: str, slug: str) -> None:
    p = one(tmp_path, "id,model,prompt,aspect_ratio", f"{given},z-image,p,1:1")
    assert where(p) == ("m.csv", 2, "id")
    assert p.suggestion == f"use {slug!r}"


def test_duplicate_ids_name_the_first_line(tmp_path: Path) -> None:
    text = (
        "id,model,prompt,aspect_ratio\n"
        "hero,z-image,a,1:1\nx,z-image,b,1:1\nhero,z-image,c,1:1\nHERO,z-image,d,1:1\n"
    )
    jobs, problems = read(write(tmp_path, "m.csv", text))
    assert [j.job_id for j in jobs] == ["hero", "x"]
    assert [where(p) for p in problems] == [("m.csv", 4, "id"), ("m.csv", 5, "id")]
    assert f"'hero' again (first at {tmp_path / 'm.csv'}:2)" == problems[0].got
    assert "'HERO' again" in problems[1].got and "ignoring case" in (problems[1].suggestion or "")


def test_a_duplicate_of_an_invalid_row_is_still_found(tmp_path: Path) -> None:
    text = "id,model,prompt,aspect_ratio\nhero,z-image,a,16-9\nhero,z-image,b,1:1\n"
    _jobs, problems = read(write(tmp_path, "m.csv", text))
    assert [where(p) for p in problems] == [("m.csv", 2, "aspect_ratio"), ("m.csv", 3, "id")]


def test_identical_rows_without_ids(tmp_path: Path) -> None:
    text = "model,prompt,aspect_ratio\nz-image,a,1:1\nz-image,b,1:1\nz-image,a,1:1\n"
    path = write(tmp_path, "m.csv", text)
    p = only_problem(read(path)[1])
    assert where(p) == ("m.csv", 4, None)
    report = validate_manifest(path, catalog=CATALOG)
    assert (report.jobs, report.duplicates, report.total_problems) == (2, 1, 1)


def test_repeat_column_makes_distinct_ids(tmp_path: Path) -> None:
    text = "model,prompt,aspect_ratio,repeat\nz-image,a,1:1,3\nz-image,b,1:1,\n"
    jobs, problems = read(write(tmp_path, "m.csv", text))
    assert problems == []
    assert [j.job_id.rsplit("-", 1)[-1] for j in jobs[:3]] == ["r1", "r2", "r3"]
    assert len(jobs) == 4


def test_all_problems_are_reported_up_to_a_cap_with_the_total(tmp_path: Path) -> None:
    rows = "".join(f"z-image,p{i},9:9\n" for i in range(120))
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\n" + rows)
    report = validate_manifest(path, catalog=CATALOG, max_problems=50)
    assert (report.jobs, len(report.problems), report.total_problems) == (0, 50, 120)
    assert [p.source.line for p in report.problems] == list(range(2, 52))
    with pytest.raises(ManifestError) as err:
        report.raise_for_problems()
    text = str(err.value)
    assert text.startswith("120 problem(s) in the manifest; nothing was sent:")
    assert text.endswith("... and 70 more problem(s) not shown")
    with pytest.raises(ManifestError) as err2:
        load_jobs(path, catalog=CATALOG)
    assert err2.value.total == 120


def test_collapsed_problems_are_kept_when_the_cap_is_reached(tmp_path: Path) -> None:
    rows = "".join(f"z-image,p{i},9:9,x\n" for i in range(80))
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio,extra\n" + rows)
    report = validate_manifest(path, catalog=CATALOG, max_problems=10)
    assert report.total_problems == 81
    assert any(p.field == "extra" and p.count == 80 for p in report.problems)
    assert len(report.problems) == 10


def test_every_problem_line_is_located(tmp_path: Path) -> None:
    text = (
        "id,model,prompt,aspect_ratio,nsfw_checker,bogus\na b,nope,p,1:1,,\n,z-image,,7:7,maybe,x\n"
    )
    _jobs, problems = read(write(tmp_path, "m.csv", text))
    # row 2: the id, the model; row 3: prompt, aspect_ratio, nsfw_checker, bogus
    assert len(problems) == 6
    for p in problems:
        assert p.format().startswith(f"{tmp_path / 'm.csv'}:")
        assert p.source.line in (2, 3)


def test_duplicates_are_found_across_a_large_file(tmp_path: Path) -> None:
    rows = "".join(f"job-{i},z-image,p{i},1:1\n" for i in range(5000))
    rows += "JOB-17,z-image,again,1:1\nz,z-image,p3,1:1\n,z-image,p9,1:1\n,z-image,p9,1:1\n"
    jobs, problems = read(write(tmp_path, "big.csv", "id,model,prompt,aspect_ratio\n" + rows))
    assert len(jobs) == 5002
    assert [
        (where(p), p.got.endswith(f"big.csv:{line})"))
        for p, line in zip(problems, (19, 5004), strict=True)
    ] == [
        (("big.csv", 5002, "id"), True),
        (("big.csv", 5005, None), False),
    ]
    assert problems[1].got.endswith("big.csv:5004 (no id given)")


def test_the_id_table() -> None:
    from liangxin_batch.manifest._guards import IdTable as _IdTable

    table = _IdTable(capacity=4)
    keys = [0, -1, 2**63 - 1, -(2**63), *range(100, 5000, 7)]
    for n, key in enumerate(keys):
        assert table.setdefault(key, n) is None
    # 0 is stored as 1 (0 marks an empty slot), so 1 finds 0's value: a 2**-64 chance.
    assert table.setdefault(1, 99) == 0
    for n, key in enumerate(keys):
        assert table.setdefault(key, -5) == n


def test_the_id_table_claims_blocks_up_to_the_first_key_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blocks (validate's, probed in numpy) against a dict: the same count claimed, the
    same values found after, through growth from a tiny table."""
    import random

    from liangxin_batch.manifest import _guards
    from liangxin_batch.manifest._guards import IdTable as _IdTable

    monkeypatch.setattr(_guards, "_BULK_AFTER", 0)  # numpy from the first block

    rng = random.Random(5)
    for _ in range(20):
        table, oracle = _IdTable(capacity=rng.choice([4, 1024])), dict[int, int]()
        for start in range(0, 6000, 300):
            keys = [rng.randrange(-(2**63), 2**63) for _ in range(rng.randrange(1, 300))]
            keys[0] = rng.choice([0, keys[0]])
            if rng.random() < 0.3:  # a key claimed before, or one repeated in the block
                keys[rng.randrange(len(keys))] = rng.choice([*oracle, *keys])
            values = list(range(start, start + len(keys)))
            n = 0
            while n < len(keys) and (keys[n] or 1) not in oracle:
                oracle[keys[n] or 1] = values[n]
                n += 1
            assert table.claim_all(keys, values) == n
        assert all(table.setdefault(k, -5) == v for k, v in oracle.items())
