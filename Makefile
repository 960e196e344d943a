# `make repro`: set up .venv and run the whole pipeline; `make test`: set up and run the tests;
# `make test-fast`: the same without the end-to-end tests (the edit loop).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

# pytest-xdist workers: the three Ray parts mostly wait on Ray, so 5 workers keep 2 cores busy
# (docs/tests.md has the times). Modules stay whole on one worker: their shared repositories are built once.
# Without them (test-fast) every worker computes: one per core.
TEST_WORKERS ?= 5
FAST_WORKERS ?= 2
XDIST = --dist loadscope --no-loadscope-reorder

.PHONY: setup repro test test-fast

# The page `dvc plots show` and `dvc plots diff` fill (.dvc/config: plots.html_template), with Vega,
# Vega-Lite and vega-embed inlined so it renders offline: pinned npm tarballs, sha512-checked (docs/tracking.md).
PLOTS_PAGE := dvc_plots_template/offline.html

setup: $(VENV)/.installed $(PLOTS_PAGE)

$(PLOTS_PAGE): dvc_plots_template/build.py dvc_plots_template/page.html
	$(PYTHON) dvc_plots_template/build.py $@

# Re-installs when pyproject.toml changes. torch/torchvision are pinned in pyproject.toml.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
	@echo "Report: plots/report.md   Figures: plots/   Metrics: metrics/   (fashionbench compare, dvc plots show)"
	@$(BIN)/python -m fashionbench.tracking

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) $(XDIST)

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(FAST_WORKERS) $(XDIST) -m "not slow"
