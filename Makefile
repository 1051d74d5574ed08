# Two entry points (README): `make demo` and `make test`. Each creates/reuses .venv, installs the pinned
# dependencies (torch + torchvision pinned together first, so pip never picks another build), then runs:
# `make demo` the core only (`pip install fundus-vlp`), `make test` every extra plus the test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DEMO_STAMP := $(VENV)/.installed-core-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser demo test test-heavy test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP) $(DEMO_STAMP)

# the demo needs only the core (training, zero-/few-shot, linear probe): no extra
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e .
	rm -f $(VENV)/.installed-core-*
	touch $(DEMO_STAMP)

setup: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/fundus-vlp demo

# The web app's browser test drives the system Chromium; install the OS package when we may (root + apt-get).
# Elsewhere the test reports that no browser was found and is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	      echo "make: could not install chromium; the web app browser test will be skipped"; \
	  else echo "make: chromium not found (needs root + apt-get to install); the web app browser test will be skipped"; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# real-size importer parity (ViT-L, ViT-B/16) and the benchmark scripts' smoke runs: CI runs them after `make test`
test-heavy: $(STAMP)
	$(BIN)/python -m pytest -q -m heavy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
