# yibao-gateway: every set-up step a fresh machine needs lives here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REGION ?= region
PYTEST_FLAGS ?=

CLUSTER_DIR ?= build/cluster

.PHONY: run test soak bench bench-core bench-catalogue bench-accounts bench-journal bench-cluster bench-memory \
	bench-overload ops-tools cluster-tools run-cluster stop-cluster clean

# setup.py builds the protocol's C fast paths in place (optional: without a C compiler the install
# goes on and the pure-Python paths run).
$(STAMP): pyproject.toml setup.py protocol/_msgpack_c.c
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

# Debian's redis-server and haproxy for cluster mode (SPEC section 15): `make run-cluster`, the
# chaos tests and `make bench-cluster`. Best effort like ops-tools: without them those tests skip
# and say why.
cluster-tools:
	@command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && \
	  command -v haproxy >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq >/dev/null 2>&1; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
	    redis-tools haproxy >/dev/null 2>&1) \
	    || echo "cluster-tools: could not install Debian's redis-server and haproxy; the cluster tests will skip"; }

$(REGION)/gateway.toml: | $(STAMP)
	$(BIN)/yibao-gateway init --out $(REGION) --profile small

run: $(STAMP) $(REGION)/gateway.toml
	$(BIN)/yibao-gateway serve --config $(REGION)/gateway.toml

# A Redis Cluster (3 primaries, two replicas each, ports 7000-7008), gateways gw-a and gw-b of the
# sample region and HAProxy on 127.0.0.1:8600 (data) and 8601 (admin); `make stop-cluster` ends it.
run-cluster: $(STAMP) cluster-tools $(REGION)/gateway.toml
	$(BIN)/python -m load_tests.cluster_rig up --region $(REGION) --dir $(CLUSTER_DIR)

stop-cluster: $(STAMP)
	$(BIN)/python -m load_tests.cluster_rig down --dir $(CLUSTER_DIR)

test: $(STAMP) ops-tools cluster-tools
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_FLAGS)

soak: $(STAMP) ops-tools cluster-tools
	$(BIN)/python -m pytest -m slow $(PYTEST_FLAGS)

bench-core: $(STAMP)
	$(BIN)/python -m gateway.bench_core

bench-catalogue: $(STAMP)
	$(BIN)/python -m gateway.bench_catalogue

bench-accounts: $(STAMP)
	$(BIN)/python -m gateway.bench_accounts

bench-journal: $(STAMP)
	$(BIN)/python -m load_tests.fsync_bench

bench-cluster: $(STAMP) cluster-tools
	$(BIN)/python -m load_tests.cluster_bench --out load_tests/results

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
	rm -rf $(VENV) .pytest_cache .hypothesis protocol/*.so
