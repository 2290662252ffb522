//! skein-scheduler: binds each unbound pod to a node.
//!
//! ```text
//!  watch Pods + Nodes ──▶ unbound pods (oldest first)
//!                           │ for each: filter every node (Ready, schedulable, resources,
//!                           │ nodeSelector, required node affinity, taints, hostPorts)
//!                           │ score the survivors (least allocated + spread of the owner)
//!                           ▼
//!                 POST pods/<name>/binding      or   PodScheduled=False, reason Unschedulable,
//!                                                    message naming the failed filters
//! ```
//!
//! [`filter`] and [`score`] are pure; [`run`] is the kube-rs loop around them.

mod filter;
mod run;

pub use filter::{FilterFailure, NodeState, Requests, filter, pod_requests, score, select_node};
pub use run::{Options, run};
