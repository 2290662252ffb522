//! iproute2 inside a named namespace (`ip -n NAME ...`): the test bed's link plumbing.
//! The test bed is not on any hot path, and `ip` keeps each step readable and easy to
//! replay by hand when debugging a bed.

use std::process::Command;

use crate::{Result, run_checked};

/// Runs `ip -n <netns> <args..>`; fails with ip's own message.
pub(crate) fn run(netns: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.arg("-n").arg(netns).args(args);
    run_checked(&mut cmd)
}
