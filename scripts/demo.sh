#!/usr/bin/env bash
# `make demo`: a real 3-node cluster in network namespaces, real pods, real requests.
# Brings the cluster up with skeinctl, applies examples/, and `skeinctl check` proves each
# path with a request and prints a pass/fail table. The cluster stays up for you to look around; `make down`
# removes it. Every client runs inside a namespace of the cluster, never in the root one.
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${SKEIN_DEMO_NAME:-skein}
BIN=./target/debug
SKEINCTL=$BIN/skeinctl
STATE=/run/skein/$NAME

say() { printf '\n==> %s\n' "$*"; }
fail_setup() { echo "demo: $*" >&2; exit 1; }

if [ -d "$STATE" ]; then
  say "removing the previous demo cluster $NAME"
  $SKEINCTL down --name "$NAME" >/dev/null || fail_setup "could not remove the old cluster (skeinctl down --name $NAME)"
fi

say "skeinctl up --name $NAME --nodes 3"
$SKEINCTL up --name "$NAME" --nodes 3 || fail_setup "skeinctl up failed (see the daemon and log it named above)"
KUBECONFIG=$($SKEINCTL kubeconfig --name "$NAME") || fail_setup "no kubeconfig"
export KUBECONFIG
k() { kubectl --request-timeout 20s "$@"; }

say "kubectl apply -f examples/"
k apply -f examples/ || fail_setup "kubectl apply failed"
k rollout status deployment/hello --timeout=180s || fail_setup "the hello Deployment did not become ready"
# The Service's endpoints follow the pods' readiness; wait until they are all listed.
want=$(k get deployment hello -o jsonpath='{.spec.replicas}')
for _ in $(seq 60); do
  have=$(k get endpoints hello -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w)
  [ "$have" = "$want" ] && break
  sleep 0.5
done

say "kubectl get nodes,pods,svc -o wide"
k get nodes -o wide; echo; k get pods -o wide; echo; k get svc -o wide

say "proving each path with real requests (skeinctl check --name $NAME)"
# From inside a hello pod (its own network and mount namespaces, so its own
# /etc/resolv.conf pointing at kube-dns 10.96.0.10) and from the outside host; one
# request per row, no retries.
$SKEINCTL check --name "$NAME"
failed=$?
cat <<TXT

The cluster keeps running. Look around:
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -o wide
  $SKEINCTL status --name $NAME
Tear it down:  make down
TXT
[ "$failed" = 0 ] || exit 1
