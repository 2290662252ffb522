#!/usr/bin/env bash
# skein-agent pod start: N pods applied at once to the pod runtime on one test-bed node
# with the reference CNI plugins; apply->Ready throughput and p50/p99, the share spent
# in CNI ADD, next to a plain fork/exec of the same command measured in the same run.
# Needs root. PODS (1..200, default 50) sets the count.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p skein-node-agent --bins --examples
./target/debug/examples/pod_start_bench --pods "${PODS:-50}"
