# Two commands do everything: `make demo` and `make test` (README).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_DIR ?= var/demo
SUDO    := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: demo test lint bench deps system-deps browser-deps testdata clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	# face_recognition's metadata demands a dlib source build; dlib-bin already provides dlib.
	$(BIN)/pip install -q --no-deps 'face_recognition>=1.3,<2'
	touch $(STAMP)

deps: $(STAMP)

# Mosquitto (tests start their own on a free port), PostgreSQL's server binaries (the fleet's
# tests start their own cluster with initdb + pg_ctl), a CJK font (the pages' Chinese labels)
# and Chromium (browser tests), from Debian.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto mosquitto-clients; }
	@command -v mosquitto_pub >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto-clients; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; }
	@fc-list :lang=zh 2>/dev/null | grep -q . || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q fonts-wqy-microhei fontconfig; }
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; } || \
	  echo "chromium could not be installed: browser tests will be skipped"

# axe-core for the accessibility checks (tests/browser/test_accessibility.py), from npm
browser-deps:
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q nodejs npm; }
	@[ -f tests/browser/node_modules/axe-core/axe.min.js ] || \
	  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

testdata: $(STAMP)
	$(BIN)/python -m tests.data.gather

demo: $(STAMP) system-deps
	$(BIN)/shelf-sim demo --config examples/station.toml --dir $(DEMO_DIR)

# The suite includes a quick run of every benchmark (tests/test_bench_smoke.py). Two workers,
# one test file each at a time (docs/adr/0160): most tests wait on brokers, processes and
# browsers, so a 2-core machine runs two at once in about two thirds of the time.
TEST_WORKERS ?= 2
test: $(STAMP) system-deps browser-deps testdata
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check station firmware_stubs shelf_sim fleet tests bench
	$(BIN)/mypy station

bench: $(STAMP) system-deps testdata
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) var/demo .pytest_cache
