"""`--help` and `status` start light: the CLI's import pulls in none of the heavy
libraries a run needs (0.3 s of `--help` went to importing them)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "pydantic", "httpx", "PIL", "numpy", "pyarrow", "starlette", "jinja2")


def imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    modules: list[str] = json.loads(out.splitlines()[-1])
    return modules


def test_importing_the_cli_imports_nothing_heavy() -> None:
    modules = imported_after("import liangxin_batch.cli")
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert heavy == []
    assert "importlib.metadata" not in modules, "the version is read when asked for"


def test_the_package_loads_a_public_name_when_it_is_used() -> None:
    modules = imported_after("import liangxin_batch; liangxin_batch.RunSettings")
    assert "httpx" not in modules and "pydantic" not in modules
    modules = imported_after("import liangxin_batch; liangxin_batch.LiangXinClient")
    assert "httpx" in modules
