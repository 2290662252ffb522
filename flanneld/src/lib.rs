//! flanneld: flannel-compatible subnet leases in etcd, and the routes that join the
//! nodes' pod subnets over VXLAN or host-gw.
//!
//! ```text
//!  etcd <prefix>/config ──► config::NetworkConfig (waits until valid)
//!  etcd <prefix>/subnets/* ──► alloc::choose ──► registry txn create-if-absent (TTL lease)
//!        │                                            │
//!        │ watch (relist + resync on reconnect)       ├─► subnet_file (FLANNEL_* env)
//!        ▼                                            ├─► masq (nftables, --ip-masq)
//!  plan::desired(leases) ─ plan::diff(kernel::dump) ──► kernel::apply (routes, neigh, fdb)
//!                                                     └─► metrics (/healthz, /metrics)
//! ```
//!
//! [`daemon::run`] drives it; the decisions (config checks, subnet choice, entries per
//! lease, diffs) are pure functions, unit-tested without root.

pub mod alloc;
pub mod config;
pub mod daemon;
pub mod kernel;
pub mod lease;
pub mod masq;
pub mod metrics;
pub mod plan;
pub mod registry;
pub mod subnet_file;

/// Errors of flanneld; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network config is missing or invalid.
    #[error("invalid network config: {0}")]
    Config(String),
    /// A lease value or key could not be used.
    #[error("lease: {0}")]
    Lease(String),
    /// An etcd call failed.
    #[error("etcd: {what}: {reason}")]
    Etcd { what: String, reason: String },
    /// A netlink call failed.
    #[error("netlink: {what}: {reason}")]
    Netlink { what: String, reason: String },
    /// The uplink could not be found.
    #[error("uplink: {0}")]
    Uplink(String),
    /// nftables failed.
    #[error("nftables: {0}")]
    Nft(String),
    /// Bad flags.
    #[error("usage: {0}")]
    Usage(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
