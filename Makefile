# Two commands do all set-up: `make generate` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: generate check test list docs bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

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

# Speed and memory against mlx.nn.losses: a table, bench/results/bench.json and speedup.png.
bench: $(BENCH_STAMP)
	$(PY) -m generator.cli bench
