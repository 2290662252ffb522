//! The crate's only unsafe code: what a forked child does between fork and exec.
//!
//! Every hook runs in the child only, uses only async-signal-safe syscalls, and works on
//! file descriptors and C strings prepared before the fork (no allocation after fork).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Namespaces a pause process unshares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unshare {
    pub net: bool,
    pub uts: bool,
    pub ipc: bool,
    /// A mount namespace, made private (nothing propagates back to the node).
    pub mnt: bool,
}

/// A bind mount made inside the pause's new mount namespace: (source, target).
pub(crate) type Bind = (CString, CString);

/// Makes the child of `cmd` leave the caller's session, join the cgroup whose
/// `cgroup.procs` is open as `cgroup_procs`, unshare the given namespaces, set the
/// hostname in its new UTS namespace, and in its new mount namespace make every mount
/// private and bind `binds` (files over files), then exec.
pub(crate) fn pause_hooks(
    cmd: &mut Command,
    unshare: Unshare,
    hostname: Option<CString>,
    cgroup_procs: Option<OwnedFd>,
    binds: Vec<Bind>,
) {
    let mut flags = 0;
    if unshare.net {
        flags |= libc::CLONE_NEWNET;
    }
    if unshare.uts {
        flags |= libc::CLONE_NEWUTS;
    }
    if unshare.ipc {
        flags |= libc::CLONE_NEWIPC;
    }
    if unshare.mnt {
        flags |= libc::CLONE_NEWNS;
    }
    let mnt = unshare.mnt;
    // SAFETY: the closure runs in the forked child before exec. It calls only setsid(2),
    // write(2), unshare(2), sethostname(2) and mount(2), all async-signal-safe, on a
    // descriptor and C strings owned by the closure (moved in before the fork), and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = &cgroup_procs {
                write_zero(fd)?;
            }
            if flags != 0 && libc::unshare(flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(name) = &hostname {
                let bytes = name.as_bytes();
                if libc::sethostname(name.as_ptr(), bytes.len()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if mnt {
                // Private: mounts made here stay here, and the node's later mounts do
                // not reach the pod.
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for (src, dst) in &binds {
                    if libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
}

/// Makes the child of `cmd` join the namespaces open in `namespaces` (each with its
/// CLONE_NEW* type), join a cgroup, and lead a new session, then exec.
///
/// Joining a mount namespace moves the working directory to its root, so `cwd` (the
/// container's workingDir) is entered after the switches, and `/` when there is none.
/// With `user` = (uid, gid) the child then drops to that user (supplementary groups =
/// the gid), after the namespace switches that need root.
pub(crate) fn join_hooks(
    cmd: &mut Command,
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    cgroup_procs: Option<OwnedFd>,
    new_session: bool,
    user: Option<(u32, u32)>,
    cwd: Option<CString>,
) {
    // SAFETY: runs in the forked child before exec; only setns(2), write(2), setsid(2),
    // chdir(2), setgroups(2), setgid(2) and setuid(2) on descriptors and a C string owned
    // by the closure and a stack variable; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if new_session && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = &cgroup_procs {
                write_zero(fd)?;
            }
            for (fd, kind) in &namespaces {
                if libc::setns(fd.as_raw_fd(), *kind) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(dir) = &cwd
                && libc::chdir(dir.as_ptr()) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid)) = user {
                let groups = [gid as libc::gid_t];
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A path as a C string for the hooks (a path with a NUL byte is refused).
pub(crate) fn path_cstring(path: &std::path::Path) -> Result<CString, String> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path {} has a NUL byte", path.display()))
}

/// Writes "0" (meaning "this process") to an open `cgroup.procs`.
fn write_zero(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: write(2) of one byte from a static buffer to an open descriptor.
    let n = unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
