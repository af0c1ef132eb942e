from __future__ import annotations

import types

import liangxin_batch


def test_all_is_exactly_the_sorted_public_names() -> None:
    public = {
        n
        for n in dir(liangxin_batch)
        if not n.startswith("_") and not isinstance(getattr(liangxin_batch, n), types.ModuleType)
    } | {"__version__"}
    public -= {"annotations"}
    assert liangxin_batch.__all__ == sorted(liangxin_batch.__all__, key=str)
    assert set(liangxin_batch.__all__) == public


def test_public_objects_show_the_public_module() -> None:
    assert liangxin_batch.ConfigError.__module__ == "liangxin_batch"
    assert liangxin_batch.run_batch.__module__ == "liangxin_batch"
