//! Pod status from what the runtime observed (pure): phase, conditions, IPs, container
//! states and restart counts, as the kubelet reports them.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::PodSnapshot;
use crate::state::Termination;

/// A k8s Time from a SystemTime (whole seconds, as the API stores them).
pub fn time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

fn terminated(t: &Termination) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(format!("skein://{}", t.id)),
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.map(time),
            finished_at: Some(time(t.finished_at)),
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: message.map(str::to_owned),
        }),
        ..Default::default()
    }
}

/// Computes the pod's status. `prev` (the status last reported) keeps each condition's
/// lastTransitionTime while its status does not change.
pub fn pod_status(snap: &PodSnapshot, prev: Option<&PodStatus>, now: SystemTime) -> PodStatus {
    let spec = snap.record.pod.spec.clone().unwrap_or_default();
    let sandbox_ready = snap.record.sandbox.is_some();
    let mut statuses = Vec::new();
    // For the phase: (running, waiting-never-ran, succeeded, failed).
    let (mut running, mut fresh, mut succeeded, mut failed) = (0, 0, 0, 0);
    for c in &spec.containers {
        let rec = snap
            .record
            .containers
            .get(&c.name)
            .cloned()
            .unwrap_or_default();
        let view = snap.containers.get(&c.name).cloned().unwrap_or_default();
        let (state, last) = if let Some(r) = &rec.running {
            running += 1;
            let st = ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(r.started_at)),
                }),
                ..Default::default()
            };
            (st, rec.last.as_ref().map(terminated))
        } else if let Some(t) = &rec.terminated {
            if t.exit_code == 0 {
                succeeded += 1;
            } else {
                failed += 1;
            }
            match &view.waiting {
                Some((reason, msg)) => (waiting(reason, Some(msg)), Some(terminated(t))),
                None => (terminated(t), rec.last.as_ref().map(terminated)),
            }
        } else {
            fresh += 1;
            let st = match &view.waiting {
                Some((reason, msg)) => waiting(reason, Some(msg)),
                None => waiting("ContainerCreating", None),
            };
            (st, None)
        };
        let id = rec
            .running
            .as_ref()
            .map(|r| r.id.clone())
            .or_else(|| rec.terminated.as_ref().map(|t| t.id.clone()));
        statuses.push(ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            container_id: id.map(|i| format!("skein://{i}")),
            ready: rec.running.is_some() && view.ready,
            started: Some(rec.running.is_some() && view.started),
            restart_count: rec.restart_count as i32,
            state: Some(state),
            last_state: last,
            ..Default::default()
        });
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    // A container that never ran keeps the pod Pending.
    let phase = if fresh > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if succeeded + failed > 0 {
        match policy {
            "Never" if failed > 0 => "Failed",
            "Never" => "Succeeded",
            "OnFailure" if failed == 0 => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    };
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let not_ready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = prev
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| time(now));
        PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.filter(|_| !ok).map(str::to_owned),
            message: message.filter(|_| !ok),
            last_transition_time: Some(since),
            ..Default::default()
        }
    };
    let nr_msg = Some(format!(
        "containers with unready status: [{}]",
        not_ready.join(" ")
    ));
    let terminal = phase == "Succeeded" || phase == "Failed";
    let reason = if terminal {
        Some("PodCompleted")
    } else {
        Some("ContainersNotReady")
    };
    let conditions = vec![
        cond(
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            snap.sandbox_error.clone(),
        ),
        cond("Initialized", true, None, None),
        cond(
            "ContainersReady",
            all_ready && !terminal,
            reason,
            nr_msg.clone(),
        ),
        cond(
            "Ready",
            all_ready && !terminal && !snap.terminating,
            reason,
            nr_msg,
        ),
        cond("PodScheduled", true, None, None),
    ];
    let ips: Vec<String> = snap
        .record
        .sandbox
        .as_ref()
        .map(|sb| sb.ips.iter().map(|i| i.to_string()).collect())
        .unwrap_or_default();
    let host_ip = snap.node_ip.map(|i| i.to_string());
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        message: snap.sandbox_error.as_ref().map(|e| format!("sandbox: {e}")),
        reason: None,
        host_ip: host_ip.clone(),
        host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.into_iter().map(|ip| PodIP { ip }).collect()),
        start_time: Some(time(snap.record.accepted_at)),
        container_statuses: Some(statuses),
        qos_class: Some("BestEffort".into()),
        ..Default::default()
    }
}
