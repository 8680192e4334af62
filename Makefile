# One-command setup: every target creates .venv when missing and installs core, every
# package under plugins/ and the third-party example under docs/examples/ in editable mode,
# with torch & co. pinned by constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PLUGIN_PROJECTS := $(wildcard plugins/*/pyproject.toml docs/examples/*/pyproject.toml)
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow lint format demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(PLUGIN_PROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt \
		--editable '.[dev]' $(foreach p,$(PLUGIN_PROJECTS),--editable $(dir $(p)))
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# End-to-end runs of a minute or more (the full demo); .ci/run runs them after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP)
	$(BIN)/mmplug demo --out runs/demo

# The fusion benchmark's data needs scikit-learn (the bench extra) and Debian's espeak-ng.
BENCH_STAMP := $(VENV)/.bench-installed
FUSION_SEEDS ?= 3
# every registered fusion with the default, next to the five variants; empty: the variants only
FUSIONS ?= gated,sum,attention,lmf,tensor,film,transformer,cross-attention

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[bench]'
	command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng)
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/text_batching.py
	$(BIN)/python benchmarks/training_step.py
	$(BIN)/python benchmarks/worker_payload.py
	$(BIN)/python benchmarks/feature_cache.py
	$(BIN)/python benchmarks/fusion_benchmark.py --seeds $(FUSION_SEEDS) --fusions '$(FUSIONS)'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
