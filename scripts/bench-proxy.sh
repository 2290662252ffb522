#!/usr/bin/env bash
# skein-proxy benchmark: ClusterIP via skein-proxy vs the pod IP directly, kube-proxy-style
# iptables at 100/1,000/10,000 Services vs skein-proxy with as many loaded, and the time
# from a Service change to its BPF map entry. Figures and baselines come from one run on
# one test bed (namespaces only; everything is removed at the end). Needs root.
# SKEIN_BENCH_SIZES=100,1000 limits the Service counts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p skein-proxy --bins --example proxy_bench
exec ./target/debug/examples/proxy_bench
