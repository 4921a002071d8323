# kvmss: `make demo` runs the main job, `make test` runs the whole suite.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST  := $(VENV)/bin/pytest

.PHONY: setup test test-fast lint images demo demo-down clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check kvmss hostagent controller tests bench images vagrant
	$(VENV)/bin/ruff format --check kvmss hostagent controller tests bench images vagrant
	$(VENV)/bin/mypy

images: setup
	@$(PY) -m images.tiny.build --version 1 --out build/images/tiny-1 >/dev/null
	@$(PY) -m images.tiny.build --version 2 --out build/images/tiny-2 >/dev/null

test: lint images
	$(PYTEST) -q -rs

test-fast: setup
	$(PYTEST) -q -rs -m "not guest"

# A local lab (a controller and two agents on this machine), a scale set of 6
# tiny guests, and an automatic rolling upgrade shown live; it keeps running
# until `make demo-down`.
demo: setup
	$(VENV)/bin/kvmss lab up

demo-down:
	$(VENV)/bin/kvmss lab down

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
