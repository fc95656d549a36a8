# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-unit check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[all,dev]' 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/finalmile demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q

test-unit: $(STAMP)
	$(PY) -m pytest -m unit -q

check: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

bench: $(STAMP)
	$(PY) bench/runtimes.py

clean:
	rm -rf $(VENV) .finalmile
