#!/usr/bin/env bash
# Runs every benchmark that exists and prints its figures next to the baseline measured
# in the same run. Benchmarks arrive with the components they measure.
set -euo pipefail
cd "$(dirname "$0")/.."
ran=0
for b in scripts/bench-*.sh; do
  [ -e "$b" ] || continue
  echo "==> $b"
  "$b"
  ran=$((ran + 1))
done
if [ "$ran" = 0 ]; then
  echo "bench: no benchmarks exist yet (they come with skein-cni, flanneld, the API server and skein-proxy)" >&2
  exit 2
fi
