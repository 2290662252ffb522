//! The scheduling decision as plain data: filters, scores, and the unschedulable message.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint};

use crate::quantity::{base_units, cpu_millis};

/// What a pod asks for: the sum of its containers' requests (or the largest init
/// container's, when bigger), and one pod slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Pod count.
    pub pods: i64,
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, o: Requests) {
        self.cpu_millis += o.cpu_millis;
        self.memory += o.memory;
        self.pods += o.pods;
    }
}

/// The requests of `pod`.
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = &pod.spec else {
        return Requests {
            pods: 1,
            ..Requests::default()
        };
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str| req.and_then(|m| m.get(k)).map(|q| q.0.as_str());
        Requests {
            cpu_millis: get("cpu").and_then(cpu_millis).unwrap_or(0),
            memory: get("memory").and_then(base_units).unwrap_or(0),
            pods: 0,
        }
    };
    let mut sum = Requests::default();
    for c in &spec.containers {
        sum += of(c);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        sum.cpu_millis = sum.cpu_millis.max(r.cpu_millis);
        sum.memory = sum.memory.max(r.memory);
    }
    sum.pods = 1;
    sum
}

/// A node and what is already bound to it.
#[derive(Debug, Clone)]
pub struct NodeState<'a> {
    /// The node.
    pub node: &'a Node,
    /// Sum of the requests of the pods bound to it (not finished).
    pub requested: Requests,
    /// Host ports in use: (protocol, port).
    pub host_ports: BTreeSet<(String, i32)>,
    /// Pods bound to it per owner uid (for spreading).
    pub pods_by_owner: BTreeMap<String, usize>,
}

impl<'a> NodeState<'a> {
    /// A node with nothing bound.
    pub fn new(node: &'a Node) -> NodeState<'a> {
        NodeState {
            node,
            requested: Requests::default(),
            host_ports: BTreeSet::new(),
            pods_by_owner: BTreeMap::new(),
        }
    }

    /// Accounts for `pod` running on this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested += pod_requests(pod);
        self.host_ports.extend(host_ports(pod));
        if let Some(owner) = controller_uid(pod) {
            *self.pods_by_owner.entry(owner).or_default() += 1;
        }
    }

    fn allocatable(&self) -> Requests {
        let status = self.node.status.as_ref();
        let alloc = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let get = |k: &str| alloc.and_then(|m| m.get(k)).map(|q| q.0.as_str());
        Requests {
            cpu_millis: get("cpu").and_then(cpu_millis).unwrap_or(0),
            memory: get("memory").and_then(base_units).unwrap_or(0),
            // A node that does not say how many pods it takes gets the kubelet default.
            pods: get("pods").and_then(base_units).unwrap_or(110),
        }
    }
}

/// Why a node was filtered out. The `Display` text is what `kubectl describe` users see.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterFailure {
    /// NodeReady is not True.
    NotReady,
    /// spec.unschedulable (cordoned).
    Unschedulable,
    /// Not enough CPU.
    InsufficientCpu,
    /// Not enough memory.
    InsufficientMemory,
    /// The node's pod count is full.
    TooManyPods,
    /// nodeSelector or required node affinity does not match.
    SelectorMismatch,
    /// A NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint(String),
    /// A hostPort already taken on the node.
    HostPortConflict,
}

impl std::fmt::Display for FilterFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilterFailure::NotReady => write!(f, "node(s) were not ready"),
            FilterFailure::Unschedulable => write!(f, "node(s) were unschedulable"),
            FilterFailure::InsufficientCpu => write!(f, "Insufficient cpu"),
            FilterFailure::InsufficientMemory => write!(f, "Insufficient memory"),
            FilterFailure::TooManyPods => write!(f, "Too many pods"),
            FilterFailure::SelectorMismatch => {
                write!(f, "node(s) didn't match Pod's node affinity/selector")
            }
            FilterFailure::UntoleratedTaint(t) => {
                write!(f, "node(s) had untolerated taint {{{t}}}")
            }
            FilterFailure::HostPortConflict => write!(
                f,
                "node(s) didn't have free ports for the requested pod ports"
            ),
        }
    }
}

/// Every filter `node` fails for `pod` (empty: the node fits).
pub fn filter(pod: &Pod, node: &NodeState<'_>) -> Vec<FilterFailure> {
    let mut failed = Vec::new();
    let n = node.node;
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        failed.push(FilterFailure::NotReady);
    }
    if n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        failed.push(FilterFailure::Unschedulable);
    }
    let want = pod_requests(pod);
    let alloc = node.allocatable();
    if want.cpu_millis > 0 && node.requested.cpu_millis + want.cpu_millis > alloc.cpu_millis {
        failed.push(FilterFailure::InsufficientCpu);
    }
    if want.memory > 0 && node.requested.memory + want.memory > alloc.memory {
        failed.push(FilterFailure::InsufficientMemory);
    }
    if node.requested.pods + 1 > alloc.pods {
        failed.push(FilterFailure::TooManyPods);
    }
    if !matches_node_selector(pod, n) {
        failed.push(FilterFailure::SelectorMismatch);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    for taint in n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
    {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerated(taint, tolerations)
        {
            let text = match &taint.value {
                Some(v) if !v.is_empty() => format!("{}: {v}", taint.key),
                _ => taint.key.clone(),
            };
            failed.push(FilterFailure::UntoleratedTaint(text));
            break;
        }
    }
    if host_ports(pod).iter().any(|p| node.host_ports.contains(p)) {
        failed.push(FilterFailure::HostPortConflict);
    }
    failed
}

/// Higher is better: least allocated (0-100 averaged over CPU and memory) plus a spread
/// bonus (0-100) that prefers nodes with fewer pods of the same owner.
pub fn score(pod: &Pod, node: &NodeState<'_>) -> i64 {
    let want = pod_requests(pod);
    let alloc = node.allocatable();
    let free = |used: i64, ask: i64, cap: i64| {
        if cap <= 0 {
            0
        } else {
            ((cap - used - ask).max(0) * 100) / cap
        }
    };
    // Pods without requests count as the Kubernetes defaults (100m, 200Mi) for balance.
    let cpu_ask = if want.cpu_millis == 0 {
        100
    } else {
        want.cpu_millis
    };
    let mem_ask = if want.memory == 0 {
        200 << 20
    } else {
        want.memory
    };
    let least = (free(node.requested.cpu_millis, cpu_ask, alloc.cpu_millis)
        + free(node.requested.memory, mem_ask, alloc.memory)
        + free(node.requested.pods, 1, alloc.pods))
        / 3;
    let same_owner = controller_uid(pod)
        .map(|o| node.pods_by_owner.get(&o).copied().unwrap_or(0))
        .unwrap_or(0);
    let spread = 100 / (1 + same_owner as i64);
    least + spread
}

/// Picks the best node, or explains why none fits in the Kubernetes message format
/// (`0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were not ready.`).
pub fn select_node(pod: &Pod, nodes: &[NodeState<'_>]) -> Result<usize, String> {
    let mut best: Option<(i64, &str, usize)> = None;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let failed = filter(pod, n);
        if failed.is_empty() {
            let s = score(pod, n);
            let name = n.node.metadata.name.as_deref().unwrap_or_default();
            // Ties go to the name that sorts first, so the choice is deterministic.
            if best.is_none_or(|(bs, bn, _)| s > bs || (s == bs && name < bn)) {
                best = Some((s, name, i));
            }
        } else {
            for f in failed {
                *reasons.entry(f.to_string()).or_default() += 1;
            }
        }
    }
    match best {
        Some((_, _, i)) => Ok(i),
        None if nodes.is_empty() => Err("0/0 nodes are available: no nodes registered.".to_owned()),
        None => {
            let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                parts.join(", ")
            ))
        }
    }
}

fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let spec = pod.spec.as_ref();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref())
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        // Terms are ORed; an empty list of terms matches nothing (as in Kubernetes).
        Some(r) => r
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, node)),
        None => true,
    }
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let mut field_labels = BTreeMap::new();
    field_labels.insert(
        "metadata.name".to_owned(),
        node.metadata.name.clone().unwrap_or_default(),
    );
    exprs.iter().all(|e| requirement_matches(e, labels))
        && fields.iter().all(|e| requirement_matches(e, &field_labels))
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn tolerated(taint: &Taint, tolerations: &[k8s_openapi::api::core::v1::Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key);
        let value_ok = match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        // An empty key with Exists tolerates everything.
        effect_ok && key_ok && value_ok
    })
}

fn host_ports(pod: &Pod) -> Vec<(String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            p.host_port
                .filter(|hp| *hp > 0)
                .map(|hp| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), hp))
        })
        .collect()
}

/// The uid of the pod's controlling owner (a ReplicaSet, a DaemonSet...).
pub(crate) fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}
        });
        merge(&mut p, extra);
        serde_json::from_value(p).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn ready_node_fits_plain_pod() {
        let n = node("n1", json!({}));
        assert!(filter(&pod(json!({})), &NodeState::new(&n)).is_empty());
    }

    #[test]
    fn not_ready_and_cordoned_fail() {
        let n = node(
            "n1",
            json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let f = filter(&pod(json!({})), &NodeState::new(&n));
        assert_eq!(
            f,
            vec![FilterFailure::NotReady, FilterFailure::Unschedulable]
        );
    }

    #[test]
    fn resources_are_counted_against_allocatable() {
        let n = node("n1", json!({}));
        let big = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]}}),
        );
        let mut st = NodeState::new(&n);
        assert!(filter(&big, &st).is_empty());
        st.add_pod(&big);
        assert_eq!(filter(&big, &st), vec![FilterFailure::InsufficientCpu]);
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node(
            "n1",
            json!({"metadata": {"labels": {"disk": "ssd", "zone": "a"}}}),
        );
        let st = NodeState::new(&n);
        assert!(
            filter(
                &pod(json!({"spec": {"nodeSelector": {"disk": "ssd"}}})),
                &st
            )
            .is_empty()
        );
        assert_eq!(
            filter(
                &pod(json!({"spec": {"nodeSelector": {"disk": "hdd"}}})),
                &st
            ),
            vec![FilterFailure::SelectorMismatch]
        );
        let aff = |op: &str, values: serde_json::Value| {
            pod(
                json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": op, "values": values}]}]}}}}}),
            )
        };
        assert!(filter(&aff("In", json!(["a", "b"])), &st).is_empty());
        assert!(!filter(&aff("NotIn", json!(["a"])), &st).is_empty());
        assert!(filter(&aff("Exists", json!(null)), &st).is_empty());
        assert!(!filter(&aff("DoesNotExist", json!(null)), &st).is_empty());
    }

    #[test]
    fn taints_need_tolerations() {
        let n = node(
            "n1",
            json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}}),
        );
        let st = NodeState::new(&n);
        let f = filter(&pod(json!({})), &st);
        assert_eq!(
            f,
            vec![FilterFailure::UntoleratedTaint(
                "node.kubernetes.io/unreachable".into()
            )]
        );
        let tol = pod(
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]}}),
        );
        assert!(filter(&tol, &st).is_empty());
        let prefer = node(
            "n2",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        assert!(filter(&pod(json!({})), &NodeState::new(&prefer)).is_empty());
    }

    #[test]
    fn host_port_conflicts() {
        let n = node("n1", json!({}));
        let hp = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        let mut st = NodeState::new(&n);
        st.add_pod(&hp);
        assert_eq!(filter(&hp, &st), vec![FilterFailure::HostPortConflict]);
    }

    #[test]
    fn spread_prefers_nodes_without_siblings() {
        let (a, b) = (node("a", json!({})), node("b", json!({})));
        let owned = pod(
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}}),
        );
        let mut sa = NodeState::new(&a);
        sa.add_pod(&owned);
        let nodes = vec![sa, NodeState::new(&b)];
        assert_eq!(select_node(&owned, &nodes), Ok(1));
    }

    #[test]
    fn unschedulable_message_names_each_filter() {
        let a = node(
            "a",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let b = node("b", json!({"metadata": {"labels": {"x": "y"}}}));
        let p = pod(json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let err = select_node(&p, &[NodeState::new(&a), NodeState::new(&b)]).unwrap_err();
        assert_eq!(
            err,
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 1 node(s) were not ready."
        );
    }
}
