//! skein-proxy: Kubernetes Service load balancing in eBPF, a kube-proxy replacement.
//!
//! ```text
//!  Services + EndpointSlices (kube watcher, or a JSON file)      model::Service
//!        │
//!        ▼  desired::service_entries        (pure: frontends + named backend groups)
//!        ▼  reconcile::Reconciler           (pure: ids, Maglev tables, diff -> ordered Ops)
//!        ▼  datapath::BpfMaps (MapWriter)   (writes only what changed to the pinned maps)
//!  ┌───────────────────────────────────────────────────────────────────────────────┐
//!  │ bpf/cgroup_sock.c  connect4/sendmsg4/recvmsg4/getpeername4 on the pod cgroup  │
//!  │                    ClusterIP -> backend at connect(), VIP shown to the app    │
//!  │ bpf/tc_nodeport.c  tc ingress/egress on the uplink: NodePort/externalIPs/LB,  │
//!  │                    Maglev, conntrack, DNAT/SNAT/reverse NAT                   │
//!  └───────────────────────────────────────────────────────────────────────────────┘
//!  maps and links pinned under /sys/fs/bpf/skein/<node>/ (datapath::install, cleanup)
//! ```
//!
//! The daemon (`skein-proxy run`) adds `kube_source` (watchers), `metrics` and the
//! healthCheckNodePort server; `skein-proxy apply --from-file` programs the same maps
//! through the same reconciler from a file.

pub mod apply;
pub mod daemon;
pub mod datapath;
pub mod desired;
mod error;
pub mod health;
pub mod kube_source;
pub mod maglev;
pub mod maps;
pub mod metrics;
pub mod model;
pub mod reconcile;

pub use error::Error;
