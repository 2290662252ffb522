//! What the agent remembers about each pod on disk, so that a restarted agent re-adopts
//! running pods instead of killing or re-addressing them.
//!
//! ```text
//! <state-dir>/pods/<uid>/state.json   PodRecord (spec, sandbox, containers)
//! <state-dir>/pods/<uid>/netns        bind mount of the sandbox's network namespace
//! <state-dir>/pods/<uid>/resolv.conf  the pod's /etc/resolv.conf (bound in its mount ns)
//! <state-dir>/pods/<uid>/hosts        the pod's /etc/hosts (bound in its mount ns)
//! <state-dir>/cni/results/...         the CNI result cache (libcni layout)
//! <state-dir>/logs/<ns>_<pod>_<uid>/<container>/<restart>.log
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};
use crate::procfs::ProcRef;

/// A pod as the agent runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    /// The latest spec the agent was given.
    pub pod: Pod,
    /// When the agent first took the pod on.
    pub accepted_at: SystemTime,
    /// The sandbox, once made.
    pub sandbox: Option<SandboxRecord>,
    /// Per container (by name).
    pub containers: BTreeMap<String, ContainerRecord>,
    /// The pod reached Succeeded or Failed and its sandbox was released; these were its
    /// IPs (still reported, as the kubelet does).
    #[serde(default)]
    pub finished: Option<Vec<IpAddr>>,
    /// Every init container has completed in the current sandbox.
    #[serde(default)]
    pub initialized: bool,
}

/// A pod sandbox: the pause process and its network attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The sandbox id, also CNI_CONTAINERID.
    pub id: String,
    /// The pause process.
    pub pause: ProcRef,
    /// The bind mount of its netns (none for hostNetwork pods).
    pub netns: Option<PathBuf>,
    /// The pod's IPs from the CNI result (none for hostNetwork pods).
    pub ips: Vec<IpAddr>,
    /// The CNI network it is attached to, and whether the loopback network was added.
    pub network: Option<String>,
    /// Whether containerd's `cni-loopback` network was attached.
    pub loopback: bool,
    /// When the sandbox became ready.
    pub created_at: SystemTime,
    /// How long making it took, step by step.
    #[serde(default)]
    pub setup: SetupTimes,
}

/// Time spent making a sandbox (for benchmarks and operators).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupTimes {
    /// Starting the pause process and mounting its netns.
    pub pause: std::time::Duration,
    /// CNI ADD of the loopback and pod networks.
    pub cni_add: std::time::Duration,
}

/// A container's life so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Restarts so far (the status's restartCount).
    pub restart_count: u32,
    /// Exponent of the current restart back-off (reset after a long enough run).
    pub backoff_step: u32,
    /// The running process, if any.
    pub running: Option<RunningRecord>,
    /// The termination of the current instance (while it waits for a restart, or for
    /// good under restartPolicy Never/OnFailure).
    pub terminated: Option<Termination>,
    /// The previous instance's termination (the status's lastState).
    pub last: Option<Termination>,
}

/// A running container process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningRecord {
    /// Container id (`skein://<hex>`).
    pub id: String,
    /// The process (a session leader: its group holds what it forked).
    pub proc: ProcRef,
    /// Start time.
    pub started_at: SystemTime,
    /// Its log file.
    pub log: PathBuf,
}

/// How a container instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// Container id of the instance.
    pub id: String,
    /// Exit code (128+signal when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`, `Unknown`.
    pub reason: String,
    /// Details (why it could not start, ...).
    pub message: Option<String>,
    /// When it started (None if it never did).
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: SystemTime,
}

/// Where the agent keeps pod state.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    /// `<root>/pods/<uid>/netns`.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("netns")
    }

    /// `<root>/pods/<uid>/resolv.conf`: the pod's /etc/resolv.conf.
    pub fn resolv_conf_path(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("resolv.conf")
    }

    /// `<root>/pods/<uid>/hosts`: the pod's /etc/hosts.
    pub fn hosts_path(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("hosts")
    }

    /// `<root>/cni` (libcni's cache dir).
    pub fn cni_cache(&self) -> PathBuf {
        self.root.join("cni")
    }

    /// `<root>/logs/<ns>_<name>_<uid>`.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{namespace}_{name}_{uid}"))
    }

    /// Saves a record.
    pub fn save(&self, uid: &str, rec: &PodRecord) -> Result<()> {
        let v = serde_json::to_value(rec).map_err(|e| Error::State {
            path: self.pod_dir(uid),
            reason: format!("encode: {e}"),
        })?;
        write_json_atomic(&self.pod_dir(uid).join("state.json"), &v)
    }

    /// Loads every record, with the uid it is filed under; unreadable ones are reported
    /// as errors next to the good ones.
    pub fn load_all(&self) -> Vec<(String, Result<PodRecord>)> {
        let Ok(rd) = std::fs::read_dir(self.root.join("pods")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            let path = e.path().join("state.json");
            let rec = std::fs::read(&path)
                .map_err(io_err("read", &path))
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|err| Error::State {
                        path: path.clone(),
                        reason: err.to_string(),
                    })
                });
            out.push((uid, rec));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Removes a pod's dir (its netns mount must be gone already).
    pub fn remove_pod(&self, uid: &str) -> Result<()> {
        let d = self.pod_dir(uid);
        match std::fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", d)(e)),
        }
    }
}

/// Writes JSON to `path` through a temp file and a rename, so a crash never leaves a
/// half-written file.
pub(crate) fn write_json_atomic(path: &Path, v: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename into", path))
}
