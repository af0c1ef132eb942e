"""Reading every manifest format: cells stay text, lines are physical lines, ids are stable."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from liangxin_batch.errors import ConfigError, ManifestError
from liangxin_batch.manifest._manifest import (
    iter_jobs,
    jobs_from_records,
    load_jobs,
    validate_manifest,
)
from tests.manifest_support import CATALOG, only_problem, read, where, write

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

HEADER = "id,model,prompt,aspect_ratio\n"


def test_the_examples_give_the_same_jobs_in_every_format() -> None:
    results = {}
    for suffix in ("csv", "tsv", "yaml", "jsonl", "json"):
        jobs = load_jobs(EXAMPLES / f"jobs.{suffix}", catalog=CATALOG)
        results[suffix] = [(j.job_id, j.model, dict(j.input), j.content_hash) for j in jobs]
    assert len(results["csv"]) == 4
    for suffix, seen in results.items():
        assert seen == results["csv"], suffix
    ids = [r[0] for r in results["csv"]]
    assert ids[0] == "fox" and ids[2] == "poster-001" and ids[3] == "banana-2"
    assert re.fullmatch(r"z-image-[0-9a-f]{12}", ids[1])
    assert results["csv"][1][2]["prompt"] == "A neon-lit ramen shop at night,\nrain on the street"


def test_example_lines_are_where_each_job_starts() -> None:
    lines = {
        "csv": [2, 3, 5, 6],  # the second row's quoted prompt spans lines 3-4
        "tsv": [2, 3, 5, 6],
        "jsonl": [1, 2, 3, 4],
        "json": [2, 3, 4, 5],
        "yaml": [3, 7, 12, 17],
    }
    for suffix, expected in lines.items():
        jobs = load_jobs(EXAMPLES / f"jobs.{suffix}", catalog=CATALOG)
        assert [j.source.line for j in jobs] == expected, suffix


def test_csv_cells_stay_text_until_the_field_type_says_otherwise(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.csv",
        "id,model,prompt,seed,num_images,aspect_ratio\n001,google/imagen4-fast,NA,00042,2,16:9\n",
    )
    jobs, problems = read(path)
    assert problems == []
    job = jobs[0]
    assert job.job_id == "001"  # pandas would make this 1
    assert job.input == {"prompt": "NA", "seed": 42, "num_images": "2", "aspect_ratio": "16:9"}
    assert job.columns["seed"] == "00042"


def test_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    text = (
        "\ufeff"
        + HEADER.replace("\n", "\r\n")
        + 'a,z-image,hello,1:1\r\n,z-image,"two\r\nlines",4:3\r\n'
    )
    jobs, problems = read(write(tmp_path, "bom.csv", text))
    assert problems == []
    assert jobs[0].job_id == "a"  # the header's first name is "id", not "\ufeffid"
    assert [j.source.line for j in jobs] == [2, 3]
    assert jobs[1].input["prompt"] == "two\r\nlines"


def test_multiline_quoted_prompts_and_the_lines_after_them(tmp_path: Path) -> None:
    text = (
        HEADER
        + 'a,z-image,"line one\nline two\nline three",1:1\n'  # lines 2-4
        + "\n"  # line 5: blank, skipped
        + 'b,z-image,"x\ny",1:1\n'  # lines 6-7
        + "c,z-image,bad ratio,16-9\n"  # line 8
    )
    jobs, problems = read(write(tmp_path, "multi.csv", text))
    assert [(j.job_id, j.source.line) for j in jobs] == [("a", 2), ("b", 6)]
    assert jobs[0].input["prompt"] == "line one\nline two\nline three"
    p = only_problem(problems)
    assert where(p) == ("multi.csv", 8, "aspect_ratio")
    assert p.format().startswith(f"{tmp_path / 'multi.csv'}:8 [aspect_ratio] expected one of")
    assert "did you mean '16:9'?" in p.format()


def test_an_unclosed_quote_is_located_at_the_row_it_starts(tmp_path: Path) -> None:
    text = HEADER + "a,z-image,fine,1:1\n" + 'b,z-image,"never closed,1:1\nc,z-image,more,1:1\n'
    jobs, problems = read(write(tmp_path, "q.csv", text))
    assert [j.job_id for j in jobs] == ["a"]
    p = only_problem(problems)
    assert where(p) == ("q.csv", 3, None)
    assert 'closing "' in p.expected


def test_a_stray_quote_is_one_problem_and_reading_goes_on(tmp_path: Path) -> None:
    text = HEADER + 'a,z-image,"quoted" then more,1:1\nb,z-image,fine,1:1\n'
    jobs, problems = read(write(tmp_path, "s.csv", text))
    assert [j.job_id for j in jobs] == ["b"]
    assert where(only_problem(problems)) == ("s.csv", 2, None)


def test_quotes_inside_an_unquoted_cell_are_literal(tmp_path: Path) -> None:
    jobs, problems = read(write(tmp_path, "l.csv", HEADER + 'a,z-image,say "hi" twice,1:1\n'))
    assert problems == []
    assert jobs[0].input["prompt"] == 'say "hi" twice'


def test_empty_cells_mean_not_given_and_rows_of_empty_cells_are_skipped(tmp_path: Path) -> None:
    text = "id,model,prompt,aspect_ratio,nsfw_checker\n,,,,\na,z-image,hi,1:1,\n"
    jobs, problems = read(write(tmp_path, "e.csv", text))
    assert problems == []
    assert jobs[0].input == {"prompt": "hi", "aspect_ratio": "1:1"}
    assert jobs[0].source.line == 3


def test_tsv(tmp_path: Path) -> None:
    text = "model\tprompt\taspect_ratio\nz-image\ta, b, c\t16:9\n"
    jobs, problems = read(write(tmp_path, "t.tsv", text))
    assert problems == []
    assert jobs[0].input == {"prompt": "a, b, c", "aspect_ratio": "16:9"}


def test_list_and_boolean_cells(tmp_path: Path) -> None:
    text = (
        "model,prompt,image_urls,nsfw_checker,aspect_ratio,quality\n"
        "seedream/4.5-edit,p,https://e.com/a.png|https://e.com/b.png,yes,1:1,basic\n"
        'seedream/4.5-edit,p,"[""https://e.com/c.png""]",false,1:1,high\n'
    )
    jobs, problems = read(write(tmp_path, "l.csv", text))
    assert problems == []
    assert jobs[0].input["image_urls"] == ["https://e.com/a.png", "https://e.com/b.png"]
    assert jobs[0].input["nsfw_checker"] is True
    assert jobs[1].input["image_urls"] == ["https://e.com/c.png"]
    assert jobs[1].input["nsfw_checker"] is False


def test_input_column_merges_a_json_object(tmp_path: Path) -> None:
    text = (
        "model,prompt,input\n"
        'kling-3.0/video,,"{""multi_shots"": true, ""multi_prompt"": '
        '[{""prompt"": ""a"", ""duration"": 3}], ""duration"": 5}"\n'
    )
    jobs, problems = read(write(tmp_path, "i.csv", text))
    assert problems == []
    assert jobs[0].input == {
        "multi_shots": True,
        "multi_prompt": [{"prompt": "a", "duration": 3}],
        "duration": "5",  # a JSON 5 for a stringly-typed field becomes "5"
    }


def test_bad_input_cells_are_located(tmp_path: Path) -> None:
    text = (
        "model,prompt,aspect_ratio,input\nz-image,p,1:1,{not json}\n"
        'z-image,p,1:1,"{""prompt"": ""q""}"\n'
    )
    _jobs, problems = read(write(tmp_path, "i.csv", text))
    assert [where(p) for p in problems] == [("i.csv", 2, "input"), ("i.csv", 3, "input.prompt")]
    assert "invalid JSON" in problems[0].got
    assert problems[1].expected == "each field given once"


def test_note_columns_are_kept_but_never_sent(tmp_path: Path) -> None:
    text = "model,prompt,aspect_ratio,_sku\nz-image,p,1:1,SKU-1\n"
    jobs, problems = read(write(tmp_path, "n.csv", text))
    assert problems == []
    assert "_sku" not in jobs[0].input
    assert jobs[0].columns == {
        "model": "z-image",
        "prompt": "p",
        "aspect_ratio": "1:1",
        "_sku": "SKU-1",
    }


def test_jsonl_bad_lines_are_located_and_the_rest_is_read(tmp_path: Path) -> None:
    text = (
        '{"id": "a", "model": "z-image", "prompt": "p", "aspect_ratio": "1:1"}\n'
        "\n"
        '{"id": "b", "model": "z-image", "prompt": "p"\n'
        '["not", "an", "object"]\n'
        '{"id": "c", "model": "z-image", "prompt": "q", "aspect_ratio": "1:1"}\n'
    )
    jobs, problems = read(write(tmp_path, "j.jsonl", text))
    assert [j.job_id for j in jobs] == ["a", "c"]
    assert [j.source.line for j in jobs] == [1, 5]
    assert [where(p) for p in problems] == [("j.jsonl", 3, None), ("j.jsonl", 4, None)]
    assert "invalid JSON" in problems[0].got


def test_json_array_is_read_with_lines(tmp_path: Path) -> None:
    text = (
        '[\n  {"model": "z-image", "prompt": "p", "aspect_ratio": "1:1"},\n'
        '  {"model": "z-image"}\n]\n'
    )
    jobs, problems = read(write(tmp_path, "a.json", text))
    assert [j.source.line for j in jobs] == [2]
    assert [where(p) for p in problems] == [("a.json", 3, "prompt"), ("a.json", 3, "aspect_ratio")]


def test_xlsx_reads_every_cell_as_text(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    path = tmp_path / "m.xlsx"
    frame = pd.DataFrame(
        {
            "id": ["001", "b"],
            "model": ["z-image", "z-image"],
            "prompt": ["NA", "x"],
            "aspect_ratio": ["16:9", "16-9"],
        }
    )
    frame.to_excel(path, index=False)
    jobs, problems = read(path)
    assert [(j.job_id, j.input["prompt"], j.source.line) for j in jobs] == [("001", "NA", 2)]
    assert where(only_problem(problems)) == ("m.xlsx", 3, "aspect_ratio")


def test_parquet_rows(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "m.parquet"
    frame = pd.DataFrame(
        {
            "model": ["google/imagen4-fast", "google/imagen4-fast"],
            "prompt": ["a", None],
            "seed": [42, 7],
        }
    )
    frame.to_parquet(path)
    jobs, problems = read(path)
    assert [(j.input, j.source.line) for j in jobs] == [({"prompt": "a", "seed": 42}, 1)]
    assert where(only_problem(problems)) == ("m.parquet", 2, "prompt")


def test_missing_excel_dependency_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")

    def no_openpyxl(*_a: object, **_k: object) -> None:
        raise ImportError("Missing optional dependency 'openpyxl'")

    monkeypatch.setattr(pd, "read_excel", no_openpyxl)
    path = write(tmp_path, "m.xlsx", b"PK")
    with pytest.raises(ConfigError, match=r"pip install 'liangxin-batch\[xlsx\]'"):
        read(path)


def test_not_utf8_is_located_at_the_first_bad_line(tmp_path: Path) -> None:
    data = (HEADER + "a,z-image,fine,1:1\n").encode() + "b,z-image,caf\u00e9,1:1\n".encode(
        "latin-1"
    )
    _jobs, problems = read(write(tmp_path, "l1.csv", data))
    p = problems[-1]
    assert where(p) == ("l1.csv", 3, None)
    assert p.expected == "UTF-8 text" and "UTF-8" in (p.suggestion or "")


def test_utf16_is_named(tmp_path: Path) -> None:
    data = (HEADER + "a,z-image,fine,1:1\n").encode("utf-16")
    _jobs, problems = read(write(tmp_path, "u16.csv", data))
    p = only_problem(problems)
    assert (where(p), p.got) == (("u16.csv", 1, None), "UTF-16 text")


def test_derived_ids_are_stable_and_follow_content(tmp_path: Path) -> None:
    path = write(
        tmp_path, "d.csv", "model,prompt,aspect_ratio\nz-image,a fox,1:1\nz-image,a cat,1:1\n"
    )
    first = load_jobs(path, catalog=CATALOG)
    again = load_jobs(path, catalog=CATALOG)
    assert [j.job_id for j in first] == [j.job_id for j in again]
    assert [j.content_hash for j in first] == [j.content_hash for j in again]
    canonical = json.dumps(
        ["z-image", {"prompt": "a fox", "aspect_ratio": "1:1"}],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert first[0].content_hash == digest
    assert first[0].job_id == f"z-image-{digest[:12]}"
    # Column order and an alias do not change the identity; the content does.
    moved = write(
        tmp_path, "m.csv", "aspect_ratio,prompt,model\n1:1,a fox,zimage\n1:1,a fox!,z-image\n"
    )
    other = load_jobs(moved, catalog=CATALOG)
    assert other[0].job_id == first[0].job_id and other[0].model == "z-image"
    assert other[1].job_id != first[0].job_id


def test_indexes_count_jobs_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", HEADER + "a,z-image,p,1:1\nb,z-image,q,1:1\nc,z-image,r,1:1\n")
    assert [j.index for j in load_jobs(path, catalog=CATALOG)] == [0, 1, 2]


def test_iter_jobs_streams(tmp_path: Path) -> None:
    rows = "".join(f"r{i},z-image,p{i},1:1\n" for i in range(50))
    stream = iter_jobs(
        write(tmp_path, "s.csv", HEADER + rows + "bad,nope,p,1:1\n"), catalog=CATALOG
    )
    first = next(stream)
    assert getattr(first, "job_id", None) == "r0"  # yielded before the bad last row is read
    rest = list(stream)
    assert len(rest) == 50


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.txt", "x", "unknown manifest format '.txt'"),
        ("missing.csv", None, "manifest not found"),
    ],
)
def test_files_that_cannot_be_manifests(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        list(iter_jobs(path, catalog=CATALOG))
    with pytest.raises(ConfigError, match="is a directory"):
        list(iter_jobs(tmp_path, catalog=CATALOG))


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl", "e.yaml"])
def test_an_empty_manifest_is_a_problem(tmp_path: Path, name: str) -> None:
    _jobs, problems = read(write(tmp_path, name, ""))
    p = only_problem(problems)
    assert p.source.line == 1 and "job" in p.expected


def test_header_only_csv_has_no_jobs(tmp_path: Path) -> None:
    _jobs, problems = read(write(tmp_path, "h.csv", HEADER))
    assert only_problem(problems).expected == "at least one job"


def test_jobs_from_records() -> None:
    jobs = jobs_from_records(
        [
            {"id": "a", "model": "z-image", "prompt": "p", "aspect_ratio": "1:1"},
            {"model": "z-image", "prompt": "q", "aspect_ratio": "4:3", "_note": "kept"},
        ],
        catalog=CATALOG,
    )
    assert jobs[0].job_id == "a"
    assert jobs[1].columns["_note"] == "kept" and "_note" not in jobs[1].input
    with pytest.raises(ManifestError) as err:
        jobs_from_records([{"model": "z-image", "prompt": "p"}, {"model": "nope"}], catalog=CATALOG)
    assert "records:2 [model] expected a model in the catalog" in str(err.value)


def test_validate_manifest_counts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.csv",
        "model,prompt,aspect_ratio,quality\nz-image,a,1:1,\nz-image,b,1:1,\n"
        "seedream/4.5-text-to-image,c,16:9,high\n",
    )
    report = validate_manifest(path, catalog=CATALOG)
    assert report.ok and report.jobs == 3
    assert dict(report.per_model) == {"z-image": 2, "seedream/4.5-text-to-image": 1}
    assert report.credits["z-image"] == pytest.approx(2.0)  # 0.8 each, billed as whole credits
    assert report.credits["seedream/4.5-text-to-image"] == pytest.approx(7.0)
    assert report.summary() == "OK: 3 jobs (z-image: 2, seedream/4.5-text-to-image: 1)"
    assert report.examples["z-image"].input["prompt"] == "a"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.jsonl", '{"model": "z-image", "prompt": ' + "[" * 5000 + "]" * 5000 + "}\n"),
        ("deep2.jsonl", '{"model": "z-image", "prompt": ' + "[" * 900 + "]" * 900 + "}\n"),
        (
            "deep.csv",
            'model,prompt,image_urls\nseedream/4.5-edit,p,"' + "[" * 5000 + "]" * 5000 + '"\n',
        ),
        ("deep.csv", 'model,prompt,input\nz-image,p,"' + "[" * 5000 + "]" * 5000 + '"\n'),
        ("deep.yaml", "jobs:\n  - model: z-image\n    prompt: " + "[" * 2000 + "]" * 2000 + "\n"),
        ("deep2.yaml", "jobs:\n  - model: z-image\n    prompt: " + "[" * 300 + "]" * 300 + "\n"),
    ],
)
def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path, name: str, text: str) -> None:
    jobs, problems = read(write(tmp_path, name, text))
    assert jobs == [] and problems
    assert all(p.source.line in (1, 2, 3) for p in problems)


def test_json_indented_with_tabs(tmp_path: Path) -> None:
    text = (
        '[\n\t{"model": "z-image",\n'
        '\t "prompt": "a\\tb \\/ c \\u00e9",\n\t "aspect_ratio": "1:1"}\n]\n'
    )
    jobs, problems = read(write(tmp_path, "tabs.json", text))
    assert problems == []
    assert (jobs[0].input["prompt"], jobs[0].source.line) == ("a\tb / c \u00e9", 2)
