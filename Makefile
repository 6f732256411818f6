# The project's commands. Each one sets up the virtual environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
STAGE ?= dev

.PHONY: help venv test lint typecheck unit demo bootstrap deploy package clean

help:
	@echo "make demo       run the control plane against an embedded AWS (moto), no account needed"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bootstrap  create the AWS resources the code needs, where boto3 points"
	@echo "make deploy     chalice deploy --stage \$$STAGE (default dev)"

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check app.py chalicelib agent sim tests || \
		(echo "run: $(BIN)/ruff format app.py chalicelib agent sim tests" && false)

typecheck: $(STAMP)
	$(BIN)/mypy app.py chalicelib agent sim

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/handlers

test: lint typecheck
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python -m sim.demo

bootstrap: $(STAMP)
	$(BIN)/python -m chalicelib.bootstrap

deploy: $(STAMP)
	$(BIN)/chalice deploy --stage $(STAGE)

package: $(STAMP)
	$(BIN)/chalice package --stage $(STAGE) build/

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache
