"""The manifest fingerprint that lets a resume skip validation and sync."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from liangxin_batch.catalog._catalog import Catalog, default_catalog
from liangxin_batch.manifest._fingerprint import manifest_fingerprint, stored_models, with_models


def fp(path: Path, catalog: Catalog | None = None, **kw: object) -> str | None:
    options: dict[str, object] = {"default_model": None, "allow_outside": False, "version": "1"}
    options.update(kw)
    return manifest_fingerprint(path, catalog=catalog or default_catalog(), **options)  # type: ignore[arg-type]


def test_the_same_bytes_give_the_same_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,model,prompt\na,z-image,x\n", encoding="utf-8")
    assert fp(path) == fp(path)


def test_an_edit_that_keeps_size_and_mtime_is_still_a_change(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,model,prompt\na,z-image,x\n", encoding="utf-8")
    before = fp(path)
    info = path.stat()
    path.write_text("id,model,prompt\na,z-image,y\n", encoding="utf-8")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert fp(path) != before


def test_catalog_options_and_version_are_part_of_it(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,model,prompt\na,z-image,x\n", encoding="utf-8")
    catalog = default_catalog()
    spec = catalog.models["z-image"]
    other = Catalog({**catalog.models, "z-image": replace(spec, typical_seconds=99.0)})
    base = fp(path, catalog)
    assert fp(path, other) != base
    assert fp(path, default_model="z-image") != base
    assert fp(path, allow_outside=True) != base
    assert fp(path, version="2") != base


def test_an_unreadable_manifest_has_none(tmp_path: Path) -> None:
    assert fp(tmp_path / "missing.csv") is None


def test_a_manifest_that_may_name_other_files_has_none(tmp_path: Path) -> None:
    """YAML and JSON manifests may read `jobs_from` files: always read again."""
    for name in ("m.yaml", "m.yml", "m.json"):
        path = tmp_path / name
        path.write_text("jobs_from: prompts.csv\n", encoding="utf-8")
        assert fp(path) is None


def test_with_models_only_their_specs_count(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,model,prompt\na,z-image,x\n", encoding="utf-8")
    catalog = default_catalog()

    def changed(model: str) -> Catalog:
        spec = replace(catalog.models[model], typical_seconds=99.0)
        return Catalog({**catalog.models, model: spec}, catalog.credit_usd)

    stored = with_models(fp(path, catalog), catalog, ["z-image"])
    assert stored_models(stored) == ["z-image"]
    assert fp(path, changed("nano-banana-pro"), models=["z-image"]) == stored
    assert fp(path, changed("z-image"), models=["z-image"]) != stored
    assert fp(path, catalog) != stored, "a state without the models list: read again"
