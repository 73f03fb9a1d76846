# deepres: make help lists the targets. The first target that needs Python creates .venv and installs the project.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test lint contract clean

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(INSTALLED)  ## create .venv and install the project with its dev tools

train: $(INSTALLED)  ## train one net: make train ARGS="model.depth=56 model.residual=false"
	$(PY) src/train.py $(ARGS)

test: $(INSTALLED)  ## run the test suite (what CI runs)
	$(PY) -m pytest -q $(ARGS)

lint: $(INSTALLED)  ## ruff
	$(VENV)/bin/ruff check .

contract: $(INSTALLED)  ## the shared cross-issue contract checks (../shared/contract)
	bash ../shared/contract/check.sh $(ARGS)

clean:  ## remove outputs/ and multirun/ (not .venv, not data/)
	rm -rf outputs multirun
