//! Deployment: one ReplicaSet per pod template (named `<deployment>-<template hash>`),
//! rolled from old to new under maxSurge/maxUnavailable, or recreated; revisions in the
//! `deployment.kubernetes.io/revision` annotation so `kubectl rollout` works.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::hash::hash_json;
use super::podutil::controller_ref;

/// The label that ties a ReplicaSet and its pods to one template.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The template hash of a Deployment's current pod template.
pub fn template_hash(d: &Deployment) -> String {
    let mut t = serde_json::to_value(&d.spec.template).unwrap_or_default();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    hash_json(&t)
}

/// What to do for one Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// A ReplicaSet to create for the current template.
    pub create: Option<ReplicaSet>,
    /// (ReplicaSet name, new spec.replicas).
    pub scale: Vec<(String, i32)>,
    /// (ReplicaSet name, new revision) when a template returns (rollback).
    pub set_revision: Option<(String, String)>,
    /// Old, empty ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    /// The Deployment's revision annotation.
    pub revision: String,
    /// The status to write.
    pub status: DeploymentStatus,
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let v = v
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.into()));
    match v {
        IntOrString::Int(i) => i.max(0),
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            let x = pct * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

/// Pods of one ReplicaSet as the pod cache shows them right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCounts {
    /// Not finished and not being deleted.
    pub active: i32,
    /// Active and Ready.
    pub ready: i32,
}

/// Plans one step of a Deployment, given the ReplicaSets it owns and, per ReplicaSet
/// name, its pods as the cache shows them. Availability is counted from the pods, not
/// from the ReplicaSets' status, which lags behind a scale-down in progress; a
/// ReplicaSet missing from `pods` falls back to its status.
pub fn plan(d: &Deployment, owned: &[&ReplicaSet], pods: &BTreeMap<String, PodCounts>) -> Plan {
    let spec = d.spec.clone();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(d);
    let max_rev = owned.iter().map(|r| revision_of(r)).max().unwrap_or(0);
    let mut plan = Plan::default();

    let new_rs = owned
        .iter()
        .find(|r| r.labels().get(TEMPLATE_HASH_LABEL) == Some(&hash))
        .copied();
    let olds: Vec<&ReplicaSet> = {
        let mut v: Vec<&ReplicaSet> = owned
            .iter()
            .copied()
            .filter(|r| Some(*r) != new_rs)
            .collect();
        v.sort_by_key(|r| revision_of(r));
        v
    };
    let spec_of = |r: &ReplicaSet| r.spec.replicas.unwrap_or(0);
    // Available pods are counted from the pod cache (a ReplicaSet's status lags behind),
    // and never more than the spec keeps: a ReplicaSet just scaled down still has its
    // extra pods for a moment.
    let avail_of = |r: &ReplicaSet| {
        let ready = match pods.get(&r.name_any()) {
            Some(c) => c.ready,
            None => r
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
        };
        ready.min(spec_of(r))
    };
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let mut max_surge = resolve(
        rolling.and_then(|r| r.max_surge.as_ref()),
        desired,
        true,
        "25%",
    );
    let max_unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        desired,
        false,
        "25%",
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_surge = 1;
    }

    let (new_name, new_spec, new_avail) = match new_rs {
        Some(r) => {
            plan.revision = if revision_of(r) < max_rev {
                let rev = (max_rev + 1).to_string();
                plan.set_revision = Some((r.name_any(), rev.clone()));
                rev
            } else {
                revision_of(r).to_string()
            };
            (r.name_any(), spec_of(r), avail_of(r))
        }
        None => {
            plan.revision = (max_rev + 1).to_string();
            let first = owned.is_empty();
            // The very first ReplicaSet starts at full size; later ones grow step by step.
            let start = if first { desired } else { 0 };
            let rs = new_replica_set(d, &hash, &plan.revision, start);
            let name = rs.name_any();
            plan.create = Some(rs);
            (name, start, 0)
        }
    };

    if !spec.paused.unwrap_or(false) {
        if recreate {
            let old_active: i32 = olds
                .iter()
                .map(|r| pods.get(&r.name_any()).map(|c| c.active).unwrap_or(0))
                .sum();
            for r in &olds {
                if spec_of(r) != 0 {
                    plan.scale.push((r.name_any(), 0));
                }
            }
            if old_active == 0 && olds.iter().all(|r| spec_of(r) == 0) && new_spec != desired {
                plan.scale.push((new_name.clone(), desired));
            }
        } else {
            // Scale the new ReplicaSet up within maxSurge.
            let total: i32 = olds.iter().map(|r| spec_of(r)).sum::<i32>() + new_spec;
            let mut new_target = new_spec;
            if new_spec > desired {
                new_target = desired;
            } else if total < desired + max_surge {
                new_target = desired.min(new_spec + (desired + max_surge - total));
            }
            if new_target != new_spec && plan.create.is_none() {
                plan.scale.push((new_name.clone(), new_target));
            }
            // Scale old ones down within maxUnavailable: unavailable old pods go freely,
            // available ones only while enough stay available.
            let available: i32 = olds.iter().map(|r| avail_of(r)).sum::<i32>() + new_avail;
            let mut budget = (available - (desired - max_unavailable)).max(0);
            for r in &olds {
                let cur = spec_of(r);
                if cur == 0 {
                    continue;
                }
                let unhealthy = (cur - avail_of(r)).max(0);
                let down = (unhealthy + budget).min(cur);
                budget -= (down - unhealthy).max(0);
                if down > 0 {
                    plan.scale.push((r.name_any(), cur - down));
                }
            }
        }
    }

    // History: keep revisionHistoryLimit empty old ReplicaSets, oldest go first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let empty: Vec<&ReplicaSet> = olds
        .iter()
        .copied()
        .filter(|r| spec_of(r) == 0 && r.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0)
        .collect();
    if empty.len() > limit {
        plan.delete = empty[..empty.len() - limit]
            .iter()
            .map(|r| r.name_any())
            .collect();
    }

    plan.status = status(d, owned, new_rs, desired, max_unavailable);
    plan
}

fn status(
    d: &Deployment,
    owned: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    desired: i32,
    max_unavailable: i32,
) -> DeploymentStatus {
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let replicas: i32 = owned.iter().map(|r| st(r).replicas).sum();
    let ready: i32 = owned
        .iter()
        .map(|r| st(r).ready_replicas.unwrap_or(0))
        .sum();
    let available: i32 = owned
        .iter()
        .map(|r| st(r).available_replicas.unwrap_or(0))
        .sum();
    let updated = new_rs.map(|r| st(r).replicas).unwrap_or(0);
    let new_avail = new_rs
        .map(|r| st(r).available_replicas.unwrap_or(0))
        .unwrap_or(0);
    let complete = updated == desired && replicas == desired && new_avail == desired;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let prev = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let old = prev.iter().find(|c| c.type_.as_deref() == Some(type_));
        let changed = old.is_none_or(|c| {
            c.status.as_deref() != Some(status) || c.reason.as_deref() != Some(reason)
        });
        DeploymentCondition {
            type_: Some(type_.into()),
            status: Some(status.into()),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: if changed {
                Some(now.clone())
            } else {
                old.and_then(|c| c.last_transition_time.clone())
            },
            last_update_time: if changed {
                Some(now.clone())
            } else {
                old.and_then(|c| c.last_update_time.clone())
            },
        }
    };
    let name = d.name_any();
    let new_name = new_rs.map(|r| r.name_any()).unwrap_or_default();
    let conditions = vec![
        if available >= desired - max_unavailable {
            cond(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            cond(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        },
        if complete {
            cond(
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            )
        } else {
            cond(
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing for deployment \"{name}\"."),
            )
        },
    ];
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        conditions: Some(conditions),
        ..Default::default()
    }
}

fn new_replica_set(d: &Deployment, hash: &str, revision: &str, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone();
    let mut template = spec.template.clone();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels = Some(labels.clone());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut annotations = BTreeMap::new();
    annotations.insert(REVISION_ANNOTATION.to_owned(), revision.to_owned());
    annotations.insert(
        "deployment.kubernetes.io/desired-replicas".to_owned(),
        spec.replicas.unwrap_or(1).to_string(),
    );
    if let Some(cause) = d.annotations().get("kubernetes.io/change-cause") {
        annotations.insert("kubernetes.io/change-cause".into(), cause.clone());
    }
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "Deployment",
                &d.name_any(),
                &d.uid().unwrap_or_default(),
            )]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn with_state(mut rs: ReplicaSet, spec: i32, avail: i32) -> ReplicaSet {
        rs.spec.replicas = Some(spec);
        rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
            replicas: spec,
            ready_replicas: Some(avail),
            available_replicas: Some(avail),
            ..Default::default()
        });
        rs
    }

    #[test]
    fn first_replica_set_starts_full_size() {
        let d = deploy(3, "v1", json!({}));
        let p = plan(&d, &[], &BTreeMap::new());
        let rs = p.create.unwrap();
        assert_eq!(rs.spec.replicas, Some(3));
        assert_eq!(rs.name_any(), format!("web-{}", template_hash(&d)));
        assert_eq!(rs.annotations()[REVISION_ANNOTATION], "1");
        assert_eq!(rs.labels()[TEMPLATE_HASH_LABEL], template_hash(&d));
        assert_eq!(p.revision, "1");
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailable() {
        let strat =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
        let v1 = deploy(4, "v1", strat.clone());
        let old = with_state(plan(&v1, &[], &BTreeMap::new()).create.unwrap(), 4, 4);
        let v2 = deploy(4, "v2", strat);
        // Step 1: the new ReplicaSet is created empty; one old pod may go (4 available, 3 needed).
        let p = plan(&v2, &[&old], &BTreeMap::new());
        let new = p.create.clone().unwrap();
        assert_eq!(new.spec.replicas, Some(0));
        assert_eq!(p.revision, "2");
        assert_eq!(p.scale, vec![(old.name_any(), 3)]);
        // Step 2: old at 3 (all available), new at 0: new grows to 2 (total 5 = 4 + surge 1).
        let old = with_state(old, 3, 3);
        let new = with_state(new, 0, 0);
        let p = plan(&v2, &[&old, &new], &BTreeMap::new());
        assert!(p.scale.contains(&(new.name_any(), 2)), "{:?}", p.scale);
        // Old shrinks only while 3 stay available.
        assert!(
            !p.scale.iter().any(|(n, r)| n == &old.name_any() && *r < 3),
            "{:?}",
            p.scale
        );
    }

    #[test]
    fn rollback_reuses_the_old_replica_set_with_a_new_revision() {
        let v1 = deploy(2, "v1", json!({}));
        let mut rs1 = with_state(plan(&v1, &[], &BTreeMap::new()).create.unwrap(), 0, 0);
        rs1.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REVISION_ANNOTATION.into(), "1".into());
        let v2 = deploy(2, "v2", json!({}));
        let mut rs2 = with_state(plan(&v2, &[&rs1], &BTreeMap::new()).create.unwrap(), 2, 2);
        rs2.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REVISION_ANNOTATION.into(), "2".into());
        let p = plan(&v1, &[&rs1, &rs2], &BTreeMap::new());
        assert!(p.create.is_none());
        assert_eq!(p.set_revision, Some((rs1.name_any(), "3".into())));
        assert_eq!(p.revision, "3");
    }

    #[test]
    fn recreate_waits_for_old_pods_to_go() {
        let strat = json!({"type": "Recreate"});
        let v1 = deploy(2, "v1", strat.clone());
        let old = with_state(plan(&v1, &[], &BTreeMap::new()).create.unwrap(), 2, 2);
        let v2 = deploy(2, "v2", strat);
        let new = with_state(plan(&v2, &[&old], &BTreeMap::new()).create.unwrap(), 0, 0);
        let mut active = BTreeMap::new();
        active.insert(
            old.name_any(),
            PodCounts {
                active: 2,
                ready: 2,
            },
        );
        let p = plan(&v2, &[&old, &new], &active);
        assert_eq!(p.scale, vec![(old.name_any(), 0)]);
        let old = with_state(old, 0, 0);
        active.insert(old.name_any(), PodCounts::default());
        let p = plan(&v2, &[&old, &new], &active);
        assert_eq!(p.scale, vec![(new.name_any(), 2)]);
    }

    #[test]
    fn status_reports_complete_rollout() {
        let d = deploy(2, "v1", json!({}));
        let rs = with_state(plan(&d, &[], &BTreeMap::new()).create.unwrap(), 2, 2);
        let p = plan(&d, &[&rs], &BTreeMap::new());
        assert_eq!(p.status.updated_replicas, Some(2));
        assert_eq!(p.status.available_replicas, Some(2));
        assert_eq!(p.status.observed_generation, Some(2));
        let prog = p
            .status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .unwrap();
        assert_eq!(prog.reason.as_deref(), Some("NewReplicaSetAvailable"));
    }

    #[test]
    fn scale_down_counts_ready_pods_but_never_more_than_the_spec() {
        let strat =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
        let v1 = deploy(4, "v1", strat.clone());
        let v2 = deploy(4, "v2", strat);
        let old = plan(&v1, &[], &BTreeMap::new()).create.unwrap();
        let new = with_state(plan(&v2, &[&old], &BTreeMap::new()).create.unwrap(), 0, 0);
        // The old ReplicaSet was just lowered to 3 but its 4 pods are all still ready; its
        // status even says 4. Only 3 count: nothing more may go.
        let old = with_state(old, 3, 4);
        let mut pods = BTreeMap::new();
        pods.insert(
            old.name_any(),
            PodCounts {
                active: 4,
                ready: 4,
            },
        );
        pods.insert(new.name_any(), PodCounts::default());
        let p = plan(&v2, &[&old, &new], &pods);
        assert!(
            !p.scale.iter().any(|(n, r)| n == &old.name_any() && *r < 3),
            "{:?}",
            p.scale
        );
        // A status that lags (4 available) while the pods say 2 are ready: the pods win.
        pods.insert(
            old.name_any(),
            PodCounts {
                active: 3,
                ready: 2,
            },
        );
        let p = plan(&v2, &[&old, &new], &pods);
        assert_eq!(
            p.status.available_replicas,
            Some(4),
            "status sums the ReplicaSets' status"
        );
        assert!(
            p.scale.contains(&(old.name_any(), 2)),
            "only the unready pod may go: {:?}",
            p.scale
        );
    }
}
