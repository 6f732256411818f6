# The project's commands. Each one sets up the virtual environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
STAGE ?= dev
STACK ?= jibri-autoscaler-$(STAGE)
MERGE_TEMPLATE := .chalice/resources.yaml

.PHONY: help venv test lint typecheck template unit demo bootstrap deploy package clean

help:
	@echo "make demo       run the control plane against an embedded AWS (moto), no account needed"
	@echo "make test       lint, type-check, package and cfn-lint the template offline, run the whole test suite"
	@echo "make template   package every stage offline (no AWS, no downloads) into build/ci/ and cfn-lint it"
	@echo "make package    chalice package --stage \$$STAGE (default dev) with $(MERGE_TEMPLATE) into build/\$$STAGE"
	@echo "make deploy     package, upload (DEPLOY_BUCKET=...) and deploy the stack \$$STACK with the aws CLI;"
	@echo "                PARAMETERS='AutoScalingGroupName=... ...' are passed to the stack (template.md)"
	@echo "make bootstrap  create the table, bucket and topics without CloudFormation, where boto3 points"

# pip stays below 26.3: chalice 1.34 (which packages the app with pip) requires it.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip<26.3"
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

template: $(STAMP)
	for stage in dev prod; do \
		$(BIN)/python tests/deploy/chalice_package.py --stage $$stage --out build/ci/$$stage && \
		$(BIN)/cfn-lint build/ci/$$stage/sam.yaml || exit 1; \
	done

test: lint typecheck
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python -m sim.demo

bootstrap: $(STAMP)
	$(BIN)/python -m chalicelib.bootstrap

package: $(STAMP)
	rm -rf build/$(STAGE)
	$(BIN)/chalice package --stage $(STAGE) --merge-template $(MERGE_TEMPLATE) build/$(STAGE)

# The policy files name the stack's resources with CloudFormation functions, so the
# stack is deployed from the packaged template, not with `chalice deploy`.
deploy: package
	test -n "$(DEPLOY_BUCKET)" || (echo "set DEPLOY_BUCKET to an S3 bucket for the code" && false)
	aws cloudformation package --template-file build/$(STAGE)/sam.yaml --s3-bucket $(DEPLOY_BUCKET) \
		--output-template-file build/$(STAGE)/packaged.yaml
	aws cloudformation deploy --template-file build/$(STAGE)/packaged.yaml --stack-name $(STACK) \
		--capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --parameter-overrides $(PARAMETERS)

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache
