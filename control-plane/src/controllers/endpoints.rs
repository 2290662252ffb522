//! EndpointSlices and Endpoints for every Service with a selector: ready pods serve,
//! not-ready ones are listed as such, terminating ones drain; named target ports are
//! resolved per pod, so pods that map a name differently land in different slices.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::hash::{fnv32a, safe_encode};
use super::podutil::{controller_ref, is_finished, is_ready};
use super::selector::map_matches;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The managed-by label of the slices this controller owns.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// A pod's resolved ports for the Service: (name, protocol, port); `None` when a named
/// target port does not exist in the pod.
fn resolve_ports(svc: &Service, pod: &Pod) -> Option<Vec<(String, String, i32)>> {
    let ports = svc.spec.as_ref()?.ports.as_deref().unwrap_or_default();
    ports
        .iter()
        .map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let target = match &sp.target_port {
                None => Some(sp.port),
                Some(IntOrString::Int(i)) => Some(*i),
                Some(IntOrString::String(name)) => match name.parse::<i32>() {
                    Ok(i) => Some(i),
                    Err(_) => pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter())
                        .flat_map(|c| c.ports.iter().flatten())
                        .find(|cp| {
                            cp.name.as_deref() == Some(name)
                                && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                        })
                        .map(|cp| cp.container_port),
                },
            }?;
            Some((sp.name.clone().unwrap_or_default(), protocol, target))
        })
        .collect()
}

/// The pods a Service selects that have an IP, grouped by their resolved ports.
fn groups<'a>(
    svc: &Service,
    pods: &[&'a Pod],
) -> BTreeMap<Vec<(String, String, i32)>, Vec<&'a Pod>> {
    let sel = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    let mut out: BTreeMap<_, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        if p.namespace() != svc.namespace()
            || !map_matches(sel, p.metadata.labels.as_ref())
            || is_finished(p)
        {
            continue;
        }
        if p.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_none_or(|ip| ip.is_empty())
        {
            continue;
        }
        if let Some(ports) = resolve_ports(svc, p) {
            out.entry(ports).or_default().push(*p);
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|p| p.name_any());
    }
    out
}

/// Whether the controller manages endpoints for this Service at all.
pub fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
        && svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName")
}

/// The EndpointSlices the Service should have (one per distinct port mapping; one with
/// no endpoints when no pod matches).
pub fn desired_slices(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSlice> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut g = groups(svc, pods);
    if g.is_empty() {
        let ports: Vec<(String, String, i32)> = Vec::new();
        g.insert(ports, Vec::new());
    }
    g.into_iter()
        .map(|(ports, members)| {
            let key = format!("{}/{ports:?}", svc.name_any());
            let name = format!("{}-{}", svc.name_any(), safe_encode(fnv32a(key.as_bytes())));
            let endpoints = members
                .iter()
                .map(|p| {
                    let terminating = p.metadata.deletion_timestamp.is_some();
                    let ready = is_ready(p) || publish_not_ready;
                    Endpoint {
                        addresses: vec![
                            p.status
                                .as_ref()
                                .and_then(|s| s.pod_ip.clone())
                                .unwrap_or_default(),
                        ],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready && !terminating),
                            serving: Some(ready),
                            terminating: Some(terminating),
                        }),
                        node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                        target_ref: Some(pod_ref(p)),
                        ..Default::default()
                    }
                })
                .collect();
            let mut labels = BTreeMap::new();
            labels.insert(SERVICE_NAME_LABEL.to_owned(), svc.name_any());
            labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: svc.namespace(),
                    labels: Some(labels),
                    owner_references: Some(vec![controller_ref(
                        "v1",
                        "Service",
                        &svc.name_any(),
                        &svc.uid().unwrap_or_default(),
                    )]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(endpoints),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, proto, port)| SlicePort {
                            name: Some(n.clone()),
                            protocol: Some(proto.clone()),
                            port: Some(*port),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

/// The legacy Endpoints object (same name as the Service): ready addresses and
/// notReadyAddresses; terminating pods are left out.
pub fn desired_endpoints(svc: &Service, pods: &[&Pod]) -> Endpoints {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let subsets: Vec<EndpointSubset> = groups(svc, pods)
        .into_iter()
        .filter_map(|(ports, members)| {
            let live: Vec<&&Pod> = members
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            if live.is_empty() {
                return None;
            }
            let addr = |p: &Pod| EndpointAddress {
                ip: p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default(),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_ref(p)),
                hostname: None,
            };
            let ready: Vec<EndpointAddress> = live
                .iter()
                .filter(|p| publish_not_ready || is_ready(p))
                .map(|p| addr(p))
                .collect();
            let not_ready: Vec<EndpointAddress> = live
                .iter()
                .filter(|p| !(publish_not_ready || is_ready(p)))
                .map(|p| addr(p))
                .collect();
            Some(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(n, proto, port)| EndpointPort {
                            name: (!n.is_empty()).then_some(n),
                            protocol: Some(proto),
                            port,
                            app_protocol: None,
                        })
                        .collect(),
                ),
            })
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: Some(svc.name_any()),
            namespace: svc.namespace(),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: Some(p.name_any()),
        namespace: p.namespace(),
        uid: p.uid(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(target: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_not_ready_endpoints() {
        let pods = [
            pod("a", "10.244.1.2", true, "web", 8080),
            pod("b", "10.244.2.2", false, "web", 8080),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let slices = desired_slices(&svc(json!(8080)), &refs);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        let ready: Vec<bool> = s
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.conditions.as_ref().unwrap().ready.unwrap())
            .collect();
        assert_eq!(ready, [true, false]);
        let ep = desired_endpoints(&svc(json!(8080)), &refs);
        let sub = &ep.subsets.unwrap()[0];
        assert_eq!(sub.addresses.as_ref().unwrap()[0].ip, "10.244.1.2");
        assert_eq!(
            sub.not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.244.2.2"
        );
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let pods = [
            pod("a", "10.244.1.2", true, "web", 8080),
            pod("b", "10.244.2.2", true, "web", 9090),
            pod("c", "10.244.2.3", true, "other", 1),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let slices = desired_slices(&svc(json!("web")), &refs);
        let mut ports: Vec<i32> = slices
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        ports.sort();
        assert_eq!(
            ports,
            [8080, 9090],
            "pod c has no port named web and is left out"
        );
    }

    #[test]
    fn no_pods_gives_one_empty_slice() {
        let slices = desired_slices(&svc(json!(80)), &[]);
        assert_eq!(slices.len(), 1);
        assert!(
            slices[0]
                .endpoints
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        );
        assert!(desired_endpoints(&svc(json!(80)), &[]).subsets.is_none());
    }
}
