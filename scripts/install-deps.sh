#!/usr/bin/env bash
# Installs what skein needs from Debian 12, idempotently: a package that is already
# installed is not touched, and `apt-get update` runs at most once per call (and only
# when something is missing). Run as root. Called by `make demo`, `make test`, `make bench`.
set -euo pipefail

packages=(
  etcd-server etcd-client        # etcd for flanneld and the API server; etcdctl for checks
  clang-19 llvm-19 libbpf-dev    # the proxy's eBPF programs (C, compiled by the build script)
  protobuf-compiler libprotobuf-dev  # etcd-client's build needs protoc and the well-known .proto files
  openssl                        # test certificates (flanneld's etcd TLS test)
  iproute2 nftables iptables     # namespaces, links, routes, masquerade; iptables for the proxy baseline
  iperf3 python3 curl socat      # benchmarks, demo servers and clients
  dnsutils                       # dig: DNS lookups (SRV, CNAME, TCP) from inside pods in the e2e tests
  containernetworking-plugins    # the reference bridge/host-local/portmap plugins (side-by-side tests)
  bpftool procps psmisc util-linux kmod
  pkg-config libelf-dev zlib1g-dev
)

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: must run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's etcd-server package starts a system etcd on 127.0.0.1:2379; skein never uses
# it (every test starts its own etcd inside a namespace), so keep it stopped.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
  systemctl disable etcd >/dev/null 2>&1 || true
fi
# Without systemd the package's init script may have started it; stop that one too.
if pgrep -x etcd >/dev/null 2>&1 && [ -f /etc/default/etcd ]; then
  for pid in $(pgrep -x etcd); do
    # only the packaged daemon (data in /var/lib/etcd), never a test's etcd
    if tr '\0' ' ' < /proc/$pid/cmdline | grep -qv -- '--data-dir'; then kill "$pid" || true; fi
  done
fi

# kubectl: the machine may already have one at /usr/bin/kubectl; Debian's
# kubernetes-client is the fallback.
if ! command -v kubectl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# The kernel modules the local cluster uses (no-ops where they are built in).
for m in veth bridge vxlan nf_tables; do modprobe -q "$m" 2>/dev/null || true; done

# Cargo tools
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found (install Rust with rustup)" >&2
  exit 1
fi
