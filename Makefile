# skein: the two commands that matter are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build demo test lint bench down fmt

all: build

deps:
	@./scripts/install-deps.sh

build:
	$(CARGO) build --workspace --bins

## demo: build, bring up a 3-node local cluster, apply examples/, prove every path
## with real requests; the cluster stays up until `make down`
demo: deps build
	./scripts/demo.sh

## test: the whole suite (unit, privileged integration, end-to-end); needs root
test: deps build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: speed and memory figures, side by side with baselines measured in the same run
bench: deps build
	./scripts/bench.sh

## down: remove every local cluster and test bed left on this machine
down:
	@$(CARGO) build -q -p skeinctl
	./target/debug/skeinctl down --all
