# The two commands a facility technician needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
APT_PACKAGES := mosquitto chromium systemd

.PHONY: demo test system-packages clean

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

test: $(VENV)/.test-installed system-packages
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
