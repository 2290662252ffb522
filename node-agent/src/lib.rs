//! skein-agent, the kubelet of a skein node: runs the pods bound to its node as
//! sandboxes (a pause process holding new net/uts/ipc/mount namespaces, wired by CNI,
//! with the pod's own resolv.conf and hosts, see `pod_dns`) and
//! containers as processes inside them, and reports them to the API server.
//!
//! ```text
//!  layer 2 (API)                       layer 1 (pod runtime, no API dependency)
//!  ┌────────────────────────────┐      ┌──────────────────────────────────────────┐
//!  │ agent: Node + Lease + watch│ Pod  │ runtime::PodRuntime ── worker per pod     │
//!  │ pods spec.nodeName=<node>  │─────>│   sandbox (pause) ── cni ADD/DEL/CHECK/GC │
//!  │ status patches, deletion   │<─────│   container processes ── probes, restarts │
//!  │ logs HTTP endpoint         │ snap │   state dir (re-adoption after restart)   │
//!  └────────────────────────────┘      └──────────────────────────────────────────┘
//! ```
//!
//! `status::pod_status` turns a runtime snapshot into a `PodStatus`; `node` builds the
//! Node object; `logs` serves `GET /containerLogs/<namespace>/<pod>/<container>` and
//! `exec` serves `kubectl exec` (`GET /exec/<namespace>/<pod>/<container>`, WebSocket).
pub mod agent;
pub mod backoff;
pub mod cgroup;
pub mod cni;
pub mod container;
mod error;
pub mod exec;
pub mod exec_access;
pub mod exec_protocol;
pub mod logs;
pub mod node;
pub mod pod_dns;

pub mod probe;
pub mod probe_run;
pub mod procfs;
pub mod runtime;
pub mod sandbox;
pub mod state;
pub mod status;
mod sys;
mod worker;

pub use error::{Error, Result};
pub use runtime::{PodRuntime, PodSnapshot, RuntimeConfig};
