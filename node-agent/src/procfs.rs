//! Processes identified across agent restarts: a pid plus its start time, so that a
//! recycled pid is never mistaken for the process the agent started.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process the agent started (or adopted): pid and kernel start time (clock ticks
/// since boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// State of a process from `/proc/<pid>/stat`: (state letter, start time).
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the state letter and start time out of a `/proc/<pid>/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after the last ')'.
pub(crate) fn parse_stat(text: &str) -> Option<(char, u64)> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After ')' the fields are numbered from 3: state is 3, starttime is 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

impl ProcRef {
    /// Identifies a running process by pid.
    pub fn of(pid: i32) -> Option<ProcRef> {
        stat(pid).map(|(_, start_time)| ProcRef { pid, start_time })
    }

    /// Whether this very process still runs (a zombie counts as exited).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((s, t)) if t == self.start_time && s != 'Z' && s != 'X')
    }

    /// Sends a signal to the process, if it is still this process.
    pub fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), sig);
        }
    }

    /// Sends a signal to the process group it leads, if it is still this process.
    pub fn signal_group(&self, sig: Signal) {
        if self.alive() {
            let _ = killpg(Pid::from_raw(self.pid), sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
    }

    #[test]
    fn own_process_is_alive_and_pid_reuse_is_detected() {
        let me = ProcRef::of(std::process::id() as i32).expect("own stat");
        assert!(me.alive());
        let other = ProcRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }
}
