//! Network namespaces, the ground every skein component stands on.
//!
//! ```text
//!   NetNs::create("pod-3")  ── bind mount of a fresh netns at /run/netns/pod-3
//!   NetNs::open(path)       ── any netns file (/run/netns/x, /proc/<pid>/ns/net)
//!        │
//!        ├── ns.run(|| ...)        run a closure on a thread inside the namespace
//!        ├── NetNsGuard::enter(ns) switch this thread, switch back on drop
//!        ├── ns.command("etcd")    a std Command that execs inside the namespace
//!        └── ns.delete()           unmount and unlink the name
//!
//!   netlink::Netlink::open_in(&ns) ── a synchronous rtnetlink socket inside `ns`:
//!        links (bridge, veth), addresses, routes, without `ip` or an async runtime
//! ```
//!
//! Named namespaces live in `/run/netns` like `ip netns add` makes them, so `ip -n NAME`
//! and `ip netns exec` work on them; unlike `ip netns add`, creating one never turns
//! `/run/netns` into a mount point of its own, so the root namespace's mount table is
//! exactly as it was once every namespace is deleted.

pub mod netlink;
mod sys;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where named network namespaces live (the iproute2 convention).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors from namespace operations; each names the namespace it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid netns name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("netns {path}: already exists")]
    Exists { path: PathBuf },
    #[error("open netns {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("create netns {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("delete netns {path}: {source}")]
    Delete { path: PathBuf, source: io::Error },
    #[error("enter netns {path}: {source}")]
    Enter { path: PathBuf, source: io::Error },
    #[error("thread running in netns {path} panicked")]
    ThreadPanicked { path: PathBuf },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A network namespace, held open by a file descriptor.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    file: File,
}

impl NetNs {
    /// Creates a named namespace at `/run/netns/<name>` (with `lo` down, as the kernel
    /// makes it). Fails if the name is taken.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        Self::create_at(&Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Creates a namespace and bind-mounts it at `path` (a file that must not exist yet).
    pub fn create_at(path: &Path) -> Result<NetNs> {
        let err = |source| Error::Create {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(err(e)),
        }
        let target = path.to_owned();
        // unshare() on a short-lived thread so the caller's thread never changes namespace.
        let made = std::thread::spawn(move || sys::unshare_net_and_bind(&target))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(err(e));
        }
        Self::open(path)
    }

    /// Opens an existing namespace file: `/run/netns/<name>`, `/proc/<pid>/ns/net`, or
    /// any bind mount of one. A bare name is looked up in `/run/netns`.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let path = if path.components().count() == 1 && !path.is_absolute() {
            Path::new(NETNS_RUN_DIR).join(path)
        } else {
            path.to_owned()
        };
        let file = File::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        sys::check_is_netns(&file).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        Ok(NetNs { path, file })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name under `/run/netns`, if it lives there.
    pub fn name(&self) -> Option<&str> {
        self.path
            .strip_prefix(NETNS_RUN_DIR)
            .ok()
            .and_then(|p| p.to_str())
            .filter(|s| !s.is_empty() && !s.contains('/'))
    }

    /// The namespace's inode number: two handles are the same namespace when these match.
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.ino())
    }

    /// The open namespace file (for setns, or to hand to netlink).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// The caller's thread is never moved.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _guard = NetNsGuard::enter(self)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::ThreadPanicked {
                    path: self.path.clone(),
                })
            })
        })
    }

    /// A `Command` whose child enters this namespace just before exec, and leads its own
    /// process group (so the whole group can be stopped by the child's pid).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let mut cmd = Command::new(program);
        self.prepare(&mut cmd)?;
        Ok(cmd)
    }

    /// Makes an existing `Command` exec inside this namespace, in its own process group.
    pub fn prepare(&self, cmd: &mut Command) -> Result<()> {
        let fd = self
            .file
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::Open {
                path: self.path.clone(),
                source,
            })?;
        sys::setns_before_exec(cmd, fd);
        Ok(())
    }

    /// Unmounts and removes a namespace created under a name. Processes still inside keep
    /// it alive, but it is no longer reachable by name. Missing is not an error.
    pub fn delete_named(name: &str) -> Result<()> {
        validate_name(name)?;
        Self::delete_at(&Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Unmounts and removes the namespace mount at `path`. Missing is not an error.
    pub fn delete_at(path: &Path) -> Result<()> {
        let err = |source| Error::Delete {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            return Ok(());
        }
        sys::detach_mount(path).map_err(err)?;
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

/// Names of the namespaces in `/run/netns`.
pub fn list_named() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => {
            for entry in dir {
                if let Some(name) = entry?.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Pids of the processes whose main thread is in the namespace with inode `ino`.
pub fn pids_in(ino: u64) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| m.ino() == ino)
                .unwrap_or(false)
        })
        .collect()
}

fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return bad("must not be '.', '..' or contain '/'");
    }
    Ok(())
}

/// Switches the current thread into a namespace and back on drop.
///
/// The guard is `!Send`: it must be dropped on the thread that made it.
#[derive(Debug)]
pub struct NetNsGuard {
    previous: File,
    path: PathBuf,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl NetNsGuard {
    /// Enters `ns` on this thread.
    pub fn enter(ns: &NetNs) -> Result<NetNsGuard> {
        let previous = File::open("/proc/thread-self/ns/net").map_err(|source| Error::Open {
            path: "/proc/thread-self/ns/net".into(),
            source,
        })?;
        sys::setns_net(ns.file.as_fd()).map_err(|source| Error::Enter {
            path: ns.path.clone(),
            source,
        })?;
        Ok(NetNsGuard {
            previous,
            path: ns.path.clone(),
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = sys::setns_net(self.previous.as_fd()) {
            // A thread stuck in the wrong namespace would silently act on the wrong
            // network; that is worse than stopping.
            panic!("leave netns {}: {e}", self.path.display());
        }
    }
}
