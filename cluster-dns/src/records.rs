//! Services and EndpointSlices → the cluster zone's records (the Kubernetes DNS spec).
//!
//! | Service                      | records                                                     |
//! |------------------------------|-------------------------------------------------------------|
//! | ClusterIP / NodePort / LB    | `A`/`AAAA` `<svc>.<ns>.svc.<domain>` → each ClusterIP        |
//! |                              | `SRV` `_<port>._<proto>.<svc>.<ns>.svc.<domain>` → `<svc>...` |
//! | headless (`clusterIP: None`) | `A`/`AAAA` `<svc>.<ns>.svc.<domain>` → each ready endpoint   |
//! |                              | `A`/`AAAA` `<host>.<svc>.<ns>.svc.<domain>` per endpoint      |
//! |                              | `SRV` `_<port>._<proto>.<svc>...` → each `<host>.<svc>...`    |
//! | ExternalName                 | `CNAME` `<svc>.<ns>.svc.<domain>` → `spec.externalName`       |
//!
//! `<host>` is the endpoint's `hostname`, or its address with `-` for `.`/`:`. An
//! endpoint is ready unless `conditions.ready` is `false` (Kubernetes' rule);
//! `publishNotReadyAddresses` publishes not-ready ones too. A Service's EndpointSlices
//! are those in its namespace labelled `kubernetes.io/service-name: <svc>`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::zone::{RecordData, Zone};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What [`build_zone`] made, and what it had to leave out (one line per problem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The zone.
    pub zone: Zone,
    /// Objects or fields skipped, each naming the object and the reason.
    pub skipped: Vec<String>,
}

/// Computes the zone for `domain` from every Service and EndpointSlice.
pub fn build_zone<'a>(
    domain: &str,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Built {
    let mut zone = Zone::new(domain);
    let mut skipped = Vec::new();
    let domain = zone.domain().to_owned();

    // (namespace, service name) → its slices.
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let svc = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        if let Some(svc) = svc {
            by_service.entry((ns, svc)).or_default().push(slice);
        }
    }

    for svc in services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let what = format!("service {ns}/{name}");
        if !is_label(&name) || !is_label(&ns) {
            skipped.push(format!(
                "{what}: name and namespace must be DNS labels (a-z, 0-9, '-')"
            ));
            continue;
        }
        let Some(spec) = &svc.spec else {
            skipped.push(format!("{what}: no spec"));
            continue;
        };
        let fqdn = format!("{name}.{ns}.svc.{domain}");

        if spec.type_.as_deref() == Some("ExternalName") {
            match spec.external_name.as_deref().map(str::trim) {
                Some(ext) if is_hostname(ext) => {
                    zone.insert(&fqdn, RecordData::Cname(crate::zone::normalize(ext)));
                }
                other => skipped.push(format!(
                    "{what}: ExternalName Service with invalid externalName {other:?}"
                )),
            }
            continue;
        }

        let cluster_ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        let headless = cluster_ips.first().is_some_and(|ip| *ip == "None");
        if headless {
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let not_ready_too = spec.publish_not_ready_addresses == Some(true);
            add_headless(&mut zone, &mut skipped, &fqdn, slices, not_ready_too);
            continue;
        }
        if cluster_ips.is_empty() || cluster_ips.iter().all(|ip| ip.is_empty()) {
            skipped.push(format!("{what}: no ClusterIP assigned yet"));
            continue;
        }
        let mut any = false;
        for ip in cluster_ips {
            match ip.parse::<IpAddr>() {
                Ok(ip) => {
                    zone.insert(&fqdn, RecordData::addr(ip));
                    any = true;
                }
                Err(_) => skipped.push(format!("{what}: invalid ClusterIP {ip:?}")),
            }
        }
        if !any {
            continue;
        }
        for port in spec.ports.iter().flatten() {
            let Some(pname) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                skipped.push(format!(
                    "{what}: port {pname} has invalid number {}",
                    port.port
                ));
                continue;
            };
            let proto = port
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            zone.insert(
                &format!("_{pname}._{proto}.{fqdn}"),
                RecordData::Srv {
                    priority: 0,
                    weight: 100,
                    port: number,
                    target: fqdn.clone(),
                },
            );
        }
    }
    Built { zone, skipped }
}

/// A headless Service: its ready endpoints, one name each, and SRV per named port.
fn add_headless(
    zone: &mut Zone,
    skipped: &mut Vec<String>,
    fqdn: &str,
    slices: &[&EndpointSlice],
    not_ready_too: bool,
) {
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let mut hosts: Vec<String> = Vec::new();
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if !ready && !not_ready_too {
                continue;
            }
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    skipped.push(format!(
                        "endpointslice {slice_name}: invalid address {addr:?}"
                    ));
                    continue;
                };
                zone.insert(fqdn, RecordData::addr(ip));
                let host = match ep.hostname.as_deref() {
                    Some(h) if is_label(h) => h.to_owned(),
                    _ => addr.replace(['.', ':'], "-"),
                };
                let host_fqdn = format!("{host}.{fqdn}");
                zone.insert(&host_fqdn, RecordData::addr(ip));
                if !hosts.contains(&host_fqdn) {
                    hosts.push(host_fqdn);
                }
            }
        }
        let weight = u16::try_from(100 / hosts.len().max(1)).unwrap_or(1).max(1);
        for port in slice.ports.iter().flatten() {
            let Some(pname) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                skipped.push(format!(
                    "endpointslice {slice_name}: port {pname} has no valid number"
                ));
                continue;
            };
            let proto = port
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            for target in &hosts {
                zone.insert(
                    &format!("_{pname}._{proto}.{fqdn}"),
                    RecordData::Srv {
                        priority: 0,
                        weight,
                        port: number,
                        target: target.clone(),
                    },
                );
            }
        }
    }
}

/// A DNS label as Kubernetes names are: 1-63 of a-z, 0-9 and '-' (any case here).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host name: dot-separated labels (one trailing dot allowed), at most 253 characters.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| is_label(l) || (l.len() <= 63 && l.starts_with('_') && is_label(&l[1..])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{Answer, QueryType, Record};

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        obj(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
    }

    fn slice(
        ns: &str,
        svc: &str,
        name: &str,
        endpoints: serde_json::Value,
        ports: serde_json::Value,
    ) -> EndpointSlice {
        obj(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }))
    }

    fn a(name: &str, ip: &str) -> Record {
        Record {
            name: name.into(),
            data: RecordData::addr(ip.parse().unwrap()),
        }
    }

    fn records(answer: Answer) -> Vec<Record> {
        match answer {
            Answer::Records(mut r) => {
                r.sort();
                r
            }
            other => panic!("expected records, got {other:?}"),
        }
    }

    fn cluster() -> (Vec<Service>, Vec<EndpointSlice>) {
        let services = vec![
            svc(
                "default",
                "web",
                serde_json::json!({
                    "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                    "ports": [
                        {"name": "http", "port": 80, "protocol": "TCP"},
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"port": 8080}
                    ]
                }),
            ),
            svc(
                "default",
                "db",
                serde_json::json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
            ),
            svc(
                "prod",
                "search",
                serde_json::json!({"type": "ExternalName", "externalName": "search.example.com."}),
            ),
            svc(
                "default",
                "pending",
                serde_json::json!({"ports": [{"port": 1}]}),
            ),
        ];
        let slices = vec![
            slice(
                "default",
                "db",
                "db-abc",
                serde_json::json!([
                    {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.7"]},
                    {"addresses": ["10.244.3.9"], "conditions": {"ready": false}}
                ]),
                serde_json::json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
            ),
            // Same Service name, other namespace: must not leak into default/db.
            slice(
                "other",
                "db",
                "db-xyz",
                serde_json::json!([{"addresses": ["10.244.9.9"]}]),
                serde_json::json!([]),
            ),
            // The slice of a normal Service does not change its A record.
            slice(
                "default",
                "web",
                "web-1",
                serde_json::json!([{"addresses": ["10.244.1.2"]}]),
                serde_json::json!([{"name": "http", "port": 8080}]),
            ),
        ];
        (services, slices)
    }

    fn built() -> Built {
        let (services, slices) = cluster();
        build_zone("cluster.local", &services, &slices)
    }

    #[test]
    fn normal_service_answers_its_cluster_ip() {
        let z = built().zone;
        assert_eq!(
            records(z.lookup("web.default.svc.cluster.local", QueryType::A)),
            vec![a("web.default.svc.cluster.local", "10.96.0.20")]
        );
    }

    #[test]
    fn named_ports_get_srv_records_per_protocol() {
        let z = built().zone;
        assert_eq!(
            records(z.lookup("_http._tcp.web.default.svc.cluster.local.", QueryType::Srv)),
            vec![Record {
                name: "_http._tcp.web.default.svc.cluster.local".into(),
                data: RecordData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 80,
                    target: "web.default.svc.cluster.local".into()
                },
            }]
        );
        assert_eq!(
            records(z.lookup("_dns._udp.web.default.svc.cluster.local", QueryType::Srv)).len(),
            1
        );
        assert_eq!(
            z.lookup("_dns._tcp.web.default.svc.cluster.local", QueryType::Srv),
            Answer::NxDomain
        );
    }

    #[test]
    fn headless_service_answers_ready_endpoints_of_its_own_slices() {
        let z = built().zone;
        assert_eq!(
            records(z.lookup("db.default.svc.cluster.local", QueryType::A)),
            vec![
                a("db.default.svc.cluster.local", "10.244.1.5"),
                a("db.default.svc.cluster.local", "10.244.2.7"),
            ]
        );
        assert_eq!(
            records(z.lookup("db-0.db.default.svc.cluster.local", QueryType::A)),
            vec![a("db-0.db.default.svc.cluster.local", "10.244.1.5")]
        );
        assert_eq!(
            records(z.lookup("10-244-2-7.db.default.svc.cluster.local", QueryType::A)),
            vec![a("10-244-2-7.db.default.svc.cluster.local", "10.244.2.7")]
        );
        assert_eq!(
            z.lookup("10-244-3-9.db.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain,
            "a not-ready endpoint is not published"
        );
    }

    #[test]
    fn headless_srv_targets_each_endpoint() {
        let z = built().zone;
        let srv = records(z.lookup("_pg._tcp.db.default.svc.cluster.local", QueryType::Srv));
        let targets: Vec<(u16, String)> = srv
            .into_iter()
            .map(|r| match r.data {
                RecordData::Srv { port, target, .. } => (port, target),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                (5432, "10-244-2-7.db.default.svc.cluster.local".to_owned()),
                (5432, "db-0.db.default.svc.cluster.local".to_owned()),
            ]
        );
    }

    #[test]
    fn publish_not_ready_addresses_includes_not_ready_endpoints() {
        let (mut services, slices) = cluster();
        services[1]
            .spec
            .as_mut()
            .unwrap()
            .publish_not_ready_addresses = Some(true);
        let z = build_zone("cluster.local", &services, &slices).zone;
        assert_eq!(
            records(z.lookup("db.default.svc.cluster.local", QueryType::A)).len(),
            3
        );
    }

    #[test]
    fn external_name_is_a_cname() {
        let z = built().zone;
        assert_eq!(
            z.lookup("SEARCH.prod.svc.cluster.local", QueryType::A),
            Answer::Records(vec![Record {
                name: "search.prod.svc.cluster.local".into(),
                data: RecordData::Cname("search.example.com".into()),
            }])
        );
        assert_eq!(
            z.lookup("search.prod.svc.cluster.local", QueryType::Cname),
            Answer::Records(vec![Record {
                name: "search.prod.svc.cluster.local".into(),
                data: RecordData::Cname("search.example.com".into()),
            }])
        );
    }

    #[test]
    fn unknown_and_unassigned_names_are_nxdomain_and_reported() {
        let b = built();
        assert_eq!(
            b.zone
                .lookup("pending.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            b.zone
                .lookup("nope.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            b.zone.lookup("db.other.svc.cluster.local", QueryType::A),
            Answer::NxDomain,
            "a slice without its Service makes no records"
        );
        assert_eq!(
            b.zone.lookup("www.example.com", QueryType::A),
            Answer::NotInZone
        );
        assert_eq!(
            b.skipped,
            vec!["service default/pending: no ClusterIP assigned yet".to_owned()]
        );
    }

    #[test]
    fn other_domain_and_bad_fields_are_handled() {
        let services = vec![
            svc(
                "default",
                "web",
                serde_json::json!({"clusterIP": "10.0.0.1"}),
            ),
            svc(
                "default",
                "bad",
                serde_json::json!({"clusterIP": "300.1.1.1"}),
            ),
            svc(
                "default",
                "ext",
                serde_json::json!({"type": "ExternalName", "externalName": "not a host"}),
            ),
        ];
        let b = build_zone("Corp.Example.", &services, &[]);
        assert_eq!(
            records(b.zone.lookup("web.default.svc.corp.example", QueryType::A)),
            vec![a("web.default.svc.corp.example", "10.0.0.1")]
        );
        assert_eq!(
            b.zone.lookup("web.default.svc.cluster.local", QueryType::A),
            Answer::NotInZone
        );
        assert_eq!(b.skipped.len(), 2, "{:?}", b.skipped);
        assert!(b.skipped[0].contains("invalid ClusterIP \"300.1.1.1\""));
        assert!(b.skipped[1].contains("default/ext"));
    }

    #[test]
    fn dual_stack_cluster_ips_answer_a_and_aaaa() {
        let services = vec![svc(
            "default",
            "web",
            serde_json::json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"]}),
        )];
        let z = build_zone("cluster.local", &services, &[]).zone;
        assert_eq!(
            records(z.lookup("web.default.svc.cluster.local", QueryType::Aaaa)),
            vec![a("web.default.svc.cluster.local", "fd00::1")]
        );
    }
}
