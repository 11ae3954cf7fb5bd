# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROMTOOL := $(VENV)/bin/promtool

.PHONY: install demo test lint format bench services browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Keeps recon-demo.sqlite3 so that `recon web --demo` can show what the demo did.
demo: $(STAMP)
	$(BIN)/recon demo --keep

# The tests need the local PostgreSQL and RabbitMQ; `services` starts them if they are down.
test: $(STAMP) services $(PROMTOOL) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache recon.sqlite3*
