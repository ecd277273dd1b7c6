# edgesim: every target creates .venv with the machine's python3 and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per install set and pyproject.toml version: the demo installs the package alone, tests add the test extras.
CKSUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(CKSUM)
STAMP := $(VENV)/.installed-test-$(CKSUM)
BENCH_STAMP := $(VENV)/.installed-bench-$(CKSUM)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench apt-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	rm -f $(VENV)/.installed-run-* && touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-run-* $(VENV)/.installed-test-* && touch $@ $(RUN_STAMP)

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $@ $(STAMP) $(RUN_STAMP)

# Debian packages the tests and benchmarks drive, and nothing they recommend: the mosquitto clients (and broker, as
# a reference), and Chromium for the dashboard's browser tests.
apt-deps:
	@if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients chromium; \
	fi

demo: $(RUN_STAMP)
	$(BIN)/edgesim demo --edge

test: $(STAMP) apt-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check gateway devices mqttwire tests bench
	$(BIN)/mypy gateway devices mqttwire
	$(BIN)/lint-imports --no-cache

bench: $(BENCH_STAMP) apt-deps
	$(BIN)/python bench/broker.py
	$(BIN)/python bench/shadow.py
	$(BIN)/python bench/rules.py
	$(BIN)/python bench/sinks.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/dashboard.py

clean:
	rm -rf $(VENV) .edgesim .pytest_cache .mypy_cache .ruff_cache
