# The two commands of the README: `make demo` (main job) and `make test` (test suite).
# Both set everything up on a fresh machine: a virtualenv, torch pinned first (CPU wheel), the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
OUT ?= outputs/demo

.PHONY: install demo test bench clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, or a dependency's unpinned torch pulls the CUDA build
	$(PIP) install -q -c constraints.txt torch==2.13.0
	# the ROS 2 extra too: the bridge's end-to-end tests run over real DDS (loopback only)
	$(PIP) install -q -c constraints.txt -e '.[test,ros]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlnce demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/vlnce bench sim --json

clean:
	rm -rf $(VENV) outputs .pytest_cache
