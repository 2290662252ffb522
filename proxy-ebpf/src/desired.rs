//! Pure decision logic: one Service (with its endpoints) on one node -> the frontends
//! and backend groups it needs in the maps. No ids yet: groups are named, the
//! reconciler gives them ids.
//!
//! ```text
//! Service web (ClusterIP 10.96.0.10:80, nodePort 30080, 3 endpoints)
//!   group "default/web:http/TCP"         backends [a, b, c] (ready ones, sorted)
//!   frontend 10.96.0.10:80/TCP   cluster  -> that group       (connect4 at the socket)
//!   frontend <node-ip>:30080/TCP external -> that group       (tc, Maglev)
//!   frontend <node-ip>:30080/TCP cluster  -> that group       (this node's pods)
//! externalTrafficPolicy: Local adds group ".../local" with this node's backends only,
//! and the external frontends use it.
//! ```

use std::net::Ipv4Addr;

use crate::maps::{Backend, SCOPE_CLUSTER, SCOPE_EXTERNAL, SVC_F_AFFINITY, SVC_F_LOCAL, SvcKey};
use crate::model::{Endpoint, Service, ServicePort};

/// Which node the proxy runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    /// The node's name (compared with `Endpoint::node_name`).
    pub node_name: String,
    /// The node's address: NodePort frontends are keyed by it. `None` = no NodePort.
    pub node_ip: Option<Ipv4Addr>,
}

/// A named set of backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `namespace/name:port/PROTO`, plus `/local` for the node-local subset.
    pub name: String,
    /// Backends in slot order.
    pub backends: Vec<Backend>,
    /// Whether tc frontends use it (then it needs a Maglev table).
    pub maglev: bool,
}

/// One frontend (address, port, protocol, scope) pointing at a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The map key.
    pub key: SvcKey,
    /// The group's name.
    pub group: String,
    /// `SVC_F_*`.
    pub flags: u16,
    /// sessionAffinity timeout, seconds (0 = none).
    pub affinity_timeout: u32,
}

/// Everything one Service needs on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEntries {
    /// Backend groups.
    pub groups: Vec<Group>,
    /// Frontends.
    pub frontends: Vec<Frontend>,
}

/// The endpoints that take new connections: the ready ones; when none is ready, the
/// serving ones that are terminating (Kubernetes' terminating-endpoint fallback), so a
/// rolling update never black-holes. Endpoints that are neither drain: existing
/// connections keep them, new ones never pick them.
pub fn usable_endpoints(svc: &Service) -> Vec<&Endpoint> {
    let ready: Vec<&Endpoint> = svc.endpoints.iter().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    svc.endpoints
        .iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

fn backend_port(e: &Endpoint, p: &ServicePort) -> Option<u16> {
    if e.ports.is_empty() {
        return Some(p.target_port.unwrap_or(p.port));
    }
    e.ports
        .iter()
        .find(|ep| ep.name == p.name && ep.protocol == p.protocol)
        .map(|ep| ep.port)
}

/// The map entries `svc` needs on `node`.
pub fn service_entries(svc: &Service, node: &NodeContext) -> ServiceEntries {
    let mut out = ServiceEntries::default();
    let usable = usable_endpoints(svc);
    let (flags, timeout) = match svc.session_affinity_timeout {
        Some(t) => (SVC_F_AFFINITY, t),
        None => (0, 0),
    };
    for p in &svc.ports {
        let proto = p.protocol.number();
        let port_label = if p.name.is_empty() {
            p.port.to_string()
        } else {
            p.name.clone()
        };
        let name = format!("{}:{}/{}", svc.key(), port_label, p.protocol.as_str());
        let mut all: Vec<(Backend, bool)> = usable
            .iter()
            .filter_map(|e| {
                let local = e.node_name.as_deref() == Some(node.node_name.as_str());
                backend_port(e, p).map(|port| (Backend::new(e.ip, port, local), local))
            })
            .collect();
        all.sort();
        all.dedup();

        let mut externals: Vec<Ipv4Addr> = Vec::new();
        let mut external_keys: Vec<SvcKey> = Vec::new();
        if let (Some(np), Some(ip)) = (p.node_port, node.node_ip) {
            external_keys.push(SvcKey::new(ip, np, proto, SCOPE_EXTERNAL));
        }
        externals.extend(&svc.external_ips);
        externals.extend(&svc.load_balancer_ips);
        for ip in &externals {
            external_keys.push(SvcKey::new(*ip, p.port, proto, SCOPE_EXTERNAL));
        }
        let has_vip = !svc.cluster_ips.is_empty() || !externals.is_empty();
        let local_group = svc.external_traffic_policy_local && !external_keys.is_empty();

        if has_vip || (!external_keys.is_empty() && !local_group) {
            out.groups.push(Group {
                name: name.clone(),
                backends: all.iter().map(|(b, _)| *b).collect(),
                maglev: !external_keys.is_empty() && !local_group,
            });
        }
        // Pods reach ClusterIPs and external IPs at the socket, with every backend.
        for ip in svc.cluster_ips.iter().chain(externals.iter()) {
            out.frontends.push(Frontend {
                key: SvcKey::new(*ip, p.port, proto, SCOPE_CLUSTER),
                group: name.clone(),
                flags,
                affinity_timeout: timeout,
            });
        }
        let ext_group = if local_group {
            let lname = format!("{name}/local");
            out.groups.push(Group {
                name: lname.clone(),
                backends: all.iter().filter(|(_, l)| *l).map(|(b, _)| *b).collect(),
                maglev: true,
            });
            lname
        } else {
            name.clone()
        };
        let ext_flags = flags | if local_group { SVC_F_LOCAL } else { 0 };
        // Pods of this node dialling <node-ip>:<nodePort> never cross the uplink: match
        // that frontend at the socket too, with the same backends an outside client gets.
        if let (Some(np), Some(ip)) = (p.node_port, node.node_ip) {
            out.frontends.push(Frontend {
                key: SvcKey::new(ip, np, proto, SCOPE_CLUSTER),
                group: ext_group.clone(),
                flags: ext_flags,
                affinity_timeout: timeout,
            });
        }
        for key in external_keys {
            out.frontends.push(Frontend {
                key,
                group: ext_group.clone(),
                flags: ext_flags,
                affinity_timeout: timeout,
            });
        }
    }
    out.frontends.sort_by_key(|f| f.key);
    out.frontends.dedup_by_key(|f| f.key);
    out
}

/// The number of ready endpoints of `svc` on `node` (the healthCheckNodePort answer).
pub fn local_endpoint_count(svc: &Service, node: &NodeContext) -> usize {
    usable_endpoints(svc)
        .iter()
        .filter(|e| e.node_name.as_deref() == Some(node.node_name.as_str()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{BE_F_LOCAL, PROTO_TCP};
    use crate::model::{EndpointPort, Protocol};

    fn ep(ip: [u8; 4], node: &str, ready: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            node_name: Some(node.into()),
            ready,
            serving: ready,
            terminating: false,
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        }
    }

    fn web() -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080),
                target_port: None,
            }],
            external_traffic_policy_local: false,
            session_affinity_timeout: None,
            health_check_node_port: None,
            endpoints: vec![
                ep([10, 244, 2, 5], "node2", true),
                ep([10, 244, 1, 5], "node1", true),
                ep([10, 244, 1, 6], "node1", false),
            ],
        }
    }

    fn node1() -> NodeContext {
        NodeContext {
            node_name: "node1".into(),
            node_ip: Some(Ipv4Addr::new(198, 51, 100, 11)),
        }
    }

    #[test]
    fn clusterip_and_nodeport_share_one_group_of_ready_backends() {
        let e = service_entries(&web(), &node1());
        assert_eq!(e.groups.len(), 1);
        let g = &e.groups[0];
        assert_eq!(g.name, "default/web:http/TCP");
        assert!(g.maglev);
        assert_eq!(
            g.backends,
            vec![
                Backend::new(Ipv4Addr::new(10, 244, 1, 5), 8080, true),
                Backend::new(Ipv4Addr::new(10, 244, 2, 5), 8080, false),
            ]
        );
        let keys: Vec<SvcKey> = e.frontends.iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            vec![
                SvcKey::new(Ipv4Addr::new(10, 96, 0, 10), 80, PROTO_TCP, SCOPE_CLUSTER),
                SvcKey::new(
                    Ipv4Addr::new(198, 51, 100, 11),
                    30080,
                    PROTO_TCP,
                    SCOPE_CLUSTER
                ),
                SvcKey::new(
                    Ipv4Addr::new(198, 51, 100, 11),
                    30080,
                    PROTO_TCP,
                    SCOPE_EXTERNAL
                ),
            ]
        );
    }

    #[test]
    fn local_policy_uses_only_this_nodes_backends_outside() {
        let mut s = web();
        s.external_traffic_policy_local = true;
        let e = service_entries(&s, &node1());
        let local = e
            .groups
            .iter()
            .find(|g| g.name.ends_with("/local"))
            .unwrap();
        assert_eq!(local.backends.len(), 1);
        assert_eq!(local.backends[0].flags, BE_F_LOCAL);
        let ext = e
            .frontends
            .iter()
            .find(|f| f.key.scope == SCOPE_EXTERNAL)
            .unwrap();
        assert_eq!(ext.group, local.name);
        assert_eq!(ext.flags & SVC_F_LOCAL, SVC_F_LOCAL);
        // Pods still reach every backend through the ClusterIP.
        let cl = e
            .frontends
            .iter()
            .find(|f| f.key.scope == SCOPE_CLUSTER)
            .unwrap();
        let g = e.groups.iter().find(|g| g.name == cl.group).unwrap();
        assert_eq!(g.backends.len(), 2);
    }

    #[test]
    fn headless_services_get_no_frontend() {
        let mut s = web();
        s.cluster_ips.clear();
        s.ports[0].node_port = None;
        assert_eq!(service_entries(&s, &node1()), ServiceEntries::default());
    }

    #[test]
    fn no_ready_endpoints_means_an_empty_group_that_refuses() {
        let mut s = web();
        s.endpoints.iter_mut().for_each(|e| e.ready = false);
        s.endpoints.iter_mut().for_each(|e| e.serving = false);
        let e = service_entries(&s, &node1());
        assert!(e.groups[0].backends.is_empty());
        assert_eq!(e.frontends.len(), 3); // ClusterIP, NodePort at the socket and at tc
    }

    #[test]
    fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
        let mut s = web();
        for e in &mut s.endpoints {
            e.ready = false;
            e.serving = true;
            e.terminating = true;
        }
        assert_eq!(service_entries(&s, &node1()).groups[0].backends.len(), 3);
        s.endpoints[0].ready = true;
        s.endpoints[0].terminating = false;
        assert_eq!(service_entries(&s, &node1()).groups[0].backends.len(), 1);
    }

    #[test]
    fn affinity_and_external_ips() {
        let mut s = web();
        s.session_affinity_timeout = Some(30);
        s.external_ips = vec![Ipv4Addr::new(203, 0, 113, 7)];
        let e = service_entries(&s, &node1());
        assert!(
            e.frontends
                .iter()
                .all(|f| f.flags & SVC_F_AFFINITY != 0 && f.affinity_timeout == 30)
        );
        assert!(
            e.frontends
                .iter()
                .any(|f| f.key.ip() == Ipv4Addr::new(203, 0, 113, 7)
                    && f.key.scope == SCOPE_EXTERNAL
                    && f.key.port() == 80)
        );
    }

    #[test]
    fn endpoints_without_ports_use_the_target_port() {
        let mut s = web();
        s.ports[0].target_port = Some(9000);
        s.endpoints.iter_mut().for_each(|e| e.ports.clear());
        let e = service_entries(&s, &node1());
        assert!(e.groups[0].backends.iter().all(|b| b.port() == 9000));
    }

    #[test]
    fn local_endpoint_count_counts_ready_local_ones() {
        assert_eq!(local_endpoint_count(&web(), &node1()), 1);
    }
}
