#!/usr/bin/env bash
# `make demo`: a real 3-node cluster in network namespaces, real pods, real requests.
# Brings the cluster up with skeinctl, applies examples/, proves each path with a request
# and prints a pass/fail table. The cluster stays up for you to look around; `make down`
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

say "kubectl get nodes,pods,svc -o wide"
k get nodes -o wide; echo; k get pods -o wide; echo; k get svc -o wide

CG=$(findmnt -t cgroup2 -n -o TARGET | head -1)/skein/$NAME
# pod rows: name node ip uid
mapfile -t PODS < <(k get pods -l app=hello -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.metadata.uid}{"\n"}{end}')
CLUSTER_IP=$(k get svc hello -o jsonpath='{.spec.clusterIP}')

# Runs a command in pod $1's network namespace, inside its node's pod cgroup (where
# skein-proxy's socket hooks are attached), as a container of that pod would.
in_pod() {
  local row=($1); shift
  local node=${row[1]} uid=${row[3]}
  local netns=$STATE/$node/agent/pods/$uid/netns
  sh -c 'echo $$ > "$0/cgroup.procs" && n=$1 && shift && exec nsenter --net="$n" -- "$@"' "$CG/$node" "$netns" "$@"
}

results=()
check() { # name, command...
  local name=$1; shift
  local out; out=$("$@" 2>&1)
  if [ "$out" = 200 ]; then results+=("PASS  $name"); else results+=("FAIL  $name (got: ${out:-nothing})"); fi
}

# Pick a client pod, a target on the same node and one on another node.
client=${PODS[0]}; cnode=$(echo "$client" | cut -d' ' -f2)
same=""; other=""
for p in "${PODS[@]:1}"; do
  n=$(echo "$p" | cut -d' ' -f2)
  if [ "$n" = "$cnode" ] && [ -z "$same" ]; then same=$p; fi
  if [ "$n" != "$cnode" ] && [ -z "$other" ]; then other=$p; fi
done

say "proving each path with real requests"
if [ -n "$same" ]; then
  check "pod to pod, same node ($cnode -> $(echo "$same" | cut -d' ' -f3))" in_pod "$client" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$(echo "$same" | cut -d' ' -f3):8080/"
else
  results+=("FAIL  pod to pod, same node (no two pods on one node)")
fi
if [ -n "$other" ]; then
  check "pod to pod, across nodes ($cnode -> $(echo "$other" | cut -d' ' -f2))" in_pod "$client" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$(echo "$other" | cut -d' ' -f3):8080/"
else
  results+=("FAIL  pod to pod, across nodes (all pods on one node)")
fi
check "pod to Service ClusterIP $CLUSTER_IP:80 (skein-proxy, at connect)" in_pod "$client" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$CLUSTER_IP/"
# DNS: pods do not get a resolv.conf pointing at 10.96.0.10 yet, so the demo asks
# skein-dns directly for the Service's name, then connects to the answer.
DNS_IP=$(in_pod "$client" python3 - <<'PY' 2>/dev/null
import socket, struct
name = "hello.default.svc.cluster.local"
q = struct.pack(">HHHHHH", 0x5e1f, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, ("198.51.100.3", 53)); r, _ = s.recvfrom(512)
print(".".join(str(b) for b in r[-4:]) if struct.unpack(">H", r[6:8])[0] else "")
PY
)
if [ -n "$DNS_IP" ]; then
  check "pod to Service by DNS name hello.default.svc.cluster.local -> $DNS_IP (skein-dns)" in_pod "$client" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$DNS_IP/"
else
  results+=("FAIL  pod to Service by DNS name (skein-dns gave no answer)")
fi
for i in 1 2 3; do
  check "outside to NodePort 198.51.100.1$i:30080 (node$i)" nsenter --net=/run/netns/$NAME-outside curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://198.51.100.1$i:30080/"
done

say "results"
failed=0
for r in "${results[@]}"; do echo "  $r"; case $r in FAIL*) failed=$((failed+1));; esac; done
cat <<TXT

Known gaps (skein issues #7 and #8): pods do not resolve names through 10.96.0.10 with
their own resolv.conf yet (the demo asks skein-dns directly); a NodePort request that
Maglev sends to a backend on another node still fails now and then (about one in four
here), so a NodePort check may show FAIL.

The cluster keeps running. Look around:
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -o wide
  $SKEINCTL status --name $NAME
Tear it down:  make down
TXT
[ "$failed" = 0 ] || { echo "$failed checks FAILED"; exit 1; }
