//! Node lifecycle: a node whose agent stopped heartbeating (its coordination Lease in
//! `kube-node-lease`, or the Ready condition's heartbeat) beyond the grace period turns
//! Ready=Unknown and gets the `node.kubernetes.io/unreachable` taints; after the eviction
//! delay its pods are deleted so their controllers replace them elsewhere.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::jiff::Timestamp;

/// The taint key for nodes that stopped heartbeating.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// The node's last heartbeat: the newer of its Lease's renewTime and its Ready
/// condition's lastHeartbeatTime.
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let from_status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    from_lease.max(from_status)
}

/// What the controller should do with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Heartbeats are fresh: remove our taints if present.
    Healthy,
    /// Stale: mark Ready=Unknown and taint.
    Unreachable,
    /// Stale for longer than the eviction delay: also evict its pods.
    Evict,
}

/// Judges a node. `started` is when this controller started: a node is never judged
/// stale on heartbeats older than our own start plus the grace period (after a restart
/// of the controller manager the cache may hold old times).
pub fn judge(
    heartbeat: Option<Timestamp>,
    now: Timestamp,
    started: Timestamp,
    grace_secs: i64,
    evict_secs: i64,
) -> Verdict {
    let since = heartbeat.unwrap_or(started).max(started);
    let age = now.as_second() - since.as_second();
    if age <= grace_secs {
        Verdict::Healthy
    } else if age > grace_secs + evict_secs {
        Verdict::Evict
    } else {
        Verdict::Unreachable
    }
}

/// The unreachable taints, as the node lifecycle controller sets them.
pub fn unreachable_taints() -> Vec<Taint> {
    ["NoSchedule", "NoExecute"]
        .iter()
        .map(|e| Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: (*e).into(),
            value: None,
            time_added: None,
        })
        .collect()
}

/// Whether the node carries our taint.
pub fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE_TAINT))
}

/// Whether the node's Ready condition is already Unknown.
pub fn ready_unknown(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn verdicts() {
        let start = t(1000);
        assert_eq!(
            judge(Some(t(1990)), t(2000), start, 40, 30),
            Verdict::Healthy
        );
        assert_eq!(
            judge(Some(t(1950)), t(2000), start, 40, 30),
            Verdict::Unreachable
        );
        assert_eq!(judge(Some(t(1900)), t(2000), start, 40, 30), Verdict::Evict);
        // Old heartbeats count from our own start.
        assert_eq!(judge(Some(t(10)), t(1020), start, 40, 30), Verdict::Healthy);
        assert_eq!(judge(None, t(1050), start, 40, 30), Verdict::Unreachable);
    }
}
