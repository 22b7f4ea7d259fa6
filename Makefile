# yibao-gateway: every set-up step a fresh machine needs lives here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REGION ?= region
PYTEST_FLAGS ?=

.PHONY: run test soak bench bench-core bench-catalogue bench-journal bench-memory bench-overload ops-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's prometheus (with promtool) for the metrics scrape and alert-rule tests.
# Best effort: the tests that need it say clearly why they skip when it cannot be installed.
ops-tools:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq >/dev/null 2>&1; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1) \
	    || echo "ops-tools: could not install Debian's prometheus; its tests will skip"; }

$(REGION)/gateway.toml: | $(STAMP)
	$(BIN)/yibao-gateway init --out $(REGION) --profile small

run: $(STAMP) $(REGION)/gateway.toml
	$(BIN)/yibao-gateway serve --config $(REGION)/gateway.toml

test: $(STAMP) ops-tools
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_FLAGS)

soak: $(STAMP) ops-tools
	$(BIN)/python -m pytest -m slow $(PYTEST_FLAGS)

bench-core: $(STAMP)
	$(BIN)/python -m gateway.bench_core

bench-catalogue: $(STAMP)
	$(BIN)/python -m gateway.bench_catalogue

bench-journal: $(STAMP)
	$(BIN)/python -m load_tests.fsync_bench

# Memory retained per settlement: 1,000,000 2102s in-process (core + sealer), RSS and by structure.
bench-memory: $(STAMP)
	$(BIN)/python -m gateway.bench_memory

# The overload campaign: the sustainable 2102 rate S, then 4x and 8x S for 20 s each;
# writes load_tests/results/overload.json and overload.md.
bench-overload: $(STAMP)
	$(BIN)/yibao-load overload --out load_tests/results

bench: $(STAMP)
	$(BIN)/yibao-load bench --out load_tests/results

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
