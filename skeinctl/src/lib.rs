//! skeinctl: the operator's CLI for a local skein cluster on one machine.
//!
//! ```text
//! up ─► test bed (namespaces, etcd) ─► control plane, kube-dns Service, relay, per-node
//!       daemons ─► detached,
//!       pid + log files under /run/skein/<name>/   (up.rs, components.rs, layout.rs)
//! kubeconfig ─► /run/skein/<name>/kubeconfig ─► relay 127.0.0.1:<port> ─► <name>-control
//!       (relay.rs)
//! status ─► pid files, subnet files, flannel leases, the API's Nodes and Services
//!       (status.rs, api.rs)
//! check ─► requests from inside a demo pod and from outside: pod to pod, Service by
//!       ClusterIP and by DNS name, NodePort on every node (check.rs)
//! down ─► sweep by name: processes, namespaces, mounts, pins, cgroups, files
//! demo ─► a throwaway test bed with reachability checks (demo.rs)
//! ```

pub mod api;
pub mod check;
pub mod components;
pub mod demo;
pub mod layout;
pub mod relay;
pub mod status;
pub mod up;

use std::process::ExitCode;

/// `skeinctl down`: sweeps one prefix, or all of them.
pub fn down(name: Option<&str>) -> anyhow::Result<ExitCode> {
    let report = match name {
        Some(n) => {
            skein_testbed::validate_prefix(n)?;
            skein_testbed::sweep(n)
        }
        None => skein_testbed::sweep_all(),
    };
    for r in &report.removed {
        println!("removed {r}");
    }
    if report.removed.is_empty() && report.errors.is_empty() {
        println!("nothing to remove");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
