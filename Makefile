# Two commands do all set-up: `make generate` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
TORCH_STAMP := $(VENV)/.torch
LM_STAMP := $(VENV)/.lm

.PHONY: generate check test list docs bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# torch (the `torch` extra, pinned) is the parity oracle of the tests. If it cannot be installed the torch
# tests skip with the reason, except where LOSSCC_REQUIRE_TORCH is set (CI), where they fail.
$(TORCH_STAMP): $(STAMP)
	if $(PY) -m pip install --quiet -e '.[dev,torch]'; then touch $(TORCH_STAMP); \
	else echo "warning: torch could not be installed; its parity tests will skip"; fi

# mlx-lm (the `lm` extra) runs the example that fine-tunes a llama with linear_cross_entropy. If it cannot
# be installed, that example's test skips with the reason.
$(LM_STAMP): $(STAMP)
	if $(PY) -m pip install --quiet -e '.[dev,lm]'; then touch $(LM_STAMP); \
	else echo "warning: mlx-lm could not be installed; the mlx-lm example's test will skip"; fi

generate: $(STAMP)
	$(PY) -m generator generate

check: $(STAMP)
	$(PY) -m generator check

list: $(STAMP)
	$(PY) -m generator list

docs: $(STAMP)
	$(PY) -m generator doc

# The suite runs on every core (pytest-xdist), a test file to a worker: module fixtures run once.
test: $(STAMP) $(TORCH_STAMP) $(LM_STAMP)
	$(PY) -m generator check
	$(PY) -m pytest -n auto --dist loadfile

# Speed and memory against mlx.nn.losses: a table, bench/results/bench.json and speedup.png.
bench: $(BENCH_STAMP)
	$(PY) -m generator bench
