# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# CPU by default; a GPU user sets e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_INDEX ?=
CORES ?= all
BIN := $(VENV)/bin

.PHONY: setup demo lint test report report-partial clean-results

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt "$(TORCH_SPEC)"
	# test-only: the CLIP BPE vocabulary file it ships (never imported: it needs torchvision)
	$(BIN)/python -m pip install -q --no-deps "open-clip-torch==3.3.0"
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/tunevlseg show-table results/tables/dice.md

# Static checks first (what CI runs before the tests): ruff's small rule set, then Snakemake's linter.
lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint --cores 1

test: lint
	$(BIN)/python -m pytest tests -q

# The HTML report needs every figure: run what is missing first.
report: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

# Whatever cells have finished (others "—"); safe to run while the grid runs.
report-partial: setup
	$(BIN)/snakemake --cores 1 report_partial
	$(BIN)/snakemake report_partial --report results/partial/report.html

clean-results:
	rm -rf results/* .snakemake
