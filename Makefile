# Everything installs into ./.venv from the project's own files; nothing by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: run the daemon on the example config, sending to a local sink.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## The tests: ruff (lint + format check), mypy --strict, pytest.
test: $(STAMP)
	$(BIN)/ruff check daemon tests bench scripts
	$(BIN)/ruff format --check daemon tests bench scripts
	$(BIN)/mypy --strict daemon/campaignd
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) state outbox .pytest_cache .mypy_cache .ruff_cache
