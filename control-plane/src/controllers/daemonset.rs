//! DaemonSet: one pod per eligible node (nodeSelector, required node affinity and
//! NoSchedule/NoExecute taints decide), bound directly to the node; pods of an old
//! template are replaced one node at a time (RollingUpdate with maxUnavailable 1).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::hash::{fnv32a, hash_json, safe_encode};
use super::podutil::{controller_ref, is_active, is_ready};
use crate::scheduler::{FilterFailure, NodeState, filter};

/// The label carrying the template hash on DaemonSet pods.
pub const TEMPLATE_LABEL: &str = "controller-revision-hash";

/// What to do for one DaemonSet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Pods to create (already bound to their node).
    pub create: Vec<Pod>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: DaemonSetStatus,
}

/// Plans a DaemonSet over all nodes, given the pods it owns.
pub fn plan(ds: &DaemonSet, nodes: &[&Node], owned: &[&Pod]) -> Plan {
    let hash = hash_json(&serde_json::to_value(&ds.spec.template).unwrap_or_default());
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in owned.iter().filter(|p| is_active(p)) {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    let mut plan = Plan::default();
    let (mut desired, mut current, mut ready, mut updated, mut misscheduled) = (0, 0, 0, 0, 0);
    let mut outdated_ready = Vec::new();
    let mut unavailable = 0;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let probe = template_pod(ds, &name, &hash);
        // Readiness of the node does not matter for a DaemonSet; the rest of the filters do.
        let fits = filter(&probe, &NodeState::new(node)).iter().all(|f| {
            matches!(
                f,
                FilterFailure::NotReady
                    | FilterFailure::InsufficientCpu
                    | FilterFailure::InsufficientMemory
            )
        });
        let pods = by_node.remove(&name).unwrap_or_default();
        if !fits {
            misscheduled += pods.len() as i32;
            plan.delete.extend(pods.iter().map(|p| p.name_any()));
            continue;
        }
        desired += 1;
        match pods.as_slice() {
            [] => {
                plan.create.push(probe);
                unavailable += 1;
            }
            [first, rest @ ..] => {
                current += 1;
                plan.delete.extend(rest.iter().map(|p| p.name_any()));
                if is_ready(first) {
                    ready += 1;
                } else {
                    unavailable += 1;
                }
                if first.labels().get(TEMPLATE_LABEL) == Some(&hash) {
                    updated += 1;
                } else if is_ready(first) {
                    outdated_ready.push(first.name_any());
                } else {
                    // An outdated pod that is not ready anyway is replaced at once.
                    plan.delete.push(first.name_any());
                }
            }
        }
    }
    // Pods on nodes that are gone.
    for pods in by_node.values() {
        misscheduled += pods.len() as i32;
        plan.delete.extend(pods.iter().map(|p| p.name_any()));
    }
    // Rolling update: one outdated ready pod at a time, while nothing else is unavailable.
    if unavailable == 0
        && let Some(first) = outdated_ready.first()
    {
        plan.delete.push(first.clone());
    }
    plan.status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_ready: ready,
        number_available: Some(ready),
        number_unavailable: Some((desired - ready).max(0)),
        updated_number_scheduled: Some(updated),
        number_misscheduled: misscheduled,
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    plan
}

fn template_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(TEMPLATE_LABEL.into(), hash.into());
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.to_owned());
    let suffix = safe_encode(fnv32a(format!("{node}/{hash}").as_bytes()));
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{}-{suffix}", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "DaemonSet",
                &ds.name_any(),
                &ds.uid().unwrap_or_default(),
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    #[test]
    fn one_pod_per_matching_node() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "ds1"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap();
        let n1 = node("n1", json!({"role": "worker"}));
        let n2 = node("n2", json!({"role": "worker"}));
        let n3 = node("n3", json!({"role": "edge"}));
        let p = plan(&ds, &[&n1, &n2, &n3], &[]);
        let mut bound: Vec<String> = p
            .create
            .iter()
            .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
            .collect();
        bound.sort();
        assert_eq!(bound, ["n1", "n2"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
        // Running again with those pods present creates nothing more.
        let mut pods = p.create.clone();
        for pod in &mut pods {
            pod.status = serde_json::from_value(
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
            )
            .unwrap();
        }
        let refs: Vec<&Pod> = pods.iter().collect();
        let p2 = plan(&ds, &[&n1, &n2, &n3], &refs);
        assert!(p2.create.is_empty() && p2.delete.is_empty(), "{p2:?}");
        assert_eq!(p2.status.number_ready, 2);
    }
}
