#!/usr/bin/env bash
# skein-cni against the reference bridge + host-local (Debian's containernetworking-plugins),
# in the same run on the same test-bed node: ADD/DEL p50/p99 over 100 sequential pods and
# the wall time of 20 concurrent ADDs, side by side, with the p50 ADD ratio (goal <= 0.5).
# Needs root (it builds namespaces, all removed at the end). Counts can be changed with
# SKEIN_CNI_BENCH_PODS and SKEIN_CNI_BENCH_CONCURRENT; SKEIN_CNI_BIN measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-cni: needs root (it creates network namespaces)" >&2
  exit 2
fi
for p in bridge host-local; do
  if [ ! -x "/usr/lib/cni/$p" ]; then
    echo "bench-cni: /usr/lib/cni/$p is missing: install containernetworking-plugins (scripts/install-deps.sh)" >&2
    exit 2
  fi
done
cargo build -q -p skein-cni --bin skein-cni
exec cargo bench -q -p skein-cni --bench cni --profile dev
