//! Kubernetes objects -> [`model::Service`]: a Service (core/v1) and the
//! EndpointSlices (discovery.k8s.io/v1) labelled `kubernetes.io/service-name` with its
//! name. Pure; the watchers live in `daemon`.
//!
//! Only what this proxy implements is kept: IPv4 addresses, TCP and UDP ports (SCTP and
//! IPv6 are skipped and logged); ExternalName Services have no datapath.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service as KService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Endpoint, EndpointPort, Protocol, Service, ServicePort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

fn port16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

fn ipv4s<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    it.into_iter().filter_map(|s| s.parse().ok()).collect()
}

/// `namespace/name` of a Service.
pub fn service_key(svc: &KService) -> Option<String> {
    Some(format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref()?
    ))
}

/// `namespace/service` an EndpointSlice belongs to.
pub fn slice_service_key(slice: &EndpointSlice) -> Option<String> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        slice.metadata.namespace.as_deref().unwrap_or("default")
    ))
}

/// The model of `svc` with the endpoints of `slices`; `None` for a Service this proxy
/// has nothing to do for (ExternalName, no name).
pub fn convert<'a>(
    svc: &KService,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let mut cluster_ips: Vec<Ipv4Addr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ipv4s(ips),
        _ => ipv4s(spec.cluster_ip.iter()),
    };
    cluster_ips.dedup();
    let load_balancer_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ipv4s(ing.iter().filter_map(|i| i.ip.as_ref())))
        .unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref())?,
                port: port16(p.port)?,
                node_port: p.node_port.and_then(port16),
                target_port: match &p.target_port {
                    Some(IntOrString::Int(n)) => port16(*n),
                    _ => None,
                },
            })
        })
        .collect();
    let affinity = spec.session_affinity.as_deref() == Some("ClientIP");
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(10800);

    let mut endpoints = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ports: Vec<EndpointPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: protocol(p.protocol.as_deref())?,
                    port: port16(p.port?)?,
                })
            })
            .collect();
        for e in slice.endpoints.iter().flatten() {
            let c = e.conditions.clone().unwrap_or_default();
            // A nil `ready` means ready (the API's documented default).
            let ready = c.ready.unwrap_or(true);
            for ip in ipv4s(&e.addresses) {
                endpoints.push(Endpoint {
                    ip,
                    node_name: e.node_name.clone(),
                    ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                    ports: ports.clone(),
                });
            }
        }
    }
    Some(Service {
        namespace: svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: svc.metadata.name.clone()?,
        cluster_ips,
        external_ips: ipv4s(spec.external_ips.iter().flatten()),
        load_balancer_ips,
        ports,
        external_traffic_policy_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        session_affinity_timeout: affinity.then_some(timeout),
        health_check_node_port: spec.health_check_node_port.and_then(port16),
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> KService {
        serde_json::from_value(json).unwrap()
    }
    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn converts_a_nodeport_service_with_its_slices() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
                               {"name": "s", "port": 9, "protocol": "SCTP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}
        }));
        let sl = slice(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "nodeName": "node1", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.5"], "nodeName": "node2",
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.3.5"]}
            ]
        }));
        assert_eq!(slice_service_key(&sl).as_deref(), Some("shop/web"));
        assert_eq!(service_key(&s).as_deref(), Some("shop/web"));
        let m = convert(&s, [&sl]).unwrap();
        m.validate().unwrap();
        assert_eq!(m.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(m.load_balancer_ips, vec![Ipv4Addr::new(203, 0, 113, 9)]);
        assert_eq!(m.ports.len(), 1, "SCTP is skipped");
        assert_eq!(m.ports[0].node_port, Some(30080));
        assert_eq!(m.ports[0].target_port, Some(8080));
        assert!(m.external_traffic_policy_local);
        assert_eq!(m.session_affinity_timeout, Some(30));
        assert_eq!(m.endpoints.len(), 3);
        assert!(m.endpoints[0].ready);
        assert!(!m.endpoints[1].ready && m.endpoints[1].serving && m.endpoints[1].terminating);
        assert!(m.endpoints[2].ready, "no conditions means ready");
        assert_eq!(m.endpoints[0].ports[0].port, 8080);
    }

    #[test]
    fn headless_and_external_name_services() {
        let headless = svc(serde_json::json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        assert!(convert(&headless, []).unwrap().cluster_ips.is_empty());
        let ext = svc(serde_json::json!({
            "metadata": {"name": "e", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }));
        assert!(convert(&ext, []).is_none());
    }

    #[test]
    fn ipv6_slices_are_skipped() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}
        }));
        let sl = slice(serde_json::json!({
            "metadata": {"name": "x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"]}]
        }));
        assert!(convert(&s, [&sl]).unwrap().endpoints.is_empty());
    }
}
