# The two commands a facility technician needs: `make demo` and `make test`.
# A developer's everyday one: `make check` (lint, types, fast tests).
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
APT_PACKAGES := mosquitto chromium systemd
FAST_TESTS := not slow and not browser and not broker

.PHONY: demo test check lint system-packages clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# The demo needs the device and server parts only (no torch).
$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[device,server]'
	touch $@

# Tests need everything, with torch pinned to the CPU wheel.
$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,train,device,server]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || [ "$$(id -u)" != 0 ] || \
	  { echo "installing Debian package: mosquitto"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto; }
	$(VENV)/bin/mgs-server demo

# Mosquitto (broker for the MQTT tests), Chromium (browser tests) and systemd-analyze (unit
# tests) come from Debian; they are installed only when missing and only when we are root.
system-packages:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run: sudo apt-get install -y$$missing); tests that need them will be skipped"; \
	  fi; \
	fi

# ruff (lint and format, configured in pyproject.toml) over everything, mypy on mgs_core/ and device/.
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Lint and the tests that need no broker, browser or end-to-end run (markers in pyproject.toml).
check: lint
	$(PY) -m pytest -q -p no:cacheprovider -m "$(FAST_TESTS)"

test: lint system-packages
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
