//! ReplicaSet: keep `spec.replicas` active pods from the template.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::podutil::{controller_ref, deletion_rank, is_active, is_ready};

/// What to do for one ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: ReplicaSetStatus,
}

/// Compares the ReplicaSet's desired replicas with the pods it owns.
pub fn plan(rs: &ReplicaSet, owned: &[&Pod]) -> Plan {
    let want = rs.spec.replicas.unwrap_or(1).max(0) as usize;
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let (create, delete) = if active.len() < want {
        (want - active.len(), Vec::new())
    } else {
        active.sort_by_key(|p| deletion_rank(p));
        (
            0,
            active[..active.len() - want]
                .iter()
                .map(|p| p.name_any())
                .collect(),
        )
    };
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(active.len() as i32),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        ..Default::default()
    };
    Plan {
        create,
        delete,
        status,
    }
}

/// A new pod from the ReplicaSet's template, owned by it, named `<rs>-<random>`.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "ReplicaSet",
                &rs.name_any(),
                &rs.uid().unwrap_or_default(),
            )]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap()
    }

    fn pod(name: &str, ready: bool, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": if ready {"Running"} else {"Pending"},
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn scales_up_and_down_preferring_unready() {
        let pods = [
            pod("a", true, Some("n1")),
            pod("b", false, None),
            pod("c", true, Some("n2")),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&rs(5), &refs);
        assert_eq!((p.create, p.delete.len()), (2, 0));
        let p = plan(&rs(1), &refs);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete[0], "b", "the unscheduled pod goes first");
        assert_eq!(p.delete.len(), 2);
        assert_eq!(p.status.replicas, 3);
        assert_eq!(p.status.ready_replicas, Some(2));
        assert_eq!(p.status.observed_generation, Some(3));
    }

    #[test]
    fn template_pods_are_owned() {
        let p = pod_from_template(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
    }
}
