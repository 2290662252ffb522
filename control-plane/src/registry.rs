//! The resource table: one [`Resource`] entry per served resource. Everything else
//! (routing, discovery, storage keys, Table output, validation) is driven by it, so
//! serving a new resource is one more entry here.

use k8s_openapi::api::discovery::v1 as disc;
use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::table::{self, Column};

/// Which name rule `metadata.name` must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most resources).
    Subdomain,
    /// DNS-1123 label (namespaces, services).
    Label,
}

/// A served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural name, used in URLs and storage keys.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// kubectl categories (`all`).
    pub categories: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Subresources: `status`, `scale`, `binding`, `log`.
    pub subresources: &'static [&'static str],
    /// Table columns after NAME (AGE is added at the end).
    pub columns: &'static [Column],
    /// Name rule.
    pub name_rule: NameRule,
    /// Decodes a JSON object into the typed Kubernetes struct and back: type errors are
    /// returned, unknown fields are dropped (compare input and output to find them).
    pub roundtrip: fn(&Value) -> Result<Value, String>,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as Status messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether `sub` is one of this resource's subresources.
    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// The storage key of one object under `prefix`.
    pub fn key(&self, prefix: &str, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{ns}/{name}", self.collection(prefix)),
            _ => format!("{}/{name}", self.collection(prefix)),
        }
    }

    /// The storage prefix of every object of this resource (with a trailing `/`).
    pub fn collection(&self, prefix: &str) -> String {
        // Same-named resources in different groups (none today) would share a prefix;
        // the plural is unique across the table.
        format!("{prefix}/{}", self.plural)
    }

    /// The storage prefix of one namespace's objects, or of all objects.
    pub fn scope_prefix(&self, prefix: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{ns}/", self.collection(prefix)),
            _ => format!("{}/", self.collection(prefix)),
        }
    }
}

fn roundtrip<K: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

macro_rules! res {
    ($group:expr, $kind:literal, $plural:literal, $singular:literal, $short:expr, $cats:expr,
     $ns:expr, $subs:expr, $cols:expr, $rule:expr, $ty:ty) => {
        Resource {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: $short,
            categories: $cats,
            namespaced: $ns,
            subresources: $subs,
            columns: $cols,
            name_rule: $rule,
            roundtrip: roundtrip::<$ty>,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every resource the server serves.
pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        &["ns"],
        NONE,
        false,
        &["status", "finalize"],
        table::NAMESPACE,
        NameRule::Label,
        core::Namespace
    ),
    res!(
        "",
        "Node",
        "nodes",
        "node",
        &["no"],
        NONE,
        false,
        &["status"],
        table::NODE,
        NameRule::Subdomain,
        core::Node
    ),
    res!(
        "",
        "Pod",
        "pods",
        "pod",
        &["po"],
        ALL,
        true,
        &["status", "binding", "log", "exec"],
        table::POD,
        NameRule::Subdomain,
        core::Pod
    ),
    res!(
        "",
        "Service",
        "services",
        "service",
        &["svc"],
        ALL,
        true,
        &["status"],
        table::SERVICE,
        NameRule::Label,
        core::Service
    ),
    res!(
        "",
        "Endpoints",
        "endpoints",
        "endpoints",
        &["ep"],
        NONE,
        true,
        &[],
        table::ENDPOINTS,
        NameRule::Subdomain,
        core::Endpoints
    ),
    res!(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        &["cm"],
        NONE,
        true,
        &[],
        table::CONFIGMAP,
        NameRule::Subdomain,
        core::ConfigMap
    ),
    res!(
        "",
        "Secret",
        "secrets",
        "secret",
        &[],
        NONE,
        true,
        &[],
        table::SECRET,
        NameRule::Subdomain,
        core::Secret
    ),
    res!(
        "",
        "Event",
        "events",
        "event",
        &["ev"],
        NONE,
        true,
        &[],
        table::EVENT,
        NameRule::Subdomain,
        core::Event
    ),
    res!(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        &["deploy"],
        ALL,
        true,
        &["status", "scale"],
        table::DEPLOYMENT,
        NameRule::Subdomain,
        apps::Deployment
    ),
    res!(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        &["rs"],
        ALL,
        true,
        &["status", "scale"],
        table::REPLICASET,
        NameRule::Subdomain,
        apps::ReplicaSet
    ),
    res!(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        &["ds"],
        ALL,
        true,
        &["status"],
        table::DAEMONSET,
        NameRule::Subdomain,
        apps::DaemonSet
    ),
    res!(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        &[],
        NONE,
        true,
        &[],
        table::ENDPOINTSLICE,
        NameRule::Subdomain,
        disc::EndpointSlice
    ),
    res!(
        "coordination.k8s.io",
        "Lease",
        "leases",
        "lease",
        &[],
        NONE,
        true,
        &[],
        table::LEASE,
        NameRule::Subdomain,
        coord::Lease
    ),
];

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by kind within a group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The distinct (group, version) pairs served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_unique_and_keys_follow_the_kube_layout() {
        let mut plurals: Vec<_> = RESOURCES.iter().map(|r| r.plural).collect();
        plurals.sort();
        plurals.dedup();
        assert_eq!(plurals.len(), RESOURCES.len());
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key("/registry", Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(
            nodes.key("/registry", Some("x"), "n1"),
            "/registry/nodes/n1"
        );
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().qualified(),
            "deployments.apps"
        );
    }

    #[test]
    fn roundtrip_drops_unknown_fields_and_rejects_wrong_types() {
        let cm = by_kind("", "ConfigMap").unwrap();
        let out = (cm.roundtrip)(&serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
            "data": {"k": "v"}, "bogus": 1
        }))
        .unwrap();
        assert_eq!(out["data"]["k"], "v");
        assert!(out.get("bogus").is_none());
        let err = (cm.roundtrip)(&serde_json::json!({"metadata": {"name": 5}})).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }
}
