# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
# Every install is from a lock file with hashes (requirements.lock for the product,
# requirements-dev.lock for the tools, requirements-build.lock for what builds the wheel), so two
# installs a month apart get the same versions. `make demo` installs the product only; `make test`
# (and `make install`) add the tools on top.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PRODUCT_STAMP := $(VENV)/.product-stamp
STAMP  := $(VENV)/.installed-stamp
PROMETHEUS := $(VENV)/bin/prometheus
# Everything `make demo` leaves behind (its database, its log, the README examples' output).
DEMO_DIR := recon-demo
# The shipped product: the wheel built from this checkout, installed with nothing else into a
# virtualenv of its own. `make test` runs the end-to-end tests against it, not the checkout.
DIST        := dist
SHIPPED     := .shipped-venv
SHIP_STAMP  := $(SHIPPED)/.installed-stamp
SHIP_BASE   := $(SHIPPED)/.base-stamp
# Independent set-up steps (the two virtualenvs, Prometheus, the browser check) run two at a time:
# on this project's 2-core machines that takes about half a minute off `make test`.
MAKEFLAGS += --jobs=2

.PHONY: install demo test lint format bench chaos services browser clean lock wheel shipped profile \
	settings-docs

# The product: its lock, and the checkout installed in place (built with the locked setuptools,
# without build isolation, which would fetch it again unpinned).
$(PRODUCT_STAMP): pyproject.toml setup.py requirements.lock requirements-build.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-build.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(PRODUCT_STAMP)

# The tools on top (pytest, ruff, mypy, Playwright, ...): the same versions where they overlap.
$(STAMP): $(PRODUCT_STAMP) requirements-dev.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(STAMP)

install: $(STAMP)

# The demo needs the product only. It keeps its files in recon-demo/ (its database is the default
# RECON_DATABASE_URL, so `recon audit ...` and `recon web` read it after, from this folder).
demo: $(PRODUCT_STAMP)
	$(BIN)/recon demo

# After a change to the dependencies in pyproject.toml: regenerate both locks (same versions
# where they overlap, since the dev lock is resolved from the product's plus the extras).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
		--quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
		--python-version 3.11 --quiet -o requirements-dev.lock
	$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
		| $(BIN)/uv pip compile - --generate-hashes --universal --python-version 3.11 --quiet \
		--custom-compile-command "make lock" -o requirements-build.lock

# build/ is setuptools' scratch folder: a stale copy there would put deleted files in the wheel.
# Built as the Dockerfile builds it: the locked setuptools, no build isolation.
wheel: $(STAMP)
	rm -rf build $(DIST)
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(DIST) .

# The shipped product's dependencies need nothing of .venv, so they install beside it (make runs
# two recipes at a time, see MAKEFLAGS above); the wheel goes in once it is built, replacing any
# earlier one of the same version.
$(SHIP_BASE): requirements.lock
	rm -rf $(SHIPPED)
	$(PYTHON) -m venv $(SHIPPED)
	$(SHIPPED)/bin/pip install --quiet --require-hashes -r requirements.lock
	touch $(SHIP_BASE)

shipped: wheel $(SHIP_BASE)
	$(SHIPPED)/bin/pip install --quiet --no-deps --force-reinstall $(DIST)/*.whl
	touch $(SHIP_STAMP)

# The tests need the local PostgreSQL and RabbitMQ; `services` starts them if they are down.
# RECON_TEST_VENV points the end-to-end tests (worker, beat, migrate, demo subprocesses) at the
# installed wheel; RECON_TEST_WHEEL lets the packaging test check that wheel's contents.
# The tests mostly wait on servers and subprocesses, so pytest runs two test files at a time
# (pytest-xdist; each of its processes makes its own database, vhost and sandbox), and mypy beside
# them; mypy's report is printed after pytest's, and either failing fails the target.
TEST_PROCESSES ?= 2
test: $(STAMP) services $(PROMETHEUS) browser shipped
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/mypy > .mypy-report 2>&1 & mypy=$$!; \
	RECON_TEST_VENV=$(abspath $(SHIPPED)) RECON_TEST_WHEEL="$(abspath $(wildcard $(DIST)/*.whl))" \
		$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile; tests=$$?; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat .mypy-report; rm -f .mypy-report; \
	test $$tests -eq 0 && test $$typed -eq 0

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

# promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/deploy/test_alert_rules.py);
# the prometheus server proves the dashboard's queries (tests/deploy/test_dashboard.py).
$(PROMETHEUS): | $(STAMP)
	bash scripts/install-prometheus $(BIN)

# The browser test drives Debian's Chromium through Playwright (a browser download is not
# possible); installed here when it is missing, which needs root.
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
		|| { echo "chromium is missing: run 'apt-get install -y chromium' as root" >&2; exit 1; }

bench: $(STAMP) services
	$(BIN)/python -m bench

# Phase 1 under py-spy (issue 14): a flame graph and the top frames in bench/results/profile*.
# PROFILE_ORDERS=5000 for the benchmark's full size.
PROFILE_ORDERS ?= 2000
profile: $(STAMP) services
	$(BIN)/python -m bench.profile --orders $(PROFILE_ORDERS)

# The chaos suite (about 20 minutes; not part of `make test`): kills, outages, faults, garbage.
chaos: $(STAMP) services
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) $(SHIPPED) $(DIST) build .pytest_cache .ruff_cache .mypy_cache $(DEMO_DIR)
