# The README's two commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
DEMO_OUT ?= demo-out

.PHONY: demo test test-fast lint typecheck check bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A fresh demo each time: on a kept folder `demo` would resume the last one (its
# simulator keeps its tasks in DEMO_OUT/.simulator/).
demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(PY) -m liangxin_batch demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m ruff check liangxin_batch tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The edit loop: the suite without the slow (subprocess, real-socket, fuzz) and browser tests.
test-fast: $(STAMP)
	$(PY) -m ruff check liangxin_batch tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow and not browser"

lint: $(STAMP)
	$(PY) -m ruff check liangxin_batch tests bench
	$(PY) -m ruff format --check liangxin_batch tests bench

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/bench_manifest.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .mypy_cache .ruff_cache
