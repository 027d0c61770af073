# `make test` and `make demo` bootstrap .venv themselves (only when a pyproject changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.schemahub-installed
PACKAGES := $(sort $(dir $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml)))

.PHONY: test demo lint bootstrap clean dist

bootstrap: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "bootstrapping $(VENV) (core, venue plugins, example plugin, dev/sql/spark extras)..."
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,sql,spark]' $(foreach p,$(PACKAGES),-e $(p))
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

demo: $(STAMP)
	@bash scripts/demo.sh

# Wheels of the core and of every plugin (no dependencies) into $(DIST), offline: `pip install --find-links dist
# schemahub-binance` then installs from them. DIST_PYTHON needs pip and setuptools (the .venv has both).
DIST ?= dist
DIST_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))

dist:
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@$(DIST_PYTHON) -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w $(DIST) . $(PACKAGES)
	@ls $(DIST)

clean:
	rm -rf .schemahub .schemahub-demo
