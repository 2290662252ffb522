//! Probe decisions (pure): when a probe is due, and what a run of results means,
//! following the kubelet's rules.
//!
//! - startup: Unknown until `successThreshold` successes; while it has not succeeded,
//!   liveness and readiness do not run; `failureThreshold` failures kill the container.
//! - liveness: Success until `failureThreshold` consecutive failures, which kill the
//!   container (then restartPolicy decides).
//! - readiness: Failure until `successThreshold` consecutive successes; drives Ready.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

/// The three kinds of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

/// Timing and thresholds of a probe, with the Kubernetes defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// initialDelaySeconds (default 0).
    pub initial_delay: Duration,
    /// periodSeconds (default 10).
    pub period: Duration,
    /// timeoutSeconds (default 1).
    pub timeout: Duration,
    /// successThreshold (default 1).
    pub success_threshold: u32,
    /// failureThreshold (default 3).
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// Reads a probe's timing (values below the API's minimums are raised to them).
    pub fn of(p: &Probe) -> ProbeTiming {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        ProbeTiming {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// The latest verdict of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet (startup before its threshold).
    Unknown,
    /// Passing.
    Success,
    /// Failing.
    Failure,
}

/// One probe of one container instance: counts results, decides the verdict.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    /// Which probe.
    pub kind: ProbeKind,
    /// Its timing.
    pub timing: ProbeTiming,
    verdict: Verdict,
    successes: u32,
    failures: u32,
    runs: u32,
    last_run: Option<Duration>,
}

impl ProbeTracker {
    /// A tracker for a freshly started container.
    pub fn new(kind: ProbeKind, timing: ProbeTiming) -> ProbeTracker {
        let verdict = match kind {
            ProbeKind::Startup => Verdict::Unknown,
            ProbeKind::Liveness => Verdict::Success,
            ProbeKind::Readiness => Verdict::Failure,
        };
        ProbeTracker {
            kind,
            timing,
            verdict,
            successes: 0,
            failures: 0,
            runs: 0,
            last_run: None,
        }
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Whether the probe should run now, `since_start` after the container started.
    pub fn due(&self, since_start: Duration) -> bool {
        if since_start < self.timing.initial_delay {
            return false;
        }
        match self.last_run {
            None => true,
            Some(last) => since_start >= last + self.timing.period,
        }
    }

    /// Records one result taken `since_start` after start. Returns the new verdict when
    /// it changed.
    pub fn record(&mut self, since_start: Duration, ok: bool) -> Option<Verdict> {
        self.runs += 1;
        self.last_run = Some(since_start);
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = if ok && self.successes >= self.timing.success_threshold {
            Verdict::Success
        } else if !ok && self.failures >= self.timing.failure_threshold {
            Verdict::Failure
        } else {
            self.verdict
        };
        (next != self.verdict).then(|| {
            self.verdict = next;
            next
        })
    }
}

/// What the probes of a running container say, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Startup passed (or there is no startup probe).
    pub started: bool,
    /// Ready: started and readiness passing (or no readiness probe).
    pub ready: bool,
    /// The container must be killed (liveness or startup failed).
    pub kill: Option<ProbeKind>,
}

/// Combines the trackers of one container instance.
pub fn outcome(
    startup: Option<&ProbeTracker>,
    liveness: Option<&ProbeTracker>,
    readiness: Option<&ProbeTracker>,
) -> ProbeOutcome {
    let started = startup.is_none_or(|t| t.verdict() == Verdict::Success);
    let kill = if startup.is_some_and(|t| t.verdict() == Verdict::Failure) {
        Some(ProbeKind::Startup)
    } else if started && liveness.is_some_and(|t| t.verdict() == Verdict::Failure) {
        Some(ProbeKind::Liveness)
    } else {
        None
    };
    let ready =
        started && kill.is_none() && readiness.is_none_or(|t| t.verdict() == Verdict::Success);
    ProbeOutcome {
        started,
        ready,
        kill,
    }
}

/// Which probes run now: none but startup until startup has succeeded.
pub fn should_run(kind: ProbeKind, started: bool) -> bool {
    match kind {
        ProbeKind::Startup => !started,
        _ => started,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> ProbeTiming {
        ProbeTiming {
            initial_delay: Duration::from_secs(2),
            period: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_and_minimums() {
        let t = ProbeTiming::of(&Probe {
            period_seconds: Some(0),
            ..Default::default()
        });
        assert_eq!(t.period, Duration::from_secs(1));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        assert_eq!(t.initial_delay, Duration::ZERO);
    }

    #[test]
    fn due_respects_initial_delay_and_period() {
        let mut p = ProbeTracker::new(ProbeKind::Readiness, timing(1, 3));
        assert!(!p.due(Duration::from_secs(1)));
        assert!(p.due(Duration::from_secs(2)));
        p.record(Duration::from_secs(2), true);
        assert!(!p.due(Duration::from_secs(6)));
        assert!(p.due(Duration::from_secs(7)));
    }

    #[test]
    fn readiness_starts_failing_and_flips_on_thresholds() {
        let s = Duration::from_secs(3);
        let mut p = ProbeTracker::new(ProbeKind::Readiness, timing(2, 2));
        assert_eq!(p.verdict(), Verdict::Failure);
        assert_eq!(p.record(s, true), None);
        assert_eq!(p.record(s, true), Some(Verdict::Success));
        assert_eq!(p.record(s, false), None);
        assert_eq!(
            p.record(s, true),
            None,
            "a success resets the failure count"
        );
        assert_eq!(p.record(s, false), None);
        assert_eq!(p.record(s, false), Some(Verdict::Failure));
    }

    #[test]
    fn liveness_kills_only_after_startup() {
        let s = Duration::from_secs(3);
        let mut startup = ProbeTracker::new(ProbeKind::Startup, timing(1, 2));
        let mut live = ProbeTracker::new(ProbeKind::Liveness, timing(1, 1));
        live.record(s, false);
        let o = outcome(Some(&startup), Some(&live), None);
        assert_eq!(
            o,
            ProbeOutcome {
                started: false,
                ready: false,
                kill: None
            }
        );
        assert!(should_run(ProbeKind::Startup, o.started));
        assert!(!should_run(ProbeKind::Liveness, o.started));
        startup.record(s, true);
        let o = outcome(Some(&startup), Some(&live), None);
        assert_eq!(o.kill, Some(ProbeKind::Liveness));
        assert!(!o.ready);
    }

    #[test]
    fn startup_failure_kills() {
        let s = Duration::from_secs(3);
        let mut startup = ProbeTracker::new(ProbeKind::Startup, timing(1, 2));
        startup.record(s, false);
        assert_eq!(outcome(Some(&startup), None, None).kill, None);
        startup.record(s, false);
        assert_eq!(
            outcome(Some(&startup), None, None).kill,
            Some(ProbeKind::Startup)
        );
    }

    #[test]
    fn no_probes_means_started_and_ready() {
        assert_eq!(
            outcome(None, None, None),
            ProbeOutcome {
                started: true,
                ready: true,
                kill: None
            }
        );
    }
}
