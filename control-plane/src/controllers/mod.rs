//! skein-controller-manager: the controllers that turn intent into objects.
//!
//! ```text
//!   watch Deployments, ReplicaSets, DaemonSets, Pods, Services, EndpointSlices,
//!         Endpoints, Nodes, Leases ──▶ caches ──(any change, or every resync)──▶ one pass:
//!     deployment   Deployment ──▶ ReplicaSet per template hash, rolled or recreated
//!     replicaset   ReplicaSet ──▶ Pods from the template
//!     daemonset    DaemonSet  ──▶ one Pod per eligible Node
//!     endpoints    Service + ready Pods ──▶ EndpointSlices + Endpoints
//!     nodelifecycle  stale heartbeat ──▶ Ready=Unknown, unreachable taints, eviction
//!     gc           dependents whose owner is gone ──▶ deleted
//! ```
//!
//! Each controller's decision is a pure `plan` function in its module; this module only
//! reads the caches and applies the plans.

mod apply;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod hash;
pub mod nodelifecycle;
pub mod podutil;
pub mod replicaset;
pub mod selector;

pub use apply::{Options, run};
