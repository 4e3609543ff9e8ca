# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## demo: generate a small cohort (with its bad-input corpus), describe it, ingest it (gates included), serve features
demo: $(STAMP)
	$(VENV)/bin/cardiolake cohort generate --patients 40 --seed 7 --corrupt-fraction 0.25 --workers 2 --out $(DEMO)/landing
	$(VENV)/bin/cardiolake cohort describe $(DEMO)/landing
	$(VENV)/bin/cardiolake cohort plot $(DEMO)/landing --patient 1 --out $(DEMO)/patient_1.png
	$(VENV)/bin/cardiolake ingest --landing $(DEMO)/landing --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake lake tables --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake features apply --lake $(DEMO)/lake
	$(VENV)/bin/cardiolake features materialize --lake $(DEMO)/lake

## test: the whole suite (real Spark, Delta, DICOM tools); benchmarks are opt-in
test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy cardiolake pipelines expectations feature_repo

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/cohort_generation.py

clean:
	rm -rf $(DEMO) lake spark-warehouse .pytest_cache
