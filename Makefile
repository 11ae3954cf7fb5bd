# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
# Every install is from a lock file with hashes (requirements.lock for the product,
# requirements-dev.lock for the tools), so two installs a month apart get the same versions.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROMTOOL := $(VENV)/bin/promtool
# The shipped product: the wheel built from this checkout, installed with nothing else into a
# virtualenv of its own. `make test` runs the end-to-end tests against it, not the checkout.
DIST        := dist
SHIPPED     := .shipped-venv
SHIP_STAMP  := $(SHIPPED)/.installed-stamp

.PHONY: install demo test lint format bench chaos services browser clean lock wheel shipped \
	settings-docs

$(STAMP): pyproject.toml setup.py requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The demo keeps its database (recon.sqlite3): `recon audit ...` and `recon web` read it after.
demo: $(STAMP)
	$(BIN)/recon demo

# After a change to the dependencies in pyproject.toml: regenerate both locks (same versions
# where they overlap, since the dev lock is resolved from the product's plus the extras).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
		--quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
		--python-version 3.11 --quiet -o requirements-dev.lock

# build/ is setuptools' scratch folder: a stale copy there would put deleted files in the wheel.
wheel: $(STAMP)
	rm -rf build $(DIST)
	$(BIN)/python -m build --wheel --outdir $(DIST) . > /dev/null

shipped: wheel
	rm -rf $(SHIPPED)
	$(PYTHON) -m venv $(SHIPPED)
	$(SHIPPED)/bin/pip install --quiet --require-hashes -r requirements.lock
	$(SHIPPED)/bin/pip install --quiet --no-deps $(DIST)/*.whl
	touch $(SHIP_STAMP)

# The tests need the local PostgreSQL and RabbitMQ; `services` starts them if they are down.
# RECON_TEST_VENV points the end-to-end tests (worker, beat, migrate, demo subprocesses) at the
# installed wheel; RECON_TEST_WHEEL lets the packaging test check that wheel's contents.
test: $(STAMP) services $(PROMTOOL) browser shipped
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	RECON_TEST_VENV=$(abspath $(SHIPPED)) RECON_TEST_WHEEL="$(abspath $(wildcard $(DIST)/*.whl))" \
		$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# After a change to worker/settings.py: the README's configuration table and .env.example are
# written from the declaration (tests/test_env_example.py fails while they differ).
settings-docs: $(STAMP)
	$(BIN)/python -m tests.settings_docs

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

services:
	bash scripts/ensure-services

# promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/test_alert_rules.py).
$(PROMTOOL): | $(STAMP)
	bash scripts/install-promtool $(PROMTOOL)

# The browser test drives Debian's Chromium through Playwright (a browser download is not
# possible); installed here when it is missing, which needs root.
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
		|| { echo "chromium is missing: run 'apt-get install -y chromium' as root" >&2; exit 1; }

bench: $(STAMP) services
	$(BIN)/python -m bench

# The chaos suite (about 20 minutes; not part of `make test`): kills, outages, faults, garbage.
chaos: $(STAMP) services
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) $(SHIPPED) $(DIST) build .pytest_cache .ruff_cache .mypy_cache recon.sqlite3*
