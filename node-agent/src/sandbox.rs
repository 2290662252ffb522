//! Pod sandboxes: a pause process holding the pod's new net, uts, ipc and mount
//! namespaces (hostname = pod name; the pod's resolv.conf and hosts files bound over
//! /etc/resolv.conf and /etc/hosts), its netns bind-mounted under the state dir for CNI.
//!
//! ```text
//! start: cgroup <root>/pod-<uid>/sandbox ── spawn `<agent> pause` (setsid, unshare
//!        NEWNET|NEWUTS|NEWIPC|NEWNS, sethostname, mount --make-rprivate /, bind
//!        <state>/pods/<uid>/{resolv.conf,hosts} over /etc/...) ── bind
//!        /proc/<pid>/ns/net at <state>/pods/<uid>/netns
//! join:  open /proc/<pause>/ns/{ipc,uts,net,mnt} ── containers setns into them before exec
//! stop:  SIGKILL pause (its mount namespace goes with it) ── unmount + remove the netns file
//! ```

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Error, Result, io_err};
use crate::procfs::ProcRef;
use crate::sys;

/// What the pause process is started with.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// `namespace/name` for messages.
    pub pod: String,
    /// The hostname inside the sandbox.
    pub hostname: String,
    /// Share the node's network (and UTS) namespace instead of new ones.
    pub host_network: bool,
    /// Where to bind-mount the new netns.
    pub netns_path: PathBuf,
    /// The sandbox's cgroup.
    pub cgroup: Option<PathBuf>,
    /// Files bound in the pod's own mount namespace: (file in the state dir, where the
    /// pod sees it), e.g. `<pod dir>/resolv.conf` over `/etc/resolv.conf`. The sources
    /// are rewritten in place later (same inode), never replaced.
    pub binds: Vec<(PathBuf, PathBuf)>,
}

/// A started pause process: its identity and netns mount.
#[derive(Debug, Clone)]
pub struct Started {
    /// The pause process.
    pub pause: ProcRef,
    /// The netns bind mount (None for hostNetwork).
    pub netns: Option<PathBuf>,
}

/// The hostname for a pod: the pod name cut to 63 bytes without a trailing '-' or '.',
/// as the kubelet does.
pub fn hostname_for(name: &str) -> String {
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with('-') || h.ends_with('.') {
        h.pop();
    }
    h
}

/// Starts the pause process `<pause_exe> pause` in new namespaces. On failure, nothing
/// is left behind.
pub fn start(pause_exe: &Path, spec: &SandboxSpec) -> Result<Started> {
    let fail = |reason: String| Error::Sandbox {
        pod: spec.pod.clone(),
        reason,
    };
    let cgroup_procs = crate::cgroup::prepare(spec.cgroup.as_deref())?;
    let hostname = if spec.host_network {
        None
    } else {
        Some(CString::new(spec.hostname.clone()).map_err(|_| fail("hostname has a NUL".into()))?)
    };
    let mut binds = Vec::new();
    for (src, dst) in &spec.binds {
        binds.push((
            sys::path_cstring(src).map_err(fail)?,
            sys::path_cstring(dst).map_err(fail)?,
        ));
    }
    let mut cmd = std::process::Command::new(pause_exe);
    cmd.arg("pause")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::pause_hooks(
        &mut cmd,
        sys::Unshare {
            net: !spec.host_network,
            uts: !spec.host_network,
            ipc: true,
            mnt: true,
        },
        hostname,
        cgroup_procs,
        binds,
    );
    // tokio reaps the pause process whenever it exits, also after we drop the handle.
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| {
            let binds: Vec<String> = spec
                .binds
                .iter()
                .map(|(src, dst)| format!("{} over {}", src.display(), dst.display()))
                .collect();
            fail(format!(
                "start pause process {} (new namespaces, private mounts, binds: {}): {e}",
                pause_exe.display(),
                binds.join(", ")
            ))
        })?;
    let pid = child
        .id()
        .ok_or_else(|| fail("pause process exited at once".into()))? as i32;
    drop(child);
    let pause = ProcRef::of(pid).ok_or_else(|| fail("pause process exited at once".into()))?;
    if spec.host_network {
        return Ok(Started { pause, netns: None });
    }
    match bind_netns(pid, &spec.netns_path) {
        Ok(()) => Ok(Started {
            pause,
            netns: Some(spec.netns_path.clone()),
        }),
        Err(e) => {
            pause.signal(Signal::SIGKILL);
            Err(fail(e))
        }
    }
}

fn bind_netns(pid: i32, target: &Path) -> std::result::Result<(), String> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    // A stale file or mount from an earlier sandbox of this pod goes first.
    let _ = skein_netns::NetNs::delete_at(target);
    File::create(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    let src = format!("/proc/{pid}/ns/net");
    nix::mount::mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(target);
        format!("bind {src} at {}: {e}", target.display())
    })
}

/// Whether the sandbox is intact: pause alive, and its netns mount still the pause's.
pub fn intact(pause: &ProcRef, netns: Option<&Path>) -> bool {
    if !pause.alive() {
        return false;
    }
    let Some(path) = netns else { return true };
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(path).map(|m| m.ino());
    let b = std::fs::metadata(format!("/proc/{}/ns/net", pause.pid)).map(|m| m.ino());
    matches!((a, b), (Ok(x), Ok(y)) if x == y)
}

/// Opens the pause's ipc, uts, net and mount namespaces for a process to join.
pub(crate) fn open_namespaces(pod: &str, pause: &ProcRef) -> Result<Vec<(OwnedFd, libc::c_int)>> {
    let mut out = Vec::new();
    for (name, kind) in [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let p = format!("/proc/{}/ns/{name}", pause.pid);
        let f = File::open(&p).map_err(io_err("open namespace", &p))?;
        out.push((OwnedFd::from(f), kind));
    }
    // Opened by pid: make sure that pid was still our pause process while we did.
    if !pause.alive() {
        return Err(Error::Sandbox {
            pod: pod.to_owned(),
            reason: format!("pause process {} is gone", pause.pid),
        });
    }
    Ok(out)
}

/// Stops the pause process and removes the netns mount. Keeps going past failures.
pub fn stop(pause: &ProcRef, netns: Option<&Path>) -> Vec<String> {
    let mut errors = Vec::new();
    pause.signal(Signal::SIGKILL);
    for _ in 0..100 {
        if !pause.alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if pause.alive() {
        errors.push(format!("pause process {} did not exit", pause.pid));
    }
    if let Some(p) = netns
        && let Err(e) = skein_netns::NetNs::delete_at(p)
    {
        errors.push(e.to_string());
    }
    errors
}

/// The body of `skein-agent pause`: waits for SIGTERM or SIGINT and exits 0. It is the
/// sandbox's anchor; it never touches anything.
pub fn pause_main() -> ! {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                // Reap whatever may have been re-parented to us.
                while let Ok(s) =
                    nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => std::process::exit(0),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_cut_like_the_kubelet_does() {
        assert_eq!(hostname_for("web-1"), "web-1");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(hostname_for(&long), "a".repeat(62));
    }
}
