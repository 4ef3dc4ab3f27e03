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

## The tests: system services they talk to (root on Debian), ruff (lint + format check),
## mypy --strict, the import contracts (layers), pytest. A suite whose service is still missing
## is named in one loud line at the end; under CI=true it fails the run.
test: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then bash .ci/system-deps.sh; \
	else echo "make test: not root on Debian — PostgreSQL, Dovecot, Chromium and systemd-analyze must be installed already (see README)"; fi
	$(BIN)/ruff check daemon tests bench scripts
	$(BIN)/ruff format --check daemon tests bench scripts
	$(BIN)/mypy --strict daemon/campaignd
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build state outbox .pytest_cache .mypy_cache .ruff_cache
