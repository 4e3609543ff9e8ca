# The two commands a newcomer needs: `make demo` and `make test`.
# Two environments, like two cluster types: .venv (platform: Spark 4, delta-rs, GE, Feast,
# MLflow) and .venv-train (training: Petastorm, pyarrow 14, torch, pyspark 3.5 for
# TorchDistributor). They share only the lake's Delta tables and the MLflow store.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TRAIN_VENV ?= .venv-train
TRAIN_PY := $(TRAIN_VENV)/bin/python
TRAIN_STAMP := $(TRAIN_VENV)/.installed-stamp
DEMO ?= demo

.PHONY: install train-env system-deps demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

$(TRAIN_STAMP): pyproject.toml constraints-train.txt requirements-train.txt
	test -x $(TRAIN_PY) || python3 -m venv $(TRAIN_VENV)
	$(TRAIN_PY) -m pip install --quiet --disable-pip-version-check -c constraints-train.txt -r requirements-train.txt
	$(TRAIN_PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(TRAIN_STAMP)

## install: both environments
install: $(STAMP) $(TRAIN_STAMP)

## train-env: only the training environment (.venv-train)
train-env: $(TRAIN_STAMP)

## demo: the whole chain on a small cohort (`cardiolake demo`): generate (with a bad-input corpus),
## ingest with gates, features, pretrain, align, teacher, students, evaluate, export, promote,
## bundle, score, monitor, lineage of one prediction; ends with one summary of where to look
demo: $(STAMP) $(TRAIN_STAMP)
	$(VENV)/bin/cardiolake demo --out $(DEMO)

## system-deps: the Debian tools the suite uses (dicom3tools, redis-server); says what to run
## when it cannot install them itself
system-deps:
	@bash scripts/system-deps.sh

## test: the whole suite (real Spark, Delta, DICOM tools, Redis, both environments); benchmarks
## are opt-in
test: system-deps $(STAMP) $(TRAIN_STAMP)
	$(VENV)/bin/python -m pytest
	$(TRAIN_PY) -m pytest tests/training/env

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy cardiolake pipelines expectations feature_repo

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/cohort_generation.py

clean:
	rm -rf $(DEMO) lake spark-warehouse .pytest_cache
