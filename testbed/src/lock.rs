//! A machine-wide lock between test beds: every bed holds it shared; a test that must see
//! the root namespace undisturbed (the teardown snapshot test) holds it exclusively.
//!
//! flock alone would starve the exclusive waiter while beds keep starting, so a second
//! lock file works as a turnstile: the exclusive taker holds it while it waits, and every
//! new bed passes through it (takes and drops it) before taking its shared lock. A
//! process that already holds a shared lock (a test making a second bed) joins directly:
//! queueing behind the exclusive waiter would wait for itself.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result, STATE_ROOT, io_err};

static EXCLUSIVE_HELD: AtomicBool = AtomicBool::new(false);
/// Shared locks this process holds now.
static SHARED_HELD: AtomicUsize = AtomicUsize::new(0);

/// A held bed lock; released on drop.
#[derive(Debug)]
pub struct BedLock {
    _lock: Option<Flock<File>>,
    exclusive: bool,
}

impl BedLock {
    fn shared(lock: Option<Flock<File>>) -> BedLock {
        if lock.is_some() {
            SHARED_HELD.fetch_add(1, Ordering::SeqCst);
        }
        BedLock {
            _lock: lock,
            exclusive: false,
        }
    }
}

impl Drop for BedLock {
    fn drop(&mut self) {
        if self.exclusive {
            EXCLUSIVE_HELD.store(false, Ordering::SeqCst);
        } else if self._lock.is_some() {
            SHARED_HELD.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn open(name: &str) -> Result<File> {
    std::fs::create_dir_all(STATE_ROOT).map_err(io_err(format!("create {STATE_ROOT}")))?;
    let path = format!("{STATE_ROOT}/{name}");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {path}")))
}

const MAIN: &str = ".testbed.lock";
const TURNSTILE: &str = ".testbed.turnstile";

fn take(name: &str, arg: FlockArg) -> Result<Flock<File>> {
    Flock::lock(open(name)?, arg).map_err(|(_, e)| Error::Io {
        what: format!("lock {STATE_ROOT}/{name}"),
        source: e.into(),
    })
}

/// Waits until no other bed exists on the machine and keeps others out until dropped.
/// Beds started by this process meanwhile do not wait for it.
pub fn exclusive_lock() -> Result<BedLock> {
    let turnstile = take(TURNSTILE, FlockArg::LockExclusive)?;
    let lock = take(MAIN, FlockArg::LockExclusive)?;
    drop(turnstile);
    EXCLUSIVE_HELD.store(true, Ordering::SeqCst);
    Ok(BedLock {
        _lock: Some(lock),
        exclusive: true,
    })
}

/// Takes the bed lock shared for a process that a bed's holder started and waits for
/// (a cluster's relay started by `skeinctl up`): it skips the turnstile, because an
/// exclusive waiter queued there waits for the very holder that waits for this process.
/// The lock is granted at once while the parent still holds it shared.
pub fn join_shared_lock() -> Result<BedLock> {
    Ok(BedLock::shared(Some(take(MAIN, FlockArg::LockShared)?)))
}

/// Takes the bed lock shared, as every bed does while it exists (waits while a test
/// holds it exclusively). A long-lived cluster's keeper process holds it for the
/// cluster's lifetime.
pub fn shared_lock() -> Result<BedLock> {
    if EXCLUSIVE_HELD.load(Ordering::SeqCst) {
        return Ok(BedLock::shared(None));
    }
    if SHARED_HELD.load(Ordering::SeqCst) == 0 {
        drop(take(TURNSTILE, FlockArg::LockExclusive)?);
    }
    Ok(BedLock::shared(Some(take(MAIN, FlockArg::LockShared)?)))
}
