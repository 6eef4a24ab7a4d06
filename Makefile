# roost developer targets. Each one sets up what it needs: Debian packages (packaging/dev/system-deps.sh),
# a virtual environment in .venv and the pinned Python packages (requirements/constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.roost-installed
# Two workers fit the two-core CI machine; override with `make test PYTEST_ARGS=...`.
PYTEST_ARGS ?= -n 2
# roost supports Python 3.11 (Raspberry Pi OS bookworm) and 3.13 (Debian trixie). `make test` runs the whole
# suite on $(PYTHON), then again on the other one when it is installed (COMPAT_PYTHON= to skip).
COMPAT_PYTHON ?= $(shell for c in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13; do \
	$$c -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { echo $$c; break; }; done)
COMPAT_VENV  ?= .venv-compat
COMPAT_TESTS ?= tests

.PHONY: all setup demo test test-compat lint bench clean

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
	@$(MAKE) --no-print-directory test-compat

$(COMPAT_VENV)/.roost-installed: pyproject.toml requirements/constraints.txt
	@test -x $(COMPAT_VENV)/bin/python || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	@echo "roost: installing Python packages into $(COMPAT_VENV) ($(COMPAT_PYTHON))"
	@$(COMPAT_VENV)/bin/python -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[test,tpm]'
	@touch $@

test-compat:
ifeq ($(strip $(COMPAT_PYTHON)),)
	@echo "roost: no Python 3.13 here; the suite ran on $$($(PY) -V) only"
else
	@$(MAKE) --no-print-directory $(COMPAT_VENV)/.roost-installed
	@echo "roost: the suite again on $$($(COMPAT_VENV)/bin/python -V)"
	@$(COMPAT_VENV)/bin/python -m pytest $(PYTEST_ARGS) -q -p no:cacheprovider $(COMPAT_TESTS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "roost: pytest collected no tests" >&2; exit 1; fi; exit $$rc
endif

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

bench: $(STAMP)
	@$(PY) -m bench

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info .pytest_cache .ruff_cache
