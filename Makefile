# make run: set up and run the quickstart; make test: set up and run the tests (what CI runs).
# make test-fast: the unit tests (tests/test_*.py, no Ray, no MLflow server; under 2 min); make bench: the benchmarks;
# make bench-peers: tokenmill, datatrove, NeMo Curator (CPU) and data-juicer on one corpus (each peer in its own venv
# under work/bench/peers, made from the registries on first use), and a pipeline's fixed cost by phase;
# make bench-ablation: the real ablation of docs/ablations.md (12 proxy training runs: about 2 hours on 2 cores).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokenmill-installed
DEV_STAMP := $(VENV)/.tokenmill-dev-installed
BENCH_STAMP := $(VENV)/.tokenmill-bench-installed

.PHONY: install install-dev run test test-fast lint bench bench-peers bench-ablation clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(STAMP)

install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

run: install
	$(VENV)/bin/tokenmill run configs/quickstart.yaml --workdir work/quickstart

test: install-dev
	$(PY) -m pytest -q --durations=40 tests

test-fast: install-dev
	$(PY) -m pytest -q -m "not slow" tests --ignore=tests/integration

lint: install-dev
	$(PY) -m pyflakes pipelines model orchestration benchmarks tests

bench: $(BENCH_STAMP)
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_dedup.py
	$(PY) benchmarks/bench_filters.py --json benchmarks/results/filters.json
	$(PY) benchmarks/bench_eval.py --json benchmarks/results/eval.json
	$(PY) benchmarks/bench_remote_shards.py --json benchmarks/results/remote_shards.json
	$(PY) benchmarks/bench_memory.py --json benchmarks/results/memory.json
	$(PY) benchmarks/bench_train.py --json benchmarks/results/train.json
	$(PY) benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json

bench-peers: $(BENCH_STAMP)
	$(PY) benchmarks/bench_peers.py --json benchmarks/results/peers.json
	$(PY) benchmarks/bench_startup.py --json benchmarks/results/startup.json

bench-ablation: $(STAMP)
	$(PY) benchmarks/bench_ablation.py --json benchmarks/results/ablation.json

clean:
	rm -rf work
