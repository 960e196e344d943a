# `make repro`: set up .venv and run the whole pipeline; `make test`: set up and run the tests.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup repro test

setup: $(VENV)/.installed

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
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest
