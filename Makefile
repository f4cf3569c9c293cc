# CityGW: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := mosquitto influxdb victoria-metrics postgresql chromium chromium-driver fuse3 e2fsprogs
SYSTEM_TOOLS := python3-venv python3-dev gcc iproute2
# The suite mostly waits on real services (outage tests run for minutes): three workers share 2 cores well.
TEST_WORKERS ?= 3

.PHONY: demo test venv system-deps services lint typecheck unit bench clean

## demo: set up and run the whole system on this machine, no external service needed
demo: venv
	$(BIN)/citygw demo

## test: install what the tests need (Debian's mosquitto, influxdb, victoria-metrics, postgresql, chromium, fuse3, e2fsprogs) and run the suite
test: venv services lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --durations=10

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

system-deps:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_TOOLS)

## services: Debian's Mosquitto, InfluxDB 1.x, VictoriaMetrics, PostgreSQL and Chromium (tests start their own instances), and fuse3 + e2fsprogs for the power-cut tests
services:
	@missing=""; \
	for pkg in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m 'not integration'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
