//! Facts about pods that several controllers need.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Succeeded or Failed.
pub fn is_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Counts toward a controller's replicas: not finished and not being deleted.
pub fn is_active(p: &Pod) -> bool {
    !is_finished(p) && p.metadata.deletion_timestamp.is_none()
}

/// The controller owner reference of an object's metadata.
pub fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|o| o.controller == Some(true))
}

/// An owner reference that marks `owner` as the controller.
pub fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Order for scaling down: the pod to delete first sorts first (unscheduled, then
/// pending, then not ready, then the newest), as the ReplicaSet controller does.
pub fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<i64>>) {
    let unscheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none();
    let pending = p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running");
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond());
    (
        u8::from(!unscheduled),
        u8::from(!pending),
        u8::from(is_ready(p)),
        std::cmp::Reverse(created),
    )
}
