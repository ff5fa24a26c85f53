# procvision: `make demo` and `make test` work on a fresh machine (they set themselves up).
SHELL := /bin/bash
PY ?= python3
# Use the active virtual environment if there is one, else a local .venv.
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
BIN := $(VENV)/bin
STAMP := $(VENV)/.procvision-installed
APT_PACKAGES := dataset-fashion-mnist libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1
# procvision serve's browser test (headless Chromium driven by selenium)
APT_PACKAGES += chromium chromium-driver

.PHONY: setup system-deps test lint format demo bench clean

system-deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	    || echo "warning: could not install$$missing (GLSL and Fashion-MNIST tests will say so)"; fi; \
	else echo "note: not root or no apt-get; skipping Debian packages ($(APT_PACKAGES))"; fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,glsl,serve]'
	@touch $(STAMP)

setup: system-deps $(STAMP)

test: setup
	$(BIN)/ruff check procvision tests scripts
	$(BIN)/python -m pytest -q --durations=15

lint:
	$(BIN)/ruff check procvision tests scripts
	$(BIN)/ruff format --check procvision tests scripts

format:
	$(BIN)/ruff format procvision tests scripts
	$(BIN)/ruff check --fix procvision tests scripts

demo: setup
	$(BIN)/python scripts/demo.py --out demo_out

reproduce-small: setup
	$(BIN)/python scripts/reproduce_small.py --out results/small

bench: setup
	$(BIN)/python scripts/bench_generate.py
	$(BIN)/python scripts/bench_memory.py
	$(BIN)/python scripts/bench_privacy.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_eval.py
	$(BIN)/python scripts/bench_lock.py
	$(BIN)/python scripts/bench_segmentation.py
	$(BIN)/python scripts/bench_serve.py

clean:
	rm -rf demo_out lightning_logs .pytest_cache
