# `make demo`: the whole pipeline on emulated APIs into an embedded PostgreSQL (docs/meltano.md).
# Needs only python3 (3.11+): everything else is installed into .venv and .venv-meltano.
PYTHON ?= python3
VENV := .venv
# e.g. make demo DEMO_ARGS="--events 20000 --new-events 1000"
DEMO_ARGS ?=

.PHONY: install meltano demo test lint meltano-settings docs-settings clean

# Reinstalled when a pyproject.toml changes. The tap and the emulator (its own distribution,
# in emulator/) in one pip command, so the tap's `emulator` extra resolves to this checkout.
$(VENV)/.installed: pyproject.toml emulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-e '.[test]' -e ./emulator
	touch $@

install: $(VENV)/.installed

# Meltano in .venv-meltano, the plugins in .meltano/ (then: .venv-meltano/bin/meltano run ...).
meltano: install
	$(VENV)/bin/python -m scripts.pipeline

demo: install
	$(VENV)/bin/python -m scripts.demo $(DEMO_ARGS)

# What CI runs (.ci/run): lint, then every test, the Meltano + PostgreSQL end-to-end one included.
test: lint
	$(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# After adding an API or a setting: regenerate meltano.yml's tap-events settings.
meltano-settings: install
	$(VENV)/bin/python -m scripts.meltano_settings --write

# After adding a setting: regenerate README.md's settings table and sample_config.json.
docs-settings: install
	$(VENV)/bin/python -m scripts.docs_settings --write

# Removes what the demo and Meltano installed and stored (including Meltano's state).
clean:
	rm -rf .demo .meltano .venv-meltano
