//! The record table of the cluster zone and the lookup on it: plain data, no I/O.
//!
//! Names are stored lowercase, without the trailing dot. A lookup normalizes the asked
//! name the same way, so `MyApp.Default.SVC.cluster.local.` and
//! `myapp.default.svc.cluster.local` are the same name (DNS names are case-insensitive).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias to another name (normalized, no trailing dot).
    Cname(String),
    /// A service location (RFC 2782).
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// The port.
        port: u16,
        /// The host to connect to (normalized, no trailing dot).
        target: String,
    },
}

impl RecordData {
    /// The record's type.
    pub fn kind(&self) -> QueryType {
        match self {
            RecordData::A(_) => QueryType::A,
            RecordData::Aaaa(_) => QueryType::Aaaa,
            RecordData::Cname(_) => QueryType::Cname,
            RecordData::Srv { .. } => QueryType::Srv,
        }
    }

    /// An A or AAAA record for `ip`.
    pub fn addr(ip: IpAddr) -> RecordData {
        match ip {
            IpAddr::V4(v4) => RecordData::A(v4),
            IpAddr::V6(v6) => RecordData::Aaaa(v6),
        }
    }
}

/// The types a client can ask for that this zone distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Alias.
    Cname,
    /// Service location.
    Srv,
    /// Every record at the name.
    Any,
    /// Any other type (MX, TXT, ...): the zone holds none, so the answer is empty.
    Other,
}

/// A record in an answer: its owner name (normalized) and its data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    /// The owner name, lowercase, without the trailing dot.
    pub name: String,
    /// The data.
    pub data: RecordData,
}

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists and has records of the asked type (after any CNAME in the zone).
    Records(Vec<Record>),
    /// The name exists in the zone but has no record of the asked type (NOERROR, empty).
    NoData,
    /// The name is inside the zone and does not exist.
    NxDomain,
    /// The name is outside the zone: forward it, or answer NXDOMAIN.
    NotInZone,
}

/// Lowercases a name and drops one trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether `name` is `domain` or below it (both normalized).
pub fn in_domain(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1)
}

/// The cluster zone: every name with its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    domain: String,
    records: BTreeMap<String, BTreeSet<RecordData>>,
    /// Every owner name and all its ancestors inside the zone (empty non-terminals
    /// such as `default.svc.cluster.local` exist: NODATA, not NXDOMAIN).
    names: BTreeSet<String>,
}

impl Zone {
    /// An empty zone for `domain` (for example `cluster.local`).
    pub fn new(domain: &str) -> Zone {
        let domain = normalize(domain);
        let mut names = BTreeSet::new();
        names.insert(domain.clone());
        Zone {
            domain,
            records: BTreeMap::new(),
            names,
        }
    }

    /// The zone's domain, normalized.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Adds a record at `name` (normalized here). Names outside the zone are ignored and
    /// reported with `false`.
    pub fn insert(&mut self, name: &str, data: RecordData) -> bool {
        let name = normalize(name);
        if !self.contains(&name) {
            return false;
        }
        let mut n = name.as_str();
        // Once a name is known, so are all its ancestors.
        while !self.names.contains(n) {
            self.names.insert(n.to_owned());
            match n.split_once('.') {
                Some((_, parent)) => n = parent,
                None => break,
            }
        }
        self.records.entry(name).or_default().insert(data);
        true
    }

    fn contains(&self, name: &str) -> bool {
        in_domain(name, &self.domain)
    }

    /// Number of names that own records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the zone owns no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record, in name order (for logs and debugging).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.records.iter().flat_map(|(name, set)| {
            set.iter().map(move |data| Record {
                name: name.clone(),
                data: data.clone(),
            })
        })
    }

    /// Answers `name` / `qtype`. A CNAME at the name answers any other type, followed
    /// through the zone (a target outside the zone is left to the client).
    pub fn lookup(&self, name: &str, qtype: QueryType) -> Answer {
        let name = normalize(name);
        if !self.contains(&name) {
            return Answer::NotInZone;
        }
        let mut out = Vec::new();
        let mut current = name;
        // Bounded: CNAME chains inside the zone cannot loop forever.
        for _ in 0..8 {
            let Some(set) = self.records_at(&current) else {
                if !out.is_empty() {
                    // A CNAME into a missing in-zone name: the alias alone.
                    return Answer::Records(out);
                }
                return if self.names.contains(&current) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                };
            };
            let cname = set.iter().find_map(|d| match d {
                RecordData::Cname(t) => Some(t.clone()),
                _ => None,
            });
            match (cname, qtype) {
                (Some(target), q) if q != QueryType::Cname && q != QueryType::Any => {
                    out.push(Record {
                        name: current.clone(),
                        data: RecordData::Cname(target.clone()),
                    });
                    if !self.contains(&target) {
                        return Answer::Records(out);
                    }
                    current = target;
                }
                _ => {
                    out.extend(
                        set.into_iter()
                            .filter(|d| qtype == QueryType::Any || d.kind() == qtype)
                            .map(|data| Record {
                                name: current.clone(),
                                data,
                            }),
                    );
                    return if out.is_empty() {
                        Answer::NoData
                    } else {
                        Answer::Records(out)
                    };
                }
            }
        }
        Answer::Records(out)
    }

    /// The records at a name: stored ones, or a pod name `a-b-c-d.<ns>.pod.<domain>`
    /// (answered from the name itself, as CoreDNS's `pods insecure` does).
    fn records_at(&self, name: &str) -> Option<BTreeSet<RecordData>> {
        if let Some(set) = self.records.get(name) {
            return Some(set.clone());
        }
        pod_address(name, &self.domain).map(|ip| BTreeSet::from([RecordData::addr(ip)]))
    }
}

/// The address in a pod name `1-2-3-4.<ns>.pod.<domain>` (IPv6: `fd00--1.<ns>.pod...`).
fn pod_address(name: &str, domain: &str) -> Option<IpAddr> {
    let head = name.strip_suffix(domain)?.strip_suffix(".pod.")?;
    let (label, ns) = head.split_once('.')?;
    if ns.is_empty() || ns.contains('.') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let mut z = Zone::new("cluster.local");
        assert!(z.insert(
            "web.default.svc.cluster.local",
            RecordData::A("10.96.0.20".parse().unwrap())
        ));
        assert!(z.insert(
            "db.prod.svc.cluster.local",
            RecordData::Cname("db.example.com".into())
        ));
        assert!(z.insert(
            "alias.prod.svc.cluster.local",
            RecordData::Cname("web.default.svc.cluster.local".into())
        ));
        z
    }

    #[test]
    fn names_are_case_insensitive_with_or_without_trailing_dot() {
        let z = zone();
        let want = Answer::Records(vec![Record {
            name: "web.default.svc.cluster.local".into(),
            data: RecordData::A("10.96.0.20".parse().unwrap()),
        }]);
        for name in [
            "web.default.svc.cluster.local",
            "web.default.svc.cluster.local.",
            "WEB.Default.SVC.Cluster.Local.",
        ] {
            assert_eq!(z.lookup(name, QueryType::A), want, "{name}");
        }
    }

    #[test]
    fn missing_names_are_nxdomain_and_parents_are_nodata() {
        let z = zone();
        assert_eq!(
            z.lookup("nope.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.lookup("default.svc.cluster.local", QueryType::A),
            Answer::NoData
        );
        assert_eq!(z.lookup("cluster.local.", QueryType::A), Answer::NoData);
        assert_eq!(
            z.lookup("web.default.svc.cluster.local", QueryType::Aaaa),
            Answer::NoData
        );
        assert_eq!(
            z.lookup("web.default.svc.cluster.local", QueryType::Other),
            Answer::NoData
        );
    }

    #[test]
    fn names_outside_the_zone_are_not_in_zone() {
        let z = zone();
        for name in [
            "example.com.",
            "local",
            "xcluster.local",
            "cluster.local.evil",
        ] {
            assert_eq!(z.lookup(name, QueryType::A), Answer::NotInZone, "{name}");
        }
        let mut z2 = z.clone();
        assert!(!z2.insert("example.com", RecordData::A(Ipv4Addr::LOCALHOST)));
        assert_eq!(z2, z);
    }

    #[test]
    fn a_cname_answers_a_queries_and_is_followed_inside_the_zone() {
        let z = zone();
        assert_eq!(
            z.lookup("db.prod.svc.cluster.local", QueryType::A),
            Answer::Records(vec![Record {
                name: "db.prod.svc.cluster.local".into(),
                data: RecordData::Cname("db.example.com".into()),
            }])
        );
        assert_eq!(
            z.lookup("alias.prod.svc.cluster.local", QueryType::A),
            Answer::Records(vec![
                Record {
                    name: "alias.prod.svc.cluster.local".into(),
                    data: RecordData::Cname("web.default.svc.cluster.local".into()),
                },
                Record {
                    name: "web.default.svc.cluster.local".into(),
                    data: RecordData::A("10.96.0.20".parse().unwrap()),
                },
            ])
        );
    }

    #[test]
    fn cname_loops_stop() {
        let mut z = Zone::new("cluster.local");
        z.insert(
            "a.cluster.local",
            RecordData::Cname("b.cluster.local".into()),
        );
        z.insert(
            "b.cluster.local",
            RecordData::Cname("a.cluster.local".into()),
        );
        match z.lookup("a.cluster.local", QueryType::A) {
            Answer::Records(r) => assert_eq!(r.len(), 8),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pod_names_answer_their_address() {
        let z = zone();
        assert_eq!(
            z.lookup("10-244-1-5.default.pod.cluster.local", QueryType::A),
            Answer::Records(vec![Record {
                name: "10-244-1-5.default.pod.cluster.local".into(),
                data: RecordData::A("10.244.1.5".parse().unwrap()),
            }])
        );
        assert_eq!(
            z.lookup("10-244-1-500.default.pod.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.lookup("10-244-1-5.pod.cluster.local", QueryType::A),
            Answer::NxDomain
        );
    }
}
