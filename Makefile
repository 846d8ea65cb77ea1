# Every target sets up .venv on its own: a fresh machine needs only python3 (and root, or password-less sudo,
# where the FUSE 3 packages of scripts/system-packages.sh are missing).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv test lint protos demo bench clean

all: test

# System packages first (FUSE 3 for pyfuse3's build; only those missing, so a provisioned machine needs no root).
$(STAMP): pyproject.toml scripts/system-packages.sh
	bash scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## test: lint, type-check, check the import contracts, run the whole test suite (unit + multi-process e2e).
## One pytest worker per core (pytest-xdist), each test file on one worker so module fixtures start once;
## every test binds port 0 and keeps its processes and files in its own temporary folder.
## TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= auto
test: $(STAMP) lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy wire host guest attest tdxsim
	$(VENV)/bin/lint-imports --no-cache --no-logo

## protos: regenerate wire/v1 from protos/ with the pinned grpcio-tools.
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

## demo: the whole stack as processes: PCS, host, verifier, guests that attest; then legacy mode.
demo: $(STAMP)
	$(PY) -m tdxsim.demo

## bench: every benchmark suite in one table; each row is a ratio against a limit measured in the same run.
## The report (BENCHMARKS.md with plots) goes to bench-report/.
bench: $(STAMP)
	$(VENV)/bin/tdxsim bench --report bench-report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
