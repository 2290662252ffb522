//! The crate's error type: every variant names the object it concerns.

use std::path::PathBuf;

/// Errors of the proxy library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service {service}: {reason}")]
    InvalidService { service: String, reason: String },
    #[error("parse services: {0}")]
    Parse(String),
    #[error("too many {what}")]
    Full { what: String },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("load eBPF object {object}: {source}")]
    Load {
        object: &'static str,
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attach {program} to {target}: {source}")]
    Attach {
        program: &'static str,
        target: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("pin {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("kubernetes: {0}")]
    Kube(String),
}

impl Error {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
        move |e| Error::Map {
            map,
            source: Box::new(e),
        }
    }
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
