//! Container restart back-off, as the kubelet does it: the first restart is immediate,
//! then the wait doubles from the initial delay up to a cap; a container that ran
//! longer than the reset window starts over.

use std::time::Duration;

/// Back-off settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first non-zero wait (kubelet: 10 s).
    pub initial: Duration,
    /// The cap (kubelet: 300 s).
    pub max: Duration,
    /// A run at least this long resets the back-off (kubelet: 10 min).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait before the restart numbered `step` (0 = the first restart).
    pub fn delay(&self, step: u32) -> Duration {
        if step == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(step - 1).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The step to use after an instance that ran for `ran`, given the current step.
    pub fn next_step(&self, step: u32, ran: Duration) -> u32 {
        if ran >= self.reset_after { 0 } else { step }
    }
}

/// Whether a container that exited with `exit_code` restarts under `policy`
/// (`Always`, the default; `OnFailure`; `Never`).
pub fn should_restart(policy: Option<&str>, exit_code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_initial_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        };
        let got: Vec<u64> = (0..8).map(|s| b.delay(s).as_secs()).collect();
        assert_eq!(got, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(100), Duration::from_secs(300));
    }

    #[test]
    fn long_run_resets_the_step() {
        let b = Backoff::default();
        assert_eq!(b.next_step(5, Duration::from_secs(30)), 5);
        assert_eq!(b.next_step(5, Duration::from_secs(600)), 0);
    }

    #[test]
    fn restart_policy() {
        assert!(should_restart(None, 0));
        assert!(should_restart(Some("Always"), 0));
        assert!(should_restart(Some("OnFailure"), 1));
        assert!(!should_restart(Some("OnFailure"), 0));
        assert!(!should_restart(Some("Never"), 137));
    }
}
