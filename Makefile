# Two front doors: `make localnet` runs the whole network, `make test` runs the tests.
# Both build .venv first (idempotent: a stamp file skips reinstalling when nothing changed).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup localnet test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $(STAMP)

localnet: setup
	$(PY) scripts/localnet.py $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ''

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
