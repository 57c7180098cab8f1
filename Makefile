# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# CPU by default; a GPU user sets e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_INDEX ?=
CORES ?= all
# 1: the demo's training jobs fork from one warm process with torch imported (src/tunevlseg/warm.py)
WARM ?= 1
BIN := $(VENV)/bin
# uv (fast) or pip: what installs the requirements into .venv (see $(BIN)/.installed)
INSTALLER ?= uv
UV_SPEC ?= uv==0.9.30
PIP := $(BIN)/python -m pip install -q --no-compile
UV := $(BIN)/python -m uv pip install -q --python $(BIN)/python
install = $(if $(filter uv,$(INSTALLER)),$(UV) $(1) || { echo "uv failed: installing with pip"; $(PIP) $(1); },$(PIP) $(1))

.PHONY: setup demo lint test test-fast docs report report-partial clean-results

# uv installs the pinned requirements (parallel downloads: ~8 s instead of pip's ~35 s); it does not read
# pip.conf, so when it fails (e.g. only a pip-configured mirror is reachable) pip installs them instead, and
# INSTALLER=pip skips uv. torch always comes from pip (TORCH_INDEX, or the wheel pip finds on this disk).
# Bytecode is compiled once at the end on every core (pip compiles serially: ~45 s more), skipping the
# packages' own test folders; a failure there (a file for a newer Python) leaves that file uncompiled.
$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(if $(filter uv,$(INSTALLER)),$(PIP) "$(UV_SPEC)")
	$(call install,-r requirements.txt -r requirements-dev.txt "$(TORCH_SPEC)")
	# test-only: the CLIP BPE vocabulary file it ships (never imported: it needs torchvision)
	$(call install,--no-deps "open-clip-torch==3.3.0")
	$(call install,--no-deps -e .)
	$(BIN)/python -m compileall -qq -j 0 -x '[/\\]tests?[/\\]' $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') || true
	touch $@

setup: $(BIN)/.installed

demo: setup
	TUNEVLSEG_WARM=$(WARM) $(BIN)/snakemake --cores $(CORES)
	$(BIN)/tunevlseg show-table results/tables/dice.md

# Static checks first (what CI runs before the tests): ruff's small rule set, then Snakemake's linter.
lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint --cores 1

test: lint
	$(BIN)/python -m pytest tests -q

# The inner loop: unit tests without the slow, subprocess and workflow tiers (pyproject.toml markers).
test-fast: setup
	$(BIN)/python -m pytest tests/unit -q -m "not slow and not subprocess and not workflow"

# The reference pages of docs/reference/ from the schema, the CLI parser and the registries (a test keeps them current).
docs: setup
	$(BIN)/python -m tunevlseg.docgen

# The HTML report needs every figure: run what is missing first.
report: setup
	TUNEVLSEG_WARM=$(WARM) $(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

# Whatever cells have finished (others "—"); safe to run while the grid runs.
report-partial: setup
	$(BIN)/snakemake --cores 1 report_partial
	$(BIN)/snakemake report_partial --report results/partial/report.html

clean-results:
	rm -rf results/* .snakemake
