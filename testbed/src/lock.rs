//! A machine-wide lock between test beds: every bed holds it shared; a test that must see
//! the root namespace undisturbed (the teardown snapshot test) holds it exclusively.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result, STATE_ROOT, io_err};

static EXCLUSIVE_HELD: AtomicBool = AtomicBool::new(false);

/// A held bed lock; released on drop.
#[derive(Debug)]
pub struct BedLock {
    _lock: Option<Flock<File>>,
    exclusive: bool,
}

impl Drop for BedLock {
    fn drop(&mut self) {
        if self.exclusive {
            EXCLUSIVE_HELD.store(false, Ordering::SeqCst);
        }
    }
}

fn open() -> Result<File> {
    std::fs::create_dir_all(STATE_ROOT).map_err(io_err(format!("create {STATE_ROOT}")))?;
    let path = format!("{STATE_ROOT}/.testbed.lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {path}")))
}

fn take(arg: FlockArg) -> Result<Flock<File>> {
    Flock::lock(open()?, arg).map_err(|(_, e)| Error::Io {
        what: format!("lock {STATE_ROOT}/.testbed.lock"),
        source: e.into(),
    })
}

/// Waits until no other bed exists on the machine and keeps others out until dropped.
/// Beds started by this process meanwhile do not wait for it.
pub fn exclusive_lock() -> Result<BedLock> {
    let lock = take(FlockArg::LockExclusive)?;
    EXCLUSIVE_HELD.store(true, Ordering::SeqCst);
    Ok(BedLock {
        _lock: Some(lock),
        exclusive: true,
    })
}

/// Takes the bed lock shared, as every bed does while it exists (waits while a test
/// holds it exclusively). A long-lived cluster's keeper process holds it for the
/// cluster's lifetime.
pub fn shared_lock() -> Result<BedLock> {
    if EXCLUSIVE_HELD.load(Ordering::SeqCst) {
        return Ok(BedLock {
            _lock: None,
            exclusive: false,
        });
    }
    Ok(BedLock {
        _lock: Some(take(FlockArg::LockShared)?),
        exclusive: false,
    })
}
