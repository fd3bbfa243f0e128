# Two commands do all set-up: `make generate` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: generate check test list docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

generate: $(STAMP)
	$(PY) -m generator.cli generate

check: $(STAMP)
	$(PY) -m generator.cli check

list: $(STAMP)
	$(PY) -m generator.cli list

docs: $(STAMP)
	$(PY) -m generator.cli doc

test: $(STAMP)
	$(PY) -m generator.cli check
	$(PY) -m pytest
