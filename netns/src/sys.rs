//! The crate's only unsafe code: raw namespace syscalls.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Moves this thread into a new network namespace and bind-mounts it at `target`.
/// Must run on a thread that exits afterwards (it never returns to its old namespace).
pub(crate) fn unshare_net_and_bind(target: &Path) -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    mount(
        Some("/proc/thread-self/ns/net"),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

pub(crate) fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

pub(crate) fn detach_mount(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point (a stale file left by a crash); removing it is enough.
        Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn check_is_netns(file: &File) -> io::Result<()> {
    let st = nix::sys::statfs::fstatfs(file).map_err(io::Error::from)?;
    if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a namespace file",
        ));
    }
    Ok(())
}

/// Arranges for the child of `cmd` to join the namespace `fd` and a new process group.
pub(crate) fn setns_before_exec(cmd: &mut Command, fd: OwnedFd) {
    cmd.process_group(0);
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe setns(2) syscall on a descriptor that the closure owns (the
    // OwnedFd is moved in, so it stays open for as long as the Command exists).
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &fd;
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
