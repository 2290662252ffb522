#!/usr/bin/env bash
# flanneld benchmark: pod-to-pod TCP throughput and RTT over vxlan and host-gw next to
# node-to-node (fabric) and a hand-made kernel VXLAN pair, measured in one run on one
# test bed; then convergence p50/max over 10 node joins. Needs root, iperf3, etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
$CARGO build -q -p skein-flanneld --bin flanneld --example bench
$CARGO build -q -p skein-proxy --bin skein-proxy
SKEIN_PROXY_BIN="$PWD/target/debug/skein-proxy" FLANNELD_BIN="$PWD/target/debug/flanneld" exec "$PWD/target/debug/examples/bench"
