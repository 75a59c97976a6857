# varbridge: `make demo` and `make test` install what they need and run.
#
#   make venv         Python virtualenv in .venv (grpcio-tools, pytest, ruff, numpy, ./python)
#   make proto        regenerate Go and Python code from proto/
#   make proto-check  fail when the committed generated code is stale; buf lint
#   make build        .bin/varbridge and .bin/etcd (tools/etcd pins etcd)
#   make test         vet, go test -race, pytest, ruff, mypy --strict (after venv, proto-check, build)
#   make demo         live Go <-> Python reactive demo on a fresh server
#   make cluster-demo the demo on 2 servers over a 3-member etcd cluster, one SIGKILLed half-way
#   make test-cluster the watch guarantee tests (Go, Python) on 2 servers over a 3-member etcd cluster (inside make test)
#   make fuzz         each fuzz target for FUZZTIME (default 2m; 5s inside make test)
#   make chaos        fault suite, leaks, slow consumers and the crash test at full size (short runs are in make test)
#   make soak         minutes of thousands of watches and writes, memory printed over time (SOAK=3m)
#   make elixir-test  the Elixir client's format check and ExUnit tests (inside make test)
#   make fmt / lint   format / check Go, proto and Python sources
#   make dashboard-assets  refresh the dashboard's vendored uPlot from npm

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON3 ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.varbridge-stamp
PY := $(VENV)/bin/python
PY_PACKAGES := grpcio==1.85.1 grpcio-tools==1.85.1 protobuf pytest pytest-asyncio pytest-timeout ruff numpy
BIN := .bin/varbridge
# etcd (issue 12: servers over an etcd cluster) is built from the Go module
# proxy at the version pinned in tools/etcd/go.mod; internal/etcdtest runs it.
ETCD_BIN := .bin/etcd
GO_TEST_TIMEOUT ?= 15m
# buf is pinned in its own module (tools/buf); paths given to it are relative to tools/buf.
BUF := cd tools/buf && go tool buf

.PHONY: venv proto proto-check build test demo cluster-demo test-cluster fmt lint buf-lint fuzz chaos soak dashboard-assets elixir-test

# --- Python environment ------------------------------------------------------
# The stamp is rebuilt when this Makefile or python/pyproject.toml changes.
venv: $(VENV_STAMP)

$(VENV_STAMP): Makefile $(wildcard python/pyproject.toml)
	@echo "==> venv: $(VENV)"
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON3) -m venv $(VENV) || { echo "venv: '$(PYTHON3) -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }; \
	fi
	$(PY) -m pip install --disable-pip-version-check -q $(PY_PACKAGES)
	@if [ -f python/pyproject.toml ]; then \
	  echo "$(PY) -m pip install -e './python[dev]'"; \
	  $(PY) -m pip install --disable-pip-version-check -q -e './python[dev]'; \
	fi
	@touch $@

# --- Generated code ----------------------------------------------------------
proto: venv
	@echo "==> proto: regenerating Go and Python code"
	scripts/genproto.sh

proto-check: venv buf-lint
	@echo "==> proto-check: generated code vs proto/"
	@scripts/proto-check.sh

buf-lint:
	@echo "==> buf lint"
	@$(BUF) lint ../..
	@$(BUF) format --diff --exit-code ../../proto

# --- Go ----------------------------------------------------------------------
build:
	@echo "==> build: $(BIN) $(ETCD_BIN)"
	go build -o $(BIN) ./cmd/varbridge
	cd tools/etcd && go build -o ../../$(ETCD_BIN) go.etcd.io/etcd/server/v3

# --- Tests -------------------------------------------------------------------
test: venv proto-check build
	@echo "==> gofmt"
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt: these files need 'make fmt':" >&2; echo "$$out" >&2; exit 1; fi
	@echo "==> go vet"
	go vet ./...
	@echo "==> go test -race"
	$(SYSTEST_ENV) go test -race -count=1 -timeout $(GO_TEST_TIMEOUT) ./...
	@echo "==> node --test (the dashboard's value handling; the page itself is tested in Chromium by go test)"
	node --test internal/dashboard/jstest/
	@$(MAKE) --no-print-directory fuzz FUZZTIME=5s
	@if [ -d python/tests ]; then \
	  echo "==> pytest"; \
	  VARBRIDGE_BIN="$(CURDIR)/$(BIN)" $(PY) -m pytest python/tests; \
	else \
	  echo "==> pytest: skipped (no python/tests)"; \
	fi
	@if [ -d python ]; then \
	  echo "==> ruff check"; \
	  $(VENV)/bin/ruff check python; \
	  echo "==> mypy --strict (python/pyproject.toml)"; \
	  (cd python && ../$(VENV)/bin/mypy -p varbridge); \
	fi
	@$(MAKE) --no-print-directory elixir-test
	@$(MAKE) --no-print-directory test-cluster
	@echo "==> cluster-demo, short ($(CLUSTER_DEMO_CI_STEPS) changes; its output only when it fails)"
	@out=$$($(CLUSTER_DEMO_ENV) DEMO_STEPS=$(CLUSTER_DEMO_CI_STEPS) DEMO_INTERVAL=50ms scripts/cluster-demo.sh 2>&1) \
	  || { echo "$$out" >&2; exit 1; }; echo "$$out" | sed -n '/^== cluster summary/,$$p'
	@echo "==> test: all passed"

# --- The guarantee tests on a cluster (issue 12) ------------------------------
# VARBRIDGE_TEST_CLUSTER=1 runs the root package's scenario, watch and write
# tests (Go client) and these Python files on two servers over one
# three-member etcd cluster, the clients given both addresses; the largest
# ones run shorter there (each write is an etcd transaction). Python's mypy
# checks of the API do not need a server and run in pytest above.
CLUSTER_PYTESTS := test_cuts test_batch_order test_mux test_writes test_integration test_options test_shaping \
  test_sync test_crosslang test_errors
CLUSTER_ENV := VARBRIDGE_TEST_CLUSTER=1 VARBRIDGE_BIN="$(CURDIR)/$(BIN)" VARBRIDGE_ETCD_BIN="$(CURDIR)/$(ETCD_BIN)"
test-cluster: venv build
	@echo "==> test-cluster: go test -race (root package) on 2 servers over 3 etcd members"
	$(CLUSTER_ENV) go test -race -count=1 -timeout 10m .
	@echo "==> test-cluster: pytest on 2 servers over 3 etcd members"
	$(CLUSTER_ENV) $(PY) -m pytest -q -k 'not mypy' $(patsubst %,python/tests/%.py,$(CLUSTER_PYTESTS))

# --- Elixir client (clients/elixir) --------------------------------------------
# Debian's elixir and erlang-jiffy come from apt-get when mix or jiffy is
# missing. The Mix project has no Hex dependencies, so mix never reaches for
# hex.pm; MIX_HOME and HEX_HOME stay inside the project's _build.
ELIXIR_DIR := clients/elixir
ELIXIR_ENV := MIX_HOME="$(CURDIR)/$(ELIXIR_DIR)/_build/mix" HEX_HOME="$(CURDIR)/$(ELIXIR_DIR)/_build/hex" HEX_OFFLINE=1 \
  VARBRIDGE_BIN="$(CURDIR)/$(BIN)" VARBRIDGE_PYTHON="$(CURDIR)/$(PY)"
elixir-test: venv build
	@if ! command -v mix >/dev/null 2>&1 || ! erl -noshell -eval 'halt(case code:which(jiffy) of non_existing -> 1; _ -> 0 end).' >/dev/null 2>&1; then \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "elixir-test: needs Elixir (mix) and jiffy; on Debian: apt-get install elixir erlang-jiffy" >&2; exit 1; \
	  fi; \
	  echo "==> elixir: installing elixir and erlang-jiffy with apt-get"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq elixir erlang-jiffy; } \
	    >/tmp/varbridge-apt-elixir.log 2>&1 || { cat /tmp/varbridge-apt-elixir.log >&2; exit 1; }; \
	fi
	@echo "==> elixir: mix format --check-formatted, mix test ($(ELIXIR_DIR))"
	cd $(ELIXIR_DIR) && $(ELIXIR_ENV) mix format --check-formatted
	cd $(ELIXIR_DIR) && $(ELIXIR_ENV) mix test --warnings-as-errors

bench: venv build ; @bench/run.sh -out bench/results.json
bench-smoke: venv build ; @bench/run.sh -smoke

# Each fuzz target runs briefly inside `make test` and longer here
# (FUZZTIME=10m make fuzz). Seeds live in each package's testdata/fuzz.
FUZZTIME ?= 2m
FUZZ_TARGETS := FuzzValueConstraints:./internal/store FuzzWhere:./internal/where FuzzRequests:./internal/server
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  echo "==> fuzz $${t%%:*} ($(FUZZTIME))"; \
	  go test -run='^$$' -fuzz="^$${t%%:*}$$" -fuzztime=$(FUZZTIME) "$${t#*:}"; \
	done

# --- Faults, leaks and load (issue 6) -----------------------------------------
# The system suites (faults, leaks, slow consumers, restarts, soak) live in
# the black-box package ./systest (see its doc.go).
# `make test` runs these tests at short sizes: 10,000+ updates through cuts,
# stalls and one blackhole (Go and Python), and writer throughput next to
# stalled watchers, logged (timing is not asserted there); 100,000 watch/unwatch cycles per provider and the
# killed-client checks run there in full. `make chaos` runs the fault suite
# at full size (100,000+ updates, two blackholes) and the strict 10% bound,
# measured without the race detector.
CHAOS_UPDATES ?= 100000
CHAOS_BLACKHOLES ?= 2
CHAOS_ENV := VARBRIDGE_CHAOS_UPDATES=$(CHAOS_UPDATES) VARBRIDGE_CHAOS_BLACKHOLES=$(CHAOS_BLACKHOLES)
# The crash test (systest/crash_test.go) SIGKILLs the durable server
# CRASH_KILLS times under Go and Python writers and watchers; make test
# runs it with 5 kills. systest's Python parts use the venv's python and
# must not be skipped here, and its server tests take the binary just built.
CLUSTER_FAULTS ?= 16
CRASH_KILLS ?= 25
SYSTEST_ENV := VARBRIDGE_REQUIRE_PYTHON=1 VARBRIDGE_PYTHON="$(CURDIR)/$(PY)" VARBRIDGE_BIN="$(CURDIR)/$(BIN)" \
  VARBRIDGE_ETCD_BIN="$(CURDIR)/$(ETCD_BIN)"
chaos: venv build
	@echo "==> chaos: Go fault suite and leaks ($(CHAOS_UPDATES) updates, race detector on)"
	$(CHAOS_ENV) go test -race -count=1 -timeout 30m -v -run '^(TestChaos|TestLeak)' ./systest
	@echo "==> chaos: slow consumers, strict 10% bound (race detector off)"
	VARBRIDGE_CHAOS_STRICT=1 go test -count=1 -timeout 10m -v -run '^TestSlowConsumer' ./systest
	@echo "==> chaos: Python fault suite and sleeping watcher"
	$(CHAOS_ENV) VARBRIDGE_CHAOS_STRICT=1 VARBRIDGE_BIN="$(CURDIR)/$(BIN)" \
	  $(PY) -m pytest -s python/tests/test_chaos.py python/tests/test_slow_consumer.py
	@echo "==> chaos: crash test ($(CRASH_KILLS) SIGKILLs of the durable server) and durable restarts"
	$(SYSTEST_ENV) VARBRIDGE_CRASH_KILLS=$(CRASH_KILLS) go test -race -count=1 -timeout 20m -v -run '^(TestCrash|TestDurable)' ./systest
	@echo "==> chaos: cluster ($(CLUSTER_FAULTS) faults: varbridge server kills, etcd leader kills, a server cut off from etcd)"
	$(SYSTEST_ENV) VARBRIDGE_CLUSTER_FAULTS=$(CLUSTER_FAULTS) go test -race -count=1 -timeout 20m -v -run '^TestClusterChaos' ./systest
	@echo "==> chaos: all passed"

# Not in CI: minutes of 2,400 watches, writes, churn and cuts; prints the
# heap, RSS and goroutines over time and fails if they grow.
SOAK ?= 3m
soak:
	@echo "==> soak ($(SOAK))"
	VARBRIDGE_SOAK=$(SOAK) go test -count=1 -timeout 1h -v -run '^TestSoak$$' ./systest

# The dashboard's uPlot is vendored in internal/dashboard/static/vendor/uplot
# (so `go install` needs no npm); this refreshes it from npm at the version
# internal/dashboard/package-lock.json pins. internal/dashboard's tests (in
# make test, no network) fail when the copy is stale or edited by hand.
dashboard-assets:
	@echo "==> dashboard-assets"
	internal/dashboard/vendor-assets.sh

demo: venv build
	@echo "==> demo"
	@VARBRIDGE_BIN="$(CURDIR)/$(BIN)" scripts/demo.sh

# The demo on two varbridge servers over a 3-member etcd cluster (.bin/etcd),
# the Go controller's server SIGKILLed half-way (scripts/cluster-demo.sh).
# make test runs a short one (CLUSTER_DEMO_CI_STEPS changes, seconds).
CLUSTER_DEMO_ENV := VARBRIDGE_BIN="$(CURDIR)/$(BIN)" VARBRIDGE_ETCD_BIN="$(CURDIR)/$(ETCD_BIN)" PYTHON="$(CURDIR)/$(PY)"
CLUSTER_DEMO_CI_STEPS ?= 12
cluster-demo: venv build
	@echo "==> cluster-demo"
	@$(CLUSTER_DEMO_ENV) scripts/cluster-demo.sh

# --- Formatting and lint -----------------------------------------------------
fmt: venv
	gofmt -w $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')
	$(BUF) format -w ../../proto
	@if [ -d python ]; then $(VENV)/bin/ruff format python; fi

lint: venv buf-lint
	@echo "==> gofmt"
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt: these files need 'make fmt':" >&2; echo "$$out" >&2; exit 1; fi
	@echo "==> go vet"
	go vet ./...
	@if [ -d python ]; then echo "==> ruff check"; $(VENV)/bin/ruff check python; fi
