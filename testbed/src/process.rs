//! Processes the bed starts: one-shot commands and long-lived daemons, stopped by pid.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Error, Result, io_err};

/// Runs a command to completion and returns its stdout; a non-zero exit is an error that
/// carries the command line and its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {line}")))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A long-lived process that leads its own process group. Dropping it stops the group:
/// SIGTERM, then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    pid: i32,
    log: PathBuf,
    grace: Duration,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr appended to `log`. The command should come from
    /// [`crate::Host::command`] (or otherwise call `process_group(0)`), so that stopping
    /// the group stops everything it forked.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("open log {}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!("start {name} ({cmd:?})")))?;
        let pid = child.id() as i32;
        tracing::debug!(name, pid, log = %log.display(), "started");
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            pid,
            log: log.to_owned(),
            grace: Duration::from_secs(5),
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The daemon's name as given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Whether the process is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        if self.child.is_some() {
            let _ = killpg(Pid::from_raw(self.pid), signal);
        }
    }

    /// Stops at once with SIGKILL (a crash, for failure tests) and reaps it.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM to the group, waits up to the grace period, then SIGKILL. Reaps the child.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Whatever is left of the group (the leader, or children it forked) goes now.
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = child.wait();
    }

    /// Lets the process outlive this handle (and this program): nothing is stopped on
    /// drop. Returns what is needed to find it later; it is then stopped by pid (or by
    /// [`crate::sweep`], which finds it through its namespace or cgroup).
    pub fn detach(mut self) -> DetachedDaemon {
        // Dropping a `Child` neither kills nor waits for it; once it is gone, `Drop` for
        // `Daemon` has nothing left to stop.
        self.child = None;
        DetachedDaemon {
            name: std::mem::take(&mut self.name),
            pid: self.pid,
            log: std::mem::take(&mut self.log),
        }
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        }
    }
}

/// A daemon left running by [`Daemon::detach`]: no longer this program's child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedDaemon {
    /// The daemon's name as given at spawn.
    pub name: String,
    /// Its pid, also its process group id.
    pub pid: i32,
    /// Its log file.
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
