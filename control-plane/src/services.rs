//! Services: validation, defaults, and ClusterIP / NodePort allocation.
//!
//! Every allocated address or port is an etcd key (`<prefix>/ranges/serviceips/<ip>`,
//! `<prefix>/ranges/servicenodeports/<port>`) claimed in the same transaction as the
//! Service itself, guarded by "key absent": two concurrent creates (even on two API
//! servers) can never get the same one. Deleting the Service deletes its keys.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnetwork::Ipv4Network;
use rand::Rng;
use serde_json::{Value, json};

use crate::error::Cause;
use crate::validate;

/// The allocation ranges.
#[derive(Debug)]
pub struct Ranges {
    /// ClusterIP range.
    pub cidr: Ipv4Network,
    /// NodePort range, inclusive.
    pub ports: (u16, u16),
    /// Allocation keys believed taken (a hint; etcd decides).
    taken_ips: Mutex<HashSet<Ipv4Addr>>,
    taken_ports: Mutex<HashSet<u16>>,
}

/// What a Service write must claim and release.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Addresses to claim.
    pub ips: Vec<Ipv4Addr>,
    /// Node ports to claim.
    pub ports: Vec<u16>,
    /// Addresses to release.
    pub release_ips: Vec<Ipv4Addr>,
    /// Node ports to release.
    pub release_ports: Vec<u16>,
}

/// Which requested values were explicit (refused with 422 when taken) rather than
/// picked by the server (retried with another value).
#[derive(Debug, Default)]
pub struct Explicit {
    /// The ClusterIP was given by the client.
    pub ip: bool,
    /// These node ports were given by the client.
    pub ports: Vec<u16>,
}

fn needs_node_ports(t: &str) -> bool {
    t == "NodePort" || t == "LoadBalancer"
}

impl Ranges {
    /// New ranges.
    pub fn new(cidr: Ipv4Network, ports: (u16, u16)) -> Ranges {
        Ranges {
            cidr,
            ports,
            taken_ips: Mutex::new(HashSet::new()),
            taken_ports: Mutex::new(HashSet::new()),
        }
    }

    /// The first usable address (the `kubernetes` Service's).
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// Records an address or port as taken (from storage).
    pub fn mark_ip(&self, ip: Ipv4Addr, taken: bool) {
        let mut s = self.taken_ips.lock().unwrap_or_else(|p| p.into_inner());
        if taken {
            s.insert(ip);
        } else {
            s.remove(&ip);
        }
    }

    /// Records a node port as taken or free.
    pub fn mark_port(&self, port: u16, taken: bool) {
        let mut s = self.taken_ports.lock().unwrap_or_else(|p| p.into_inner());
        if taken {
            s.insert(port);
        } else {
            s.remove(&port);
        }
    }

    fn pick_ip(&self, avoid: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let base = u32::from(self.cidr.network());
        let size = self.cidr.size();
        if size < 4 {
            return None;
        }
        let usable = size - 2; // no network, no broadcast
        let taken = self.taken_ips.lock().unwrap_or_else(|p| p.into_inner());
        let start = rand::rng().random_range(0..usable);
        // Skip the first address: it belongs to the `kubernetes` Service.
        (0..usable)
            .map(|i| base + 1 + (start + i) % usable)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.first_ip() && !taken.contains(ip) && !avoid.contains(ip))
    }

    fn pick_port(&self, avoid: &[u16]) -> Option<u16> {
        let (lo, hi) = self.ports;
        let n = u32::from(hi - lo) + 1;
        let taken = self.taken_ports.lock().unwrap_or_else(|p| p.into_inner());
        let start = rand::rng().random_range(0..n);
        (0..n)
            .map(|i| lo + ((start + i) % n) as u16)
            .find(|p| !taken.contains(p) && !avoid.contains(p))
    }

    /// Validates a Service, fills its defaults and decides its allocations. `old` is the
    /// stored Service on update. `explicit` reports which values the client chose.
    pub fn prepare(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        explicit: &mut Explicit,
    ) -> Result<Claims, Vec<Cause>> {
        let mut causes = Vec::new();
        let mut claims = Claims::default();
        let spec = svc["spec"].as_object().cloned().unwrap_or_default();
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "spec.type".into(),
                message: format!("Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            });
            return Err(causes);
        }
        svc["spec"]["type"] = json!(ty);
        if let Some(sel) = spec.get("selector").and_then(Value::as_object) {
            for (k, v) in sel {
                if let Err(e) = validate::qualified_name(k) {
                    causes.push(Cause::invalid("spec.selector", e));
                }
                if let Err(e) = validate::label_value(v.as_str().unwrap_or("")) {
                    causes.push(Cause::invalid(format!("spec.selector[{k}]"), e));
                }
            }
        }
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_owned);
        let mut ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if ip.is_empty()
            && let Some(o) = &old_ip
        {
            ip = o.clone();
        }
        if let Some(o) = &old_ip
            && !o.is_empty()
            && *o != ip
            && !(ty == "ExternalName" || old.is_some_and(|o| o["spec"]["type"] == "ExternalName"))
        {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                format!("Invalid value: {ip:?}: may not change once set (field is immutable)"),
            ));
            return Err(causes);
        }
        let ports = spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if ty == "ExternalName" {
            match spec.get("externalName").and_then(Value::as_str) {
                Some(n) if validate::dns_subdomain(n).is_ok() => {}
                Some(n) => causes.push(Cause::invalid(
                    "spec.externalName",
                    format!("Invalid value: {n:?}: must be a DNS name"),
                )),
                None => causes.push(Cause::required("spec.externalName")),
            }
            if !ip.is_empty() && ip != "None" && old_ip.as_deref() != Some(ip.as_str()) {
                causes.push(Cause::invalid(
                    "spec.clusterIP",
                    "Invalid value: must be empty for ExternalName services",
                ));
            }
        } else if ports.is_empty() && ip != "None" {
            causes.push(Cause::required("spec.ports"));
        }
        // Ports.
        let old_ports: Vec<Value> = old
            .and_then(|o| o["spec"]["ports"].as_array().cloned())
            .unwrap_or_default();
        let old_node_ports: Vec<u16> = old_ports
            .iter()
            .filter_map(|p| p["nodePort"].as_u64())
            .map(|p| p as u16)
            .collect();
        let mut names = HashSet::new();
        let mut new_ports = Vec::new();
        let mut kept_node_ports = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let mut p = p.clone();
            let f = |x: &str| format!("spec.ports[{i}].{x}");
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    f("port"),
                    format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                ));
            }
            let proto = p["protocol"].as_str().unwrap_or("TCP").to_owned();
            if !["TCP", "UDP", "SCTP"].contains(&proto.as_str()) {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: f("protocol"),
                    message: format!(
                        "Unsupported value: {proto:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""
                    ),
                });
            }
            p["protocol"] = json!(proto);
            let name = p["name"].as_str().unwrap_or("").to_owned();
            if ports.len() > 1 && name.is_empty() {
                causes.push(Cause::required(f("name")));
            }
            if !name.is_empty() {
                if let Err(e) = validate::dns_label(&name) {
                    causes.push(Cause::invalid(f("name"), e));
                }
                if !names.insert(name.clone()) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: f("name"),
                        message: format!("Duplicate value: {name:?}"),
                    });
                }
            }
            match &p["targetPort"] {
                Value::Null => p["targetPort"] = json!(port),
                Value::Number(n) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                    causes.push(Cause::invalid(
                        f("targetPort"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    ));
                }
                _ => {}
            }
            match p["nodePort"].as_i64() {
                Some(np) if !needs_node_ports(&ty) => {
                    // Left over from a NodePort type being changed: released below.
                    let leftover = np == 0 || old_node_ports.contains(&(np as u16));
                    if leftover {
                        if let Some(m) = p.as_object_mut() {
                            m.remove("nodePort");
                        }
                    } else {
                        causes.push(Cause::invalid(
                            f("nodePort"),
                            format!("Forbidden: may not be used when `type` is '{ty}'"),
                        ));
                    }
                }
                Some(np) => {
                    let (lo, hi) = self.ports;
                    if !(i64::from(lo)..=i64::from(hi)).contains(&np) {
                        causes.push(Cause::invalid(f("nodePort"), format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
                    } else {
                        let np = np as u16;
                        if old_node_ports.contains(&np) {
                            kept_node_ports.push(np);
                        } else {
                            explicit.ports.push(np);
                            claims.ports.push(np);
                        }
                    }
                }
                None if needs_node_ports(&ty) => {
                    // Keep the node port this port number had before, else allocate.
                    let prev = old_ports
                        .iter()
                        .find(|o| {
                            o["port"] == p["port"]
                                && o["protocol"].as_str().unwrap_or("TCP") == proto
                        })
                        .and_then(|o| o["nodePort"].as_u64())
                        .map(|n| n as u16)
                        .filter(|n| !kept_node_ports.contains(n));
                    let np = match prev {
                        Some(n) => {
                            kept_node_ports.push(n);
                            n
                        }
                        None => {
                            let avoid: Vec<u16> = claims
                                .ports
                                .iter()
                                .chain(&kept_node_ports)
                                .copied()
                                .collect();
                            match self.pick_port(&avoid) {
                                Some(n) => {
                                    claims.ports.push(n);
                                    n
                                }
                                None => {
                                    causes.push(Cause::invalid(
                                        f("nodePort"),
                                        "Internal error: range is full",
                                    ));
                                    0
                                }
                            }
                        }
                    };
                    p["nodePort"] = json!(np);
                }
                None => {}
            }
            new_ports.push(p);
        }
        let dup: HashSet<u16> = claims
            .ports
            .iter()
            .chain(&kept_node_ports)
            .copied()
            .collect();
        if dup.len() != claims.ports.len() + kept_node_ports.len() {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: "spec.ports".into(),
                message: "Duplicate value: the same nodePort twice".into(),
            });
        }
        claims.release_ports = old_node_ports
            .iter()
            .filter(|p| !kept_node_ports.contains(p))
            .copied()
            .collect();
        if !new_ports.is_empty() || svc["spec"].get("ports").is_some() {
            svc["spec"]["ports"] = Value::Array(new_ports);
        }
        // ClusterIP.
        if ty == "ExternalName" {
            if let Some(o) = old_ip.as_deref().filter(|o| !o.is_empty() && *o != "None")
                && let Ok(a) = o.parse()
            {
                claims.release_ips.push(a);
            }
            if let Some(m) = svc["spec"].as_object_mut() {
                m.remove("clusterIP");
                m.remove("clusterIPs");
            }
        } else if ip == "None" {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        } else if old_ip.as_deref() == Some(ip.as_str()) {
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
        } else if ip.is_empty() {
            match self.pick_ip(&[]) {
                Some(a) => {
                    claims.ips.push(a);
                    svc["spec"]["clusterIP"] = json!(a.to_string());
                    svc["spec"]["clusterIPs"] = json!([a.to_string()]);
                }
                None => causes.push(Cause::invalid(
                    "spec.clusterIP",
                    "Internal error: failed to allocate a serviceIP: range is full",
                )),
            }
        } else {
            match ip.parse::<Ipv4Addr>() {
                Ok(a) if self.cidr.contains(a) && a != self.cidr.network() && a != self.cidr.broadcast() => {
                    explicit.ip = true;
                    claims.ips.push(a);
                    svc["spec"]["clusterIPs"] = json!([ip]);
                }
                Ok(_) => causes.push(Cause::invalid("spec.clusterIPs", format!("Invalid value: {ip:?}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", self.cidr))),
                Err(_) => causes.push(Cause::invalid("spec.clusterIPs[0]", format!("Invalid value: {ip:?}: must be a valid IP address"))),
            }
        }
        if ty != "ExternalName" {
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            if svc["spec"]["internalTrafficPolicy"].is_null() {
                svc["spec"]["internalTrafficPolicy"] = json!("Cluster");
            }
        }
        if needs_node_ports(&ty) && svc["spec"]["externalTrafficPolicy"].is_null() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
        if svc["spec"]["sessionAffinity"].is_null() {
            svc["spec"]["sessionAffinity"] = json!("None");
        }
        if causes.is_empty() {
            Ok(claims)
        } else {
            Err(causes)
        }
    }

    /// Allocation keys a stored Service holds.
    pub fn held(svc: &Value) -> (Vec<Ipv4Addr>, Vec<u16>) {
        let ips = svc["spec"]["clusterIP"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .into_iter()
            .collect();
        let ports = svc["spec"]["ports"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["nodePort"].as_u64())
                    .map(|p| p as u16)
                    .collect()
            })
            .unwrap_or_default();
        (ips, ports)
    }
}

/// The etcd key of an allocated address.
pub fn ip_key(prefix: &str, ip: Ipv4Addr) -> String {
    format!("{prefix}/ranges/serviceips/{ip}")
}

/// The etcd key of an allocated node port.
pub fn port_key(prefix: &str, port: u16) -> String {
    format!("{prefix}/ranges/servicenodeports/{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Ranges {
        Ranges::new("10.96.0.0/28".parse().unwrap(), (30000, 30002))
    }

    #[test]
    fn node_port_service_gets_an_ip_and_its_requested_port() {
        let r = ranges();
        let mut svc = json!({"spec": {"type": "NodePort", "selector": {"app": "nginx"},
            "ports": [{"port": 80, "nodePort": 30001}]}});
        let mut ex = Explicit::default();
        let claims = r.prepare(&mut svc, None, &mut ex).unwrap();
        assert_eq!(claims.ports, vec![30001]);
        assert_eq!(ex.ports, vec![30001]);
        assert_eq!(claims.ips.len(), 1);
        let ip = claims.ips[0];
        assert!(r.cidr.contains(ip) && ip != r.first_ip());
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn bad_services_are_refused_with_causes() {
        let r = ranges();
        let bad = |spec: Value| {
            r.prepare(&mut json!({"spec": spec}), None, &mut Explicit::default())
                .unwrap_err()
        };
        assert_eq!(
            bad(json!({"type": "Weird", "ports": [{"port": 1}]}))[0].field,
            "spec.type"
        );
        assert_eq!(
            bad(json!({"ports": [{"port": 70000}]}))[0].field,
            "spec.ports[0].port"
        );
        assert_eq!(bad(json!({"ports": []}))[0].field, "spec.ports");
        assert_eq!(
            bad(json!({"ports": [{"port": 1}, {"port": 2}]}))[0].field,
            "spec.ports[0].name"
        );
        assert_eq!(
            bad(json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": 80}]}))[0].field,
            "spec.ports[0].nodePort"
        );
        assert_eq!(
            bad(json!({"clusterIP": "192.0.2.1", "ports": [{"port": 1}]}))[0].field,
            "spec.clusterIPs"
        );
        assert_eq!(
            bad(json!({"ports": [{"port": 1}], "selector": {"a b": "c"}}))[0].field,
            "spec.selector"
        );
    }

    #[test]
    fn update_keeps_ip_and_node_ports_and_releases_dropped_ones() {
        let r = ranges();
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5",
            "ports": [{"name": "a", "port": 80, "protocol": "TCP", "nodePort": 30000},
                      {"name": "b", "port": 81, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}]}});
        let claims = r
            .prepare(&mut new, Some(&old), &mut Explicit::default())
            .unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30000);
        assert!(claims.ips.is_empty() && claims.ports.is_empty());
        assert_eq!(claims.release_ports, vec![30001]);
        let mut changed = json!({"spec": {"clusterIP": "10.96.0.6", "ports": [{"port": 80}]}});
        assert!(
            r.prepare(&mut changed, Some(&old), &mut Explicit::default())
                .is_err()
        );
    }

    #[test]
    fn allocation_skips_taken_values_until_the_range_is_full() {
        let r = Ranges::new("10.96.0.0/29".parse().unwrap(), (30000, 30000));
        // Usable: .1 (kubernetes) .. .6; five left for others.
        let mut seen = HashSet::new();
        for _ in 0..5 {
            let ip = r.pick_ip(&[]).unwrap();
            r.mark_ip(ip, true);
            assert!(seen.insert(ip));
        }
        assert_eq!(r.pick_ip(&[]), None);
        assert_eq!(r.pick_port(&[]), Some(30000));
        r.mark_port(30000, true);
        assert_eq!(r.pick_port(&[]), None);
    }
}
