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
	$(VENV)/bin/lint-imports --no-cache

images: setup
	@$(PY) -m images.tiny.build --version 1 --out build/images/tiny-1 >/dev/null
	@$(PY) -m images.tiny.build --version 2 --out build/images/tiny-2 >/dev/null

# The no-guest tests are isolation-safe (their own ports, temporary directories,
# bridges and namespaces with random names, libvirt test:///default per
# process), so they run on 2 pytest-xdist workers, each module on one worker
# (its module-scoped fixtures set up once); the guest tests (real TCG guests on
# two cores) run serially after them. Meanwhile the Debian images the
# guest tests boot are built in the background (a cold build debootstraps for
# 1.5 to 3 minutes); the guest tests' own builds then find them made.
# GUEST_XDIST="-n 2 --dist loadgroup" runs the guest tests as two streams (each
# module's lab, and the fault scenarios' shared lab, stays on one worker: see
# tests/conftest.py); serial unless asked, as guests on two cores contend.
XDIST       ?= -n 2 --dist loadscope
GUEST_XDIST ?=
DURATIONS   := --durations=25

test: lint images
	@setsid $(PY) -m tests.debianimage >build/debian-images.log 2>&1 & images=$$!; \
	trap 'kill -- -$$images 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	echo "$(PYTEST) -q -rs $(XDIST) -m 'not guest' $(DURATIONS)"; \
	$(PYTEST) -q -rs $(XDIST) -m "not guest" $(DURATIONS); fast=$$?; \
	wait $$images; built=$$?; trap - EXIT; \
	echo "Debian images for the guest tests (exit $$built):"; sed 's/^/  /' build/debian-images.log; \
	echo "$(PYTEST) -q -rs $(GUEST_XDIST) -m guest $(DURATIONS)"; \
	$(PYTEST) -q -rs $(GUEST_XDIST) -m guest $(DURATIONS); guest=$$?; \
	[ $$fast -eq 0 ] && [ $$guest -eq 0 ]

test-fast: setup
	$(PYTEST) -q -rs $(XDIST) -m "not guest" $(DURATIONS)

# A local lab (a controller and two agents on this machine), a scale set of 6
# tiny guests, and an automatic rolling upgrade shown live; it keeps running
# until `make demo-down`.
demo: setup
	$(VENV)/bin/kvmss lab up

demo-down:
	$(VENV)/bin/kvmss lab down

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
