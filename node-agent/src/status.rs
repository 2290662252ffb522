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

#[derive(Default)]
struct Counts {
    running: u32,
    fresh: u32,
    succeeded: u32,
    failed: u32,
}

fn container_status(
    snap: &PodSnapshot,
    c: &k8s_openapi::api::core::v1::Container,
    initializing: bool,
    n: &mut Counts,
) -> ContainerStatus {
    let rec = snap
        .record
        .containers
        .get(&c.name)
        .cloned()
        .unwrap_or_default();
    let view = snap.containers.get(&c.name).cloned().unwrap_or_default();
    let (state, last) = if let Some(r) = &rec.running {
        n.running += 1;
        let st = ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(r.started_at)),
            }),
            ..Default::default()
        };
        (st, rec.last.as_ref().map(terminated))
    } else if let Some(t) = &rec.terminated {
        if t.exit_code == 0 {
            n.succeeded += 1;
        } else {
            n.failed += 1;
        }
        match &view.waiting {
            Some((reason, msg)) => (waiting(reason, Some(msg)), Some(terminated(t))),
            None => (terminated(t), rec.last.as_ref().map(terminated)),
        }
    } else {
        n.fresh += 1;
        let st = match &view.waiting {
            Some((reason, msg)) => waiting(reason, Some(msg)),
            None if initializing => waiting("PodInitializing", None),
            None => waiting("ContainerCreating", None),
        };
        (st, None)
    };
    let id = rec
        .running
        .as_ref()
        .map(|r| r.id.clone())
        .or_else(|| rec.terminated.as_ref().map(|t| t.id.clone()));
    ContainerStatus {
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
    }
}

/// The pod's QoS class from its containers' resources (the Kubernetes rules):
/// Guaranteed when every container limits cpu and memory with requests equal to the
/// limits (or unset), BestEffort when nothing requests or limits anything, else Burstable.
pub fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        let relevant = |m: &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >| { m.keys().any(|k| k == "cpu" || k == "memory") };
        any |= relevant(&req) || relevant(&lim);
        for res in ["cpu", "memory"] {
            match (lim.get(res), req.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Computes the pod's status. `prev` (the status last reported) keeps each condition's
/// lastTransitionTime while its status does not change.
pub fn pod_status(snap: &PodSnapshot, prev: Option<&PodStatus>, now: SystemTime) -> PodStatus {
    let spec = snap.record.pod.spec.clone().unwrap_or_default();
    let sandbox_ready = snap.record.sandbox.is_some();
    // For the phase: (running, waiting-never-ran, succeeded, failed).

    let mut init_counts = Counts::default();
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(snap, c, false, &mut init_counts))
        .collect();
    let initializing = !snap.record.initialized && !init_statuses.is_empty();
    let mut counts = Counts::default();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(snap, c, initializing, &mut counts))
        .collect();
    let Counts {
        running,
        fresh,
        succeeded,
        failed,
    } = counts;
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let initialized = snap.record.initialized || init_statuses.is_empty();
    let init_failed = !initialized && policy == "Never" && init_counts.failed > 0;
    // A container that never ran keeps the pod Pending.
    let phase = if init_failed {
        "Failed"
    } else if fresh > 0 {
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
        cond(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                init_statuses
                    .iter()
                    .filter(|s| s
                        .state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_none_or(|t| t.exit_code != 0))
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        ),
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
    let ips: Vec<String> = match (&snap.record.sandbox, &snap.record.finished) {
        (Some(sb), _) => sb.ips.iter().map(|i| i.to_string()).collect(),
        (None, Some(ips)) => ips.iter().map(|i| i.to_string()).collect(),
        (None, None) => Vec::new(),
    };
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
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: Some(qos_class(&spec).into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerView;
    use crate::state::{ContainerRecord, PodRecord, RunningRecord, SandboxRecord};
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn snapshot(
        policy: &str,
        containers: Vec<(&str, ContainerRecord, ContainerView)>,
    ) -> PodSnapshot {
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u1".into());
        pod.spec = Some(PodSpec {
            restart_policy: Some(policy.into()),
            containers: containers
                .iter()
                .map(|(n, _, _)| Container {
                    name: (*n).into(),
                    image: Some("img".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        PodSnapshot {
            record: PodRecord {
                pod,
                accepted_at: t(0),
                sandbox: Some(SandboxRecord {
                    id: "sb".into(),
                    pause: crate::procfs::ProcRef {
                        pid: 1,
                        start_time: 1,
                    },
                    netns: None,
                    ips: vec!["10.244.1.7".parse().unwrap()],
                    network: Some("n".into()),
                    loopback: true,
                    created_at: t(1),
                    setup: Default::default(),
                }),
                containers: containers
                    .iter()
                    .map(|(n, r, _)| ((*n).to_owned(), r.clone()))
                    .collect(),
                finished: None,
                initialized: true,
            },
            containers: containers
                .into_iter()
                .map(|(n, _, v)| (n.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
            sandbox_error: None,
            terminating: false,
            node_ip: Some("198.51.100.11".parse().unwrap()),
        }
    }

    fn running(restarts: u32) -> ContainerRecord {
        ContainerRecord {
            restart_count: restarts,
            running: Some(RunningRecord {
                id: "c1".into(),
                proc: crate::procfs::ProcRef {
                    pid: 5,
                    start_time: 5,
                },
                started_at: t(2),
                log: "/x".into(),
            }),
            last: (restarts > 0).then(|| term(137, Some(9))),
            ..Default::default()
        }
    }

    fn term(code: i32, signal: Option<i32>) -> Termination {
        Termination {
            id: "c0".into(),
            exit_code: code,
            signal,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: Some(t(1)),
            finished_at: t(2),
        }
    }

    fn view(ready: bool) -> ContainerView {
        ContainerView {
            ready,
            started: true,
            waiting: None,
        }
    }

    fn cond<'a>(st: &'a PodStatus, ty: &str) -> &'a PodCondition {
        st.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap()
    }

    #[test]
    fn running_ready_pod() {
        let s = snapshot("Always", vec![("a", running(2), view(true))]);
        let st = pod_status(&s, None, t(10));
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.244.1.7"));
        assert_eq!(st.pod_ips.as_ref().unwrap()[0].ip, "10.244.1.7");
        assert_eq!(st.host_ip.as_deref(), Some("198.51.100.11"));
        assert_eq!(cond(&st, "Ready").status, "True");
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 2);
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("skein://c1"));
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            137
        );
    }

    #[test]
    fn unready_container_names_itself_and_keeps_transition_times() {
        let s = snapshot(
            "Always",
            vec![
                ("a", running(0), view(true)),
                ("b", running(0), view(false)),
            ],
        );
        let first = pod_status(&s, None, t(10));
        let ready = cond(&first, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert!(ready.message.as_ref().unwrap().contains("[b]"));
        // Same facts later: same status, transition times kept, so no new patch.
        let again = pod_status(&s, Some(&first), t(50));
        assert_eq!(again, first);
        // Flip: the Ready condition's transition time moves.
        let s2 = snapshot(
            "Always",
            vec![("a", running(0), view(true)), ("b", running(0), view(true))],
        );
        let flipped = pod_status(&s2, Some(&first), t(60));
        assert_eq!(cond(&flipped, "Ready").status, "True");
        assert_eq!(
            cond(&flipped, "Ready").last_transition_time,
            Some(time(t(60)))
        );
        assert_eq!(
            cond(&flipped, "PodScheduled").last_transition_time,
            Some(time(t(10)))
        );
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let done = |code| ContainerRecord {
            terminated: Some(term(code, None)),
            ..Default::default()
        };
        let phase = |policy, code| {
            pod_status(
                &snapshot(policy, vec![("a", done(code), view(false))]),
                None,
                t(5),
            )
            .phase
            .unwrap()
        };
        assert_eq!(phase("Never", 0), "Succeeded");
        assert_eq!(phase("Never", 1), "Failed");
        assert_eq!(phase("OnFailure", 0), "Succeeded");
        assert_eq!(phase("OnFailure", 1), "Running");
        assert_eq!(phase("Always", 0), "Running");
        let st = pod_status(
            &snapshot("Never", vec![("a", done(0), view(false))]),
            None,
            t(5),
        );
        assert_eq!(cond(&st, "Ready").reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn waiting_containers() {
        let mut v = view(false);
        v.waiting = Some(("CreateContainerConfigError".into(), "no command".into()));
        let st = pod_status(
            &snapshot("Always", vec![("a", ContainerRecord::default(), v)]),
            None,
            t(5),
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let w = st.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));

        let mut v = view(false);
        v.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s".into()));
        let rec = ContainerRecord {
            restart_count: 3,
            terminated: Some(term(1, None)),
            ..Default::default()
        };
        let st = pod_status(&snapshot("Always", vec![("a", rec, v)]), None, t(5));
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let cs = &st.container_statuses.unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        assert_eq!(cs.restart_count, 3);

        let st = pod_status(
            &snapshot(
                "Always",
                vec![("a", ContainerRecord::default(), view(false))],
            ),
            None,
            t(5),
        );
        let w = st.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
    }

    #[test]
    fn qos_classes() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let q = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect(),
            )
        };
        let spec = |res: Vec<Option<ResourceRequirements>>| PodSpec {
            containers: res
                .into_iter()
                .map(|r| Container {
                    name: "c".into(),
                    resources: r,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(qos_class(&spec(vec![None, None])), "BestEffort");
        let full = ResourceRequirements {
            limits: q(&[("cpu", "1"), ("memory", "1Gi")]),
            ..Default::default()
        };
        assert_eq!(qos_class(&spec(vec![Some(full.clone())])), "Guaranteed");
        let eq = ResourceRequirements {
            limits: q(&[("cpu", "1"), ("memory", "1Gi")]),
            requests: q(&[("cpu", "1"), ("memory", "1Gi")]),
            ..Default::default()
        };
        assert_eq!(qos_class(&spec(vec![Some(eq)])), "Guaranteed");
        let req_only = ResourceRequirements {
            requests: q(&[("cpu", "100m")]),
            ..Default::default()
        };
        assert_eq!(qos_class(&spec(vec![Some(req_only)])), "Burstable");
        assert_eq!(qos_class(&spec(vec![Some(full), None])), "Burstable");
    }

    #[test]
    fn terminating_pod_is_not_ready() {
        let mut s = snapshot("Always", vec![("a", running(0), view(true))]);
        s.terminating = true;
        assert_eq!(cond(&pod_status(&s, None, t(5)), "Ready").status, "False");
    }
}
