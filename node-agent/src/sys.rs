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
}

/// Makes the child of `cmd` leave the caller's session, join the cgroup whose
/// `cgroup.procs` is open as `cgroup_procs`, unshare the given namespaces and set the
/// hostname in its new UTS namespace, then exec.
pub(crate) fn pause_hooks(
    cmd: &mut Command,
    unshare: Unshare,
    hostname: Option<CString>,
    cgroup_procs: Option<OwnedFd>,
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
    // SAFETY: the closure runs in the forked child before exec. It calls only setsid(2),
    // write(2), unshare(2) and sethostname(2), all async-signal-safe, on a descriptor
    // and a C string owned by the closure (moved in before the fork), and allocates
    // nothing.
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
            Ok(())
        });
    }
}

/// Makes the child of `cmd` join the namespaces open in `namespaces` (each with its
/// CLONE_NEW* type), join a cgroup, and lead a new session, then exec.
///
/// With `user` = (uid, gid) the child then drops to that user (supplementary groups =
/// the gid), after the namespace switches that need root.
pub(crate) fn join_hooks(
    cmd: &mut Command,
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    cgroup_procs: Option<OwnedFd>,
    new_session: bool,
    user: Option<(u32, u32)>,
) {
    // SAFETY: runs in the forked child before exec; only setns(2), write(2), setsid(2),
    // setgroups(2), setgid(2) and setuid(2) on descriptors owned by the closure and a
    // stack variable; no allocation.
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

/// Writes "0" (meaning "this process") to an open `cgroup.procs`.
fn write_zero(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: write(2) of one byte from a static buffer to an open descriptor.
    let n = unsafe { libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
