//! skein-dns: the cluster DNS server. It serves the cluster zone (`cluster.local`) from
//! the Kubernetes API, the way CoreDNS's kubernetes plugin does, with hickory.
//!
//! ```text
//! Services + EndpointSlices          (watch.rs: kube reflectors, or objects_file.rs)
//!        │
//!        ▼  records::build_zone      (pure: the Kubernetes DNS records)
//!      Zone ── SharedZone (swapped whole on every change)
//!        │
//!        ▼  Zone::lookup(name, type) (pure: records / NODATA / NXDOMAIN / not ours)
//! handler.rs (hickory RequestHandler) ◄── UDP+TCP queries (serve.rs)
//!        │ names outside the zone
//!        ▼
//! forward.rs to --upstream, only when given; otherwise NXDOMAIN
//! ```

pub mod forward;
pub mod handler;
pub mod objects_file;
pub mod records;
pub mod serve;
pub mod watch;
pub mod zone;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use handler::{ClusterHandler, SharedZone};
pub use records::{Built, build_zone};
pub use zone::{Answer, QueryType, RecordData, Zone};

/// Errors of the DNS server; each names the object or address that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The `--from-file` input is not a usable List.
    #[error("objects file {path}: {reason}")]
    ObjectsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The upstream resolver failed to answer.
    #[error("upstream {upstream}: {reason}")]
    Upstream {
        /// The upstream's address.
        upstream: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The Kubernetes watch stopped.
    #[error("kubernetes watch: {0}")]
    Watch(String),
}
