//! The node's cgroup v2 subtree (`--cgroup-root`): one cgroup per pod, and below it one
//! for the sandbox and one per container, so a container's whole process tree can be
//! found and killed, even after an agent restart.
//!
//! ```text
//! <cgroup-root>/pod-<uid>/sandbox        the pause process
//! <cgroup-root>/pod-<uid>/ctr-<name>     a container and everything it forks
//! ```

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, io_err};

/// Cgroup placement; with no root, processes stay in the agent's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: Option<PathBuf>,
}

impl Cgroups {
    /// Places pods under `root` (a cgroup v2 directory), or nowhere.
    pub fn new(root: Option<PathBuf>) -> Cgroups {
        Cgroups { root }
    }

    /// The pod's cgroup.
    pub fn pod(&self, uid: &str) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(format!("pod-{uid}")))
    }

    /// The sandbox's cgroup.
    pub fn sandbox(&self, uid: &str) -> Option<PathBuf> {
        self.pod(uid).map(|p| p.join("sandbox"))
    }

    /// A container's cgroup.
    pub fn container(&self, uid: &str, name: &str) -> Option<PathBuf> {
        self.pod(uid).map(|p| p.join(format!("ctr-{name}")))
    }
}

/// Creates `dir` and opens its `cgroup.procs` for a child to write itself into.
pub(crate) fn prepare(dir: Option<&Path>) -> Result<Option<OwnedFd>> {
    let Some(dir) = dir else { return Ok(None) };
    std::fs::create_dir_all(dir).map_err(io_err("create cgroup", dir))?;
    let procs = dir.join("cgroup.procs");
    let f = File::options()
        .write(true)
        .open(&procs)
        .map_err(io_err("open", &procs))?;
    Ok(Some(f.into()))
}

/// Pids in the cgroup `dir` (not its children).
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in `dir` and below (cgroup.kill, else SIGKILL to each pid).
pub(crate) fn kill_all(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for d in walk(dir) {
            for pid in procs(&d) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Kills everything in `dir` and removes it with its children. Waits (bounded) for the
/// kernel to finish moving out exiting tasks.
pub(crate) fn remove(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    kill_all(dir);
    let mut dirs = walk(dir);
    dirs.reverse(); // children first
    for d in dirs {
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io_err("remove cgroup", &d)(e)),
            }
        }
    }
    Ok(())
}

/// `dir` and every directory below it, parents first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            let children: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect();
            out.extend(children);
        }
        i += 1;
    }
    out
}
