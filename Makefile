# `make demo`: the whole pipeline on emulated APIs into an embedded PostgreSQL (docs/meltano.md).
# Needs only python3 (3.11+): everything else is installed into .venv and .venv-meltano.
PYTHON ?= python3
VENV := .venv
# e.g. make demo DEMO_ARGS="--events 20000 --new-events 1000"
DEMO_ARGS ?=

.PHONY: install lock dist meltano demo test lint typecheck meltano-settings docs-settings hub-definition clean

# Every version pinned (requirements/constraints.txt, refreshed by `make lock`), build
# dependencies included: CI installs what the last `make lock` resolved, not what PyPI serves
# that day. Reinstalled when a pyproject.toml or the pins change. The tap and the emulator (its
# own distribution, in emulator/) in one pip command, so the tap's `emulator` extra resolves
# to this checkout.
CONSTRAINTS := requirements/constraints.txt
PIP_INSTALL := $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	--constraint $(CONSTRAINTS)
$(VENV)/.installed: pyproject.toml emulator/pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) --build-constraint $(CONSTRAINTS) -e '.[test]' -e ./emulator
	touch $@

install: $(VENV)/.installed

# After changing a dependency (pyproject.toml, Meltano's version in scripts/pipeline.py, the
# loader's pip_url in meltano.yml): re-resolve and re-pin everything (scripts/lock.py).
lock: install
	$(PIP_INSTALL) uv
	$(VENV)/bin/python -m scripts.lock

# A release: sdist and wheel in dist/, checked as PyPI checks them (tests/test_release.py
# builds and checks the same in `make test`). The version comes from the git tag (vX.Y.Z).
dist: install
	rm -rf dist
	PIP_CONSTRAINT=$(CONSTRAINTS) $(VENV)/bin/python -m build
	$(VENV)/bin/python -m twine check --strict dist/*

# Meltano in .venv-meltano, the plugins in .meltano/ (then: .venv-meltano/bin/meltano run ...).
meltano: install
	$(VENV)/bin/python -m scripts.pipeline

demo: install
	$(VENV)/bin/python -m scripts.demo $(DEMO_ARGS)

# What CI runs (.ci/run): lint, type check, then every test, the Meltano + PostgreSQL
# end-to-end ones and the release build included, in TEST_WORKERS parallel processes (most
# tests wait on a subprocess or a socket, so more workers than cores pays). The end-to-end
# tests share one worker (tests/conftest.py).
TEST_WORKERS ?= 4
# Each run has its own pytest temp root: pytest keeps only the 3 newest runs under the shared
# /tmp/pytest-of-<user>, so two checkouts testing at once deleted each other's live PostgreSQL.
test: lint typecheck
	tmp=$$(mktemp -d /tmp/tap-events-tests.XXXXXX); \
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --basetemp=$$tmp; status=$$?; \
	rm -rf $$tmp; exit $$status

lint: install
	$(VENV)/bin/ruff check .

# mypy on tap_events/ (configured in pyproject.toml).
typecheck: install
	$(VENV)/bin/mypy

# After adding an API or a setting: regenerate meltano.yml's tap-events settings.
meltano-settings: install
	$(VENV)/bin/python -m scripts.meltano_settings --write

# After adding a setting: regenerate README.md's settings table and sample_config.json.
docs-settings: install
	$(VENV)/bin/python -m scripts.docs_settings --write

# After adding a setting or changing pyproject's metadata: regenerate the Meltano Hub definition.
hub-definition: install
	$(VENV)/bin/python -m scripts.hub_definition --write

# Removes what the demo and Meltano installed and stored (including Meltano's state).
clean:
	rm -rf .demo .meltano .venv-meltano
