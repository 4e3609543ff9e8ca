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

.PHONY: install train-env demo test lint bench clean

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

## demo: generate a small cohort (with its bad-input corpus), describe it, ingest it (gates included),
## pretrain and align the encoders (MLflow runs in the lake), serve features and embeddings,
## train the teacher and the students, print their evaluation, then export, promote and bundle
## the student for devices and score one mobile recording with the bundle's device script
demo: $(STAMP) $(TRAIN_STAMP)
	$(VENV)/bin/cardiolake cohort generate --patients 40 --seed 7 --labeled-fraction 0.5 --corrupt-fraction 0.25 --workers 2 --out $(DEMO)/landing
	$(VENV)/bin/cardiolake cohort describe $(DEMO)/landing
	$(VENV)/bin/cardiolake cohort plot $(DEMO)/landing --patient 1 --out $(DEMO)/patient_1.png
	$(VENV)/bin/cardiolake ingest --landing $(DEMO)/landing --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake train pretrain --lake $(DEMO)/lake --config training/configs/demo.yaml
	$(VENV)/bin/cardiolake train align --lake $(DEMO)/lake --config training/configs/demo.yaml
	$(VENV)/bin/cardiolake lake tables --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake features apply --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake features materialize --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake features training-set --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake features training-set --lake $(DEMO)/lake --entities ecg
	$(VENV)/bin/cardiolake train teacher --lake $(DEMO)/lake --config training/configs/demo.yaml
	$(VENV)/bin/cardiolake train student --lake $(DEMO)/lake --config training/configs/demo.yaml
	$(VENV)/bin/cardiolake train student --lake $(DEMO)/lake --config training/configs/demo.yaml --set distill=false
	@echo "demo evaluation: every labelled demo patient (in-sample; see README for an external cohort)"
	$(VENV)/bin/cardiolake evaluate --lake $(DEMO)/lake --split all --out $(DEMO)/evaluation
	$(VENV)/bin/cardiolake model export --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake model promote --lake $(DEMO)/lake || echo "promotion refused (see the gates above)"
	$(VENV)/bin/cardiolake model bundle --lake $(DEMO)/lake --alias champion --out $(DEMO)/bundle --overwrite \
	  || $(VENV)/bin/cardiolake model bundle --lake $(DEMO)/lake --alias challenger --out $(DEMO)/bundle --overwrite
	$(VENV)/bin/cardiolake model verify-bundle $(DEMO)/bundle --lake $(DEMO)/lake
	@echo "device bundle: $(DEMO)/bundle"
	@echo "score a mobile recording as a device would (numpy + onnxruntime only):"
	@echo "  $(PY) $(DEMO)/bundle/score_recording.py $$(ls $(DEMO)/landing/mobile/*.hea | head -1 | sed 's/\.hea$$//')"
	@$(PY) $(DEMO)/bundle/score_recording.py $$(ls $(DEMO)/landing/mobile/*.hea | head -1 | sed 's/\.hea$$//')
	$(VENV)/bin/cardiolake score --lake $(DEMO)/lake --alias champion --landing $(DEMO)/landing/mobile
	$(VENV)/bin/cardiolake monitor --lake $(DEMO)/lake || echo "drift past a threshold (see the figures above)"
	$(VENV)/bin/cardiolake lineage latest --lake $(DEMO)/lake
	@echo "MLflow runs (experiments cardiolake-pretrain, -align, -teacher, -student, -evaluate): $$($(VENV)/bin/cardiolake mlflow uri --lake $(DEMO)/lake)"
	@echo "open them with: $(VENV)/bin/cardiolake mlflow ui --lake $(DEMO)/lake"

## test: the whole suite (real Spark, Delta, DICOM tools, both environments); benchmarks are opt-in
test: $(STAMP) $(TRAIN_STAMP)
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
