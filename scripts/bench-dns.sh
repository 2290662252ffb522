#!/usr/bin/env bash
# skein-dns: zone build time for N Services against a plain map of the names, and UDP
# query round trips (p50/p99, sequential q/s) from one test-bed node to skein-dns on
# another against a UDP echo server in the same namespaces (the floor), same run.
# Pinned to CPU 0 (server and client on one CPU: a cross-CPU wake-up costs ~70 us here).
# Needs root (it creates network namespaces, all removed at the end). Counts:
# SKEIN_DNS_BENCH_SERVICES (default 2000), SKEIN_DNS_BENCH_QUERIES (default 5000);
# SKEIN_DNS_BIN measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-dns: needs root (it creates network namespaces)" >&2
  exit 2
fi
cargo build -q -p skein-dns --bin skein-dns
cargo bench -q -p skein-dns --bench dns --profile dev --no-run
exec taskset -c 0 cargo bench -q -p skein-dns --bench dns --profile dev
