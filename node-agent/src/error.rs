//! The crate's error type: every variant names the object it concerns.

use std::path::PathBuf;

/// Errors of the pod runtime and the API-facing agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cni config dir {dir}: {reason}")]
    CniConfig { dir: PathBuf, reason: String },
    #[error("cni plugin {plugin} {command} for {container_id}: {message}")]
    CniPlugin {
        plugin: String,
        command: String,
        container_id: String,
        message: String,
    },
    #[error("sandbox of pod {pod}: {reason}")]
    Sandbox { pod: String, reason: String },
    #[error("container {container} of pod {pod}: {reason}")]
    Container {
        pod: String,
        container: String,
        reason: String,
    },
    #[error("invalid pod {pod}: {reason}")]
    InvalidPod { pod: String, reason: String },
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("subnet file {path}: {reason}")]
    SubnetFile { path: PathBuf, reason: String },
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    NetNs(#[from] skein_netns::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an io::Error into [`Error::Io`] naming what was done to which path.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
