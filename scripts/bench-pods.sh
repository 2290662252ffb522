#!/usr/bin/env bash
# Pod start through the whole cluster: skeinctl up (NODES nodes), kubectl apply of a
# Deployment of PODS replicas, apply->Ready throughput and p50/p99 as kubectl's watch
# sees it, the share spent in CNI ADD, next to starting the same command as plain
# processes in the same run. Needs root. PODS (1..300, default 100), NODES (1..5, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --workspace --bins
cargo build -q -p skein-e2e --examples
./target/debug/examples/pod_start_api --pods "${PODS:-100}" --nodes "${NODES:-3}"
