#!/usr/bin/env bash
# skein-agent pod start: PODS pods applied at once, spread over NODES test-bed nodes (one pod runtime each)
# with the reference CNI plugins; apply->Ready throughput and p50/p99, the share spent
# in CNI ADD, next to a plain fork/exec of the same command measured in the same run.
# Needs root. PODS (1..200, default 100) and NODES (1..5, default 3) set the size.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p skein-node-agent --bins --examples
./target/debug/examples/pod_start_bench --pods "${PODS:-100}" --nodes "${NODES:-3}"
