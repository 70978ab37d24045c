# Everything runs from the project's own virtualenv; `make test` creates it on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest
