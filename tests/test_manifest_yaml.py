"""YAML manifests: the 1.1 traps, defaults, vars, matrix, templates, repeat, jobs_from."""

from __future__ import annotations

import itertools
from pathlib import Path

from liangxin_batch.manifest._manifest import validate_manifest
from tests.manifest_support import CATALOG, only_problem, read, where, write

ISSUE_EXAMPLE = """\
defaults:
  model: seedream/4.5-text-to-image
  aspect_ratio: "16:9"
  quality: basic
vars:
  style: [watercolor, "35mm film"]
matrix:
  subject: ["a tea bottle on a stone table", "a red bicycle in the rain"]
jobs:
  - id: hero-shot
    prompt: "A cinematic product photo of a tea bottle"
    model: nano-banana-pro
    resolution: 2K
  - prompt: "{subject}, {style}"      # expanded over matrix x vars
"""


def test_the_issue_example(tmp_path: Path) -> None:
    jobs, problems = read(write(tmp_path, "example.yaml", ISSUE_EXAMPLE))
    assert problems == []
    assert len(jobs) == 5
    hero = jobs[0]
    assert (hero.job_id, hero.model, hero.source.line) == ("hero-shot", "nano-banana-pro", 10)
    # Defaults the model does not take (quality) are left out for it.
    assert hero.input == {
        "aspect_ratio": "16:9",
        "prompt": "A cinematic product photo of a tea bottle",
        "resolution": "2K",
    }
    expanded = jobs[1:]
    assert {j.input["prompt"] for j in expanded} == {
        f"{s}, {t}"
        for s, t in itertools.product(
            ["a tea bottle on a stone table", "a red bicycle in the rain"],
            ["watercolor", "35mm film"],
        )
    }
    assert all(j.model == "seedream/4.5-text-to-image" and j.source.line == 14 for j in expanded)
    assert all(
        j.input["quality"] == "basic" and j.input["aspect_ratio"] == "16:9" for j in expanded
    )
    assert len({j.job_id for j in jobs}) == 5
    assert [j.index for j in jobs] == [0, 1, 2, 3, 4]


def test_yaml_11_traps_survive_as_written(tmp_path: Path) -> None:
    text = """\
jobs:
  - id: 001
    model: google/imagen4-fast
    prompt: no
    negative_prompt: 2026-01-02
    aspect_ratio: 16:9
    seed: 00042
    num_images: 2
  - id: 002
    model: google/imagen4-ultra
    prompt: 1e3
    negative_prompt: on
    seed: 00042
"""
    jobs, problems = read(write(tmp_path, "traps.yaml", text))
    assert problems == []
    fast, ultra = jobs
    assert fast.job_id == "001" and ultra.job_id == "002"
    assert fast.input == {
        "prompt": "no",
        "negative_prompt": "2026-01-02",
        "aspect_ratio": "16:9",
        "seed": 42,  # an integer field: base 10, never octal
        "num_images": "2",  # a stringly-typed field stays a string
    }
    assert ultra.input == {"prompt": "1e3", "negative_prompt": "on", "seed": "00042"}


def test_plain_on_for_a_boolean_is_a_problem_not_true(tmp_path: Path) -> None:
    text = "jobs:\n  - model: z-image\n    prompt: p\n    aspect_ratio: 1:1\n    nsfw_checker: on\n"
    _jobs, problems = read(write(tmp_path, "b.yaml", text))
    p = only_problem(problems)
    assert where(p) == ("b.yaml", 5, "nsfw_checker")
    assert p.expected.startswith("true or false")


def test_matrix_sets_fields_and_expands(tmp_path: Path) -> None:
    text = """\
defaults: {model: nano-banana-pro}
matrix:
  subject: [a cup, a shoe, a camera]
  aspect_ratio: ["1:1", 16:9]
jobs:
  - id: "{subject}-{aspect_ratio}"
    prompt: "A photo of {subject}"
"""
    jobs, problems = read(write(tmp_path, "m.yaml", text))
    assert problems == []
    assert [j.job_id for j in jobs] == [
        "a-cup-1-1",
        "a-cup-16-9",
        "a-shoe-1-1",
        "a-shoe-16-9",
        "a-camera-1-1",
        "a-camera-16-9",
    ]
    assert jobs[1].input == {"prompt": "A photo of a cup", "aspect_ratio": "16:9"}


def test_matrix_over_models_uses_each_models_fields(tmp_path: Path) -> None:
    text = """\
defaults:
  quality: high          # only seedream takes it
  aspect_ratio: "4:3"
matrix:
  model: [z-image, seedream/4.5-text-to-image]
  prompt: [a fox, a cat]
"""
    jobs, problems = read(write(tmp_path, "mm.yaml", text))
    assert problems == []
    assert [(j.model, j.input.get("prompt"), j.input.get("quality")) for j in jobs] == [
        ("z-image", "a fox", None),
        ("z-image", "a cat", None),
        ("seedream/4.5-text-to-image", "a fox", "high"),
        ("seedream/4.5-text-to-image", "a cat", "high"),
    ]


def test_a_jobs_own_value_wins_over_the_matrix(tmp_path: Path) -> None:
    text = """\
defaults: {model: z-image}
matrix: {aspect_ratio: ["1:1", "16:9"]}
jobs:
  - {prompt: "both ratios"}
  - {prompt: "only square, made at {aspect_ratio}", aspect_ratio: "1:1"}
"""
    jobs, problems = read(write(tmp_path, "w.yaml", text))
    assert problems == []
    assert [(j.input["prompt"], j.input["aspect_ratio"]) for j in jobs] == [
        ("both ratios", "1:1"),
        ("both ratios", "16:9"),
        ("only square, made at 1:1", "1:1"),
    ]


def test_vars_scalars_substitute_and_lists_expand_only_where_used(tmp_path: Path) -> None:
    text = """\
defaults: {model: z-image, aspect_ratio: "1:1"}
vars:
  light: soft light
  style: [ink, oil]
jobs:
  - prompt: "a fox, {light}"
  - prompt: "a cat in {style}, {light}"
  - prompt: "braces {{stay}} literal"
"""
    jobs, problems = read(write(tmp_path, "v.yaml", text))
    assert problems == []
    assert [j.input["prompt"] for j in jobs] == [
        "a fox, soft light",
        "a cat in ink, soft light",
        "a cat in oil, soft light",
        "braces {stay} literal",
    ]


def test_unknown_placeholder_is_located_with_a_suggestion(tmp_path: Path) -> None:
    text = """\
defaults: {model: z-image, aspect_ratio: "1:1"}
vars: {subject: [a, b]}
jobs:
  - prompt: "fine {subject}"
  - prompt: "typo {subjct}"
  - prompt: "literal {json}"
"""
    jobs, problems = read(write(tmp_path, "u.yaml", text))
    assert len(jobs) == 2
    assert [where(p) for p in problems] == [("u.yaml", 5, "prompt"), ("u.yaml", 6, "prompt")]
    assert problems[0].got == "{subjct}" and problems[0].suggestion == "did you mean {subject}?"
    assert "{{json}}" in (problems[1].suggestion or "")


def test_repeat_global_and_per_job(tmp_path: Path) -> None:
    text = """\
defaults: {model: z-image, aspect_ratio: "1:1"}
repeat: 2
jobs:
  - {id: hero, prompt: a}
  - {prompt: b, repeat: 3}
  - {id: once, prompt: c, repeat: 1}
"""
    path = write(tmp_path, "r.yaml", text)
    jobs, problems = read(path)
    assert problems == []
    ids = [j.job_id for j in jobs]
    assert ids[:2] == ["hero-r1", "hero-r2"]
    assert [i.rsplit("-", 1)[1] for i in ids[2:5]] == ["r1", "r2", "r3"]
    assert len({i.rsplit("-", 1)[0] for i in ids[2:5]}) == 1
    assert ids[5] == "once"
    assert len({j.content_hash for j in jobs[2:5]}) == 1
    report = validate_manifest(path, catalog=CATALOG)
    assert (report.jobs, report.repeated) == (6, 3)


def test_bad_repeat_is_located(tmp_path: Path) -> None:
    text = "jobs:\n  - model: z-image\n    prompt: p\n    aspect_ratio: 1:1\n    repeat: lots\n"
    p = only_problem(read(write(tmp_path, "r.yaml", text))[1])
    assert where(p) == ("r.yaml", 5, "repeat")


def test_identical_jobs_without_ids_are_reported(tmp_path: Path) -> None:
    text = """\
defaults: {model: z-image, aspect_ratio: "1:1"}
jobs:
  - prompt: same
  - prompt: other
  - prompt: same
"""
    jobs, problems = read(write(tmp_path, "d.yaml", text))
    assert len(jobs) == 2
    p = only_problem(problems)
    assert where(p) == ("d.yaml", 5, None)
    assert "the same model and input as" in p.got and "d.yaml:3" in p.got
    assert "repeat" in (p.suggestion or "")


def test_jobs_from_reads_a_csv_next_to_the_yaml(tmp_path: Path) -> None:
    sub = tmp_path / "sets"
    sub.mkdir()
    write(sub, "prompts.csv", "id,prompt,aspect_ratio\na,a fox,\nb,a cat,16:9\nc,a bird,16-9\n")
    text = """\
defaults:
  model: z-image
  aspect_ratio: "1:1"
jobs_from: prompts.csv
"""
    jobs, problems = read(write(sub, "m.yaml", text))
    assert [(j.job_id, j.input["aspect_ratio"], j.source.line) for j in jobs] == [
        ("a", "1:1", 2),
        ("b", "16:9", 3),
    ]
    assert Path(jobs[0].source.file).name == "prompts.csv"
    assert jobs[0].columns == {"id": "a", "prompt": "a fox", "aspect_ratio": ""}
    assert where(only_problem(problems)) == ("prompts.csv", 4, "aspect_ratio")


def test_jobs_from_with_matrix(tmp_path: Path) -> None:
    write(tmp_path, "p.csv", "prompt\na fox\na cat\n")
    text = "defaults: {model: z-image}\nmatrix: {aspect_ratio: ['1:1', '9:16']}\njobs_from: p.csv\n"
    jobs, problems = read(write(tmp_path, "m.yaml", text))
    assert problems == []
    assert [(j.input["prompt"], j.input["aspect_ratio"]) for j in jobs] == [
        ("a fox", "1:1"),
        ("a fox", "9:16"),
        ("a cat", "1:1"),
        ("a cat", "9:16"),
    ]


def test_jobs_from_a_missing_file_is_located(tmp_path: Path) -> None:
    text = "defaults: {model: z-image}\njobs_from:\n  - nothere.csv\n  - bad.txt\n"
    _jobs, problems = read(write(tmp_path, "m.yaml", text))
    assert [where(p) for p in problems] == [("m.yaml", 3, "jobs_from"), ("m.yaml", 4, "jobs_from")]
    assert "not found" in problems[0].got


def test_a_default_no_job_uses_is_a_problem(tmp_path: Path) -> None:
    text = """\
defaults:
  model: z-image
  aspect_raito: "1:1"
jobs:
  - {prompt: p, aspect_ratio: "1:1"}
"""
    p = only_problem(read(write(tmp_path, "t.yaml", text))[1])
    assert where(p) == ("t.yaml", 3, "defaults.aspect_raito")
    assert p.suggestion == "did you mean 'aspect_ratio'?"


def test_a_matrix_key_no_job_uses_is_a_problem(tmp_path: Path) -> None:
    text = """\
defaults: {model: z-image, aspect_ratio: "1:1"}
matrix:
  subjects: [a, b]
jobs:
  - prompt: "no placeholder here"
"""
    jobs, problems = read(write(tmp_path, "t.yaml", text))
    assert len(jobs) == 1
    assert where(only_problem(problems)) == ("t.yaml", 3, "matrix.subjects")


def test_a_bad_default_is_one_problem_for_every_job(tmp_path: Path) -> None:
    text = """\
defaults:
  model: z-image
  aspect_ratio: "16-9"
matrix:
  subject: [a, b, c, d]
jobs:
  - prompt: "{subject}"
"""
    jobs, problems = read(write(tmp_path, "t.yaml", text))
    assert jobs == []
    p = only_problem(problems)
    assert (where(p), p.count) == (("t.yaml", 3, "aspect_ratio"), 4)
    assert "(affects 4 jobs; the first is shown)" in p.format()


def test_null_removes_a_default_and_input_nests(tmp_path: Path) -> None:
    text = """\
defaults: {model: kling-3.0/video, aspect_ratio: "16:9"}
jobs:
  - prompt: p
    aspect_ratio: null
    input:
      image_urls: [https://example.com/a.jpg]
      duration: 5
"""
    jobs, problems = read(write(tmp_path, "n.yaml", text))
    assert problems == []
    assert jobs[0].input == {
        "prompt": "p",
        "image_urls": ["https://example.com/a.jpg"],
        "duration": "5",
    }


def test_a_field_both_beside_and_under_input_is_a_problem(tmp_path: Path) -> None:
    text = "jobs:\n  - model: z-image\n    prompt: p\n    input:\n      prompt: q\n"
    _jobs, problems = read(write(tmp_path, "c.yaml", text))
    assert ("c.yaml", 5, "input.prompt") in [where(p) for p in problems]


def test_nested_object_lists_are_typed_by_their_item_fields(tmp_path: Path) -> None:
    text = """\
jobs:
  - model: kling-3.0/video
    multi_shots: true
    multi_prompt:
      - {prompt: 5, duration: 3}
      - {prompt: "wide", duration: "04"}
"""
    jobs, problems = read(write(tmp_path, "k.yaml", text))
    assert problems == []
    assert jobs[0].input["multi_prompt"] == [
        {"prompt": "5", "duration": 3},
        {"prompt": "wide", "duration": 4},
    ]


def test_bare_strings_are_prompts_and_a_top_level_list_is_jobs(tmp_path: Path) -> None:
    text = "- a fox\n- a cat\n"
    jobs, problems = read(write(tmp_path, "l.yaml", text), default_model="z-image")
    # z-image needs aspect_ratio: two located problems, one per job line.
    assert jobs == []
    assert [where(p) for p in problems] == [
        ("l.yaml", 1, "aspect_ratio"),
        ("l.yaml", 2, "aspect_ratio"),
    ]


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    text = (
        "jobs:\n  - model: z-image\n    prompt: first\n    aspect_ratio: 1:1\n    prompt: second\n"
    )
    _jobs, problems = read(write(tmp_path, "k.yaml", text))
    p = only_problem(problems)
    assert where(p) == ("k.yaml", 5, "prompt")
    assert "first at line 3" in p.got


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = "defaults: {model: z-image, aspect_ratio: '1:1'}\njob:\n  - prompt: p\n"
    _jobs, problems = read(write(tmp_path, "t.yaml", text))
    p = problems[0]
    assert where(p) == ("t.yaml", 2, "job")
    assert p.suggestion == "did you mean 'jobs'?"


def test_yaml_syntax_errors_are_located(tmp_path: Path) -> None:
    text = 'jobs:\n  - model: z-image\n    prompt: "unclosed\n  - model: x\n'
    p = only_problem(read(write(tmp_path, "s.yaml", text))[1])
    assert p.expected == "valid YAML" and p.source.line >= 3


def test_more_than_one_document_is_a_problem(tmp_path: Path) -> None:
    p = only_problem(read(write(tmp_path, "d.yaml", "jobs: []\n---\njobs: []\n"))[1])
    assert p.expected == "valid YAML" and p.source.line == 2


def test_a_scalar_document_is_a_problem(tmp_path: Path) -> None:
    p = only_problem(read(write(tmp_path, "s.yaml", "just text\n"))[1])
    assert p.expected.startswith("a mapping with jobs:")


def test_defaults_and_matrix_alone_make_jobs(tmp_path: Path) -> None:
    text = "defaults: {model: z-image, aspect_ratio: '1:1'}\nmatrix: {prompt: [a, b, c]}\n"
    jobs, problems = read(write(tmp_path, "o.yaml", text))
    assert problems == []
    assert [j.input["prompt"] for j in jobs] == ["a", "b", "c"]
    assert all(j.source.line == 2 for j in jobs)


def test_yaml_columns_show_the_expanded_job(tmp_path: Path) -> None:
    text = (
        "defaults: {model: z-image, aspect_ratio: 16:9}\n"
        "vars: {s: [x]}\njobs:\n  - {prompt: '{s}!', _tag: t1}\n"
    )
    jobs, problems = read(write(tmp_path, "c.yaml", text))
    assert problems == []
    assert jobs[0].columns == {
        "model": "z-image",
        "aspect_ratio": "16:9",
        "prompt": "x!",
        "_tag": "t1",
    }


def test_the_yaml_in_examples_readme_validates(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "examples" / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    write(tmp_path, "more-prompts.csv", "prompt\nfrom a csv\n")
    path = write(tmp_path, "readme.yaml", block)
    report = validate_manifest(path, catalog=CATALOG)
    assert report.ok, [p.format() for p in report.problems]
    # hero-shot + 2 subjects x 2 styles x 2 ratios + the bare string x 2 + the csv row x 2
    assert report.jobs == 13
