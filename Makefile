# roost developer targets. Each one sets up what it needs: Debian packages (packaging/dev/system-deps.sh),
# a virtual environment in .venv and the pinned Python packages (requirements/constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.roost-installed
# Two workers fit the two-core CI machine; override with `make test PYTEST_ARGS=...`.
PYTEST_ARGS ?= -n 2

.PHONY: all setup demo test lint bench clean

all: test

$(STAMP): pyproject.toml requirements/constraints.txt packaging/dev/system-deps.sh
	@packaging/dev/system-deps.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "roost needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@echo "roost: installing Python packages into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[test,tpm]'
	@touch $@

setup: $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/roost-sim demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	@# pytest exits 5 when it collected nothing: a broken run, never a pass.
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "roost: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

bench: $(STAMP)
	@$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
