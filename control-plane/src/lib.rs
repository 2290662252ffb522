//! skein's control plane: the Kubernetes API subset (skein-apiserver), the scheduler
//! (skein-scheduler) and the controllers (skein-controller-manager).
//!
//! ```text
//!   kubectl / kube-rs ──HTTP──▶ skein-apiserver ──▶ etcd
//!                                  ▲        ▲
//!        skein-scheduler ──watch/bind     watch/write── skein-controller-manager
//! ```
//!
//! The scheduler and the controllers are kube-rs clients of the API: they would run
//! unchanged against a real kube-apiserver.

pub mod controllers;
pub mod kubeclient;
pub mod quantity;
pub mod scheduler;
