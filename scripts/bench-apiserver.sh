#!/usr/bin/env bash
# skein-apiserver benchmark: create/get/list latency with BENCH_OBJECTS objects stored
# (default 10,000) and watch fan-out to BENCH_WATCHERS watchers (default 100), each next
# to the same operation done directly on etcd in the same run (the baseline), and the
# server's memory with the objects stored. Runs in a test bed (namespaces + real etcd),
# bounded in count and time; needs root. BENCH_PROFILE=release builds optimized first
# (several minutes on 2 cores); the default is the debug build `make build` made.
# Then GET latency over HTTPS beside plain HTTP (BENCH_TLS_REQUESTS, default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${BENCH_PROFILE:-debug}"
flags=()
[ "$profile" = release ] && flags=(--release)
export BENCH_OBJECTS="${BENCH_OBJECTS:-10000}" BENCH_WATCHERS="${BENCH_WATCHERS:-100}"
echo "skein-apiserver bench ($profile build, ${BENCH_OBJECTS} objects, ${BENCH_WATCHERS} watchers)"
cargo build -q "${flags[@]}" -p skein-control-plane --bin skein-apiserver
timeout 900 cargo test -q "${flags[@]}" -p skein-control-plane --test bench -- --ignored --nocapture --test-threads=1 2>&1 \
  | grep -vE '^(running|test result|$)|^test (apiserver|tls)_benchmark'
