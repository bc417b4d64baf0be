# make run: set up and run the quickstart; make test: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokenmill-installed

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(STAMP)

run: install
	$(VENV)/bin/tokenmill run configs/quickstart.yaml --workdir work/quickstart

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf work
