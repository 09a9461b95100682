# The two commands (see README.md):
#   make run        - set up a virtualenv and run the main job
#   make test       - set up a virtualenv and run ruff, mypy and the whole test suite
# and a quicker check while working:
#   make test-fast  - ruff, mypy and the tests not marked slow (`pytest -m "not slow"`: no
#                     study, Ray runtime, server or browser; a test whose call takes over
#                     2 s fails, see tests/fastguard.py; on a machine loaded by other work
#                     raise the limit: `INITSTUDY_FAST_LIMIT=6 make test-fast`)
# and the reproduction suite (studies/reproduce/, about 30 minutes on 2 cores):
#   make reproduce  - run it, write docs/results/ and the README's results section
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup run test test-fast lint typecheck pytest pytest-fast reproduce clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	$(BIN)/initstudy run studies/smoke.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

pytest-fast: setup
	$(BIN)/pytest -q -m "not slow"

test-fast: lint typecheck pytest-fast

reproduce: setup
	$(BIN)/initstudy suite studies/reproduce --out docs/results --readme README.md

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
