//! What the proxy balances: Services with their endpoints, in a plain form that both the
//! Kubernetes watcher (see `kube_source`) and the operator's JSON file
//! (`skein-proxy apply --from-file`) produce.
//!
//! ```json
//! {"services": [{"namespace": "default", "name": "web",
//!   "cluster_ips": ["10.96.0.10"], "external_ips": [], "load_balancer_ips": [],
//!   "ports": [{"name": "http", "protocol": "TCP", "port": 80, "node_port": 30080, "target_port": 8080}],
//!   "external_traffic_policy_local": false, "session_affinity_timeout": null,
//!   "health_check_node_port": null,
//!   "endpoints": [{"ip": "10.244.1.5", "node_name": "node1", "ready": true,
//!                  "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}]}]}
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The file format of `skein-proxy apply --from-file`: every Service of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSet {
    /// The Services.
    pub services: Vec<Service>,
}

/// One Service and its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// ClusterIPs (IPv4); empty for a headless Service (no VIP).
    #[serde(default)]
    pub cluster_ips: Vec<Ipv4Addr>,
    /// spec.externalIPs.
    #[serde(default)]
    pub external_ips: Vec<Ipv4Addr>,
    /// status.loadBalancer.ingress[].ip.
    #[serde(default)]
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// The Service's ports.
    pub ports: Vec<ServicePort>,
    /// externalTrafficPolicy: Local.
    #[serde(default)]
    pub external_traffic_policy_local: bool,
    /// sessionAffinity: ClientIP with this timeout in seconds; `None` = no affinity.
    #[serde(default)]
    pub session_affinity_timeout: Option<u32>,
    /// spec.healthCheckNodePort (externalTrafficPolicy: Local on a LoadBalancer).
    #[serde(default)]
    pub health_check_node_port: Option<u16>,
    /// Endpoints from the Service's EndpointSlices.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    /// Port name (may be empty for a single-port Service).
    #[serde(default)]
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// The nodePort, for NodePort and LoadBalancer Services.
    #[serde(default)]
    pub node_port: Option<u16>,
    /// The numeric target port, used for endpoints that list no ports.
    #[serde(default)]
    pub target_port: Option<u16>,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => crate::maps::PROTO_TCP,
            Protocol::Udp => crate::maps::PROTO_UDP,
        }
    }
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// One endpoint (a pod address) of a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The pod address.
    pub ip: Ipv4Addr,
    /// The node the pod runs on (decides node-local and SNAT).
    #[serde(default)]
    pub node_name: Option<String>,
    /// conditions.ready: serves new connections.
    #[serde(default = "yes")]
    pub ready: bool,
    /// conditions.serving.
    #[serde(default = "yes")]
    pub serving: bool,
    /// conditions.terminating.
    #[serde(default)]
    pub terminating: bool,
    /// Ports by name; empty = the Service ports' target ports.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

fn yes() -> bool {
    true
}

/// A named port of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPort {
    /// Matches [`ServicePort::name`].
    #[serde(default)]
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port on the pod.
    pub port: u16,
}

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Checks what the datapath relies on; the error names the Service and the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| {
            Err(Error::InvalidService {
                service: self.key(),
                reason,
            })
        };
        if self.namespace.is_empty() || self.name.is_empty() {
            return bad("namespace and name must not be empty".into());
        }
        let mut seen = BTreeSet::new();
        for p in &self.ports {
            if p.port == 0 {
                return bad(format!("port {:?} is 0", p.name));
            }
            if p.node_port == Some(0) || p.target_port == Some(0) {
                return bad(format!(
                    "port {:?}: nodePort and targetPort must not be 0",
                    p.name
                ));
            }
            if !seen.insert((p.name.clone(), p.protocol)) {
                return bad(format!(
                    "port name {:?}/{} appears twice",
                    p.name,
                    p.protocol.as_str()
                ));
            }
        }
        if self.ports.len() > 1 && self.ports.iter().any(|p| p.name.is_empty()) {
            return bad("every port of a multi-port Service needs a name".into());
        }
        if self.session_affinity_timeout == Some(0) {
            return bad("session_affinity_timeout must be at least 1 second".into());
        }
        for e in &self.endpoints {
            if e.ports.iter().any(|p| p.port == 0) {
                return bad(format!("endpoint {}: port 0", e.ip));
            }
        }
        Ok(())
    }
}

impl ServiceSet {
    /// Parses and validates the JSON file format.
    pub fn from_json(text: &str) -> Result<ServiceSet, Error> {
        let set: ServiceSet =
            serde_json::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        let mut names = BTreeSet::new();
        for s in &set.services {
            s.validate()?;
            if !names.insert(s.key()) {
                return Err(Error::InvalidService {
                    service: s.key(),
                    reason: "listed twice".into(),
                });
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("model.rs");
        let start = doc.find("//! ```json").unwrap() + "//! ```json".len();
        let end = start + doc[start..].find("//! ```").unwrap();
        let json: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let set = ServiceSet::from_json(&json).unwrap();
        let s = &set.services[0];
        assert_eq!(s.key(), "default/web");
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert!(s.endpoints[0].ready && s.endpoints[0].serving && !s.endpoints[0].terminating);
    }

    #[test]
    fn rejects_bad_input_with_the_service_named() {
        let e = ServiceSet::from_json(
            r#"{"services":[{"namespace":"a","name":"b","ports":[{"protocol":"TCP","port":0}]}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("a/b") && e.to_string().contains("is 0"),
            "{e}"
        );
        let e = ServiceSet::from_json(
            r#"{"services":[{"namespace":"a","name":"b","ports":[{"protocol":"SCTP","port":1}]}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("SCTP"), "{e}");
        let e = ServiceSet::from_json(
            r#"{"services":[{"namespace":"a","name":"b","ports":[],"bogus":1}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
