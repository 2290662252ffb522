//! IPAM: built in (host-local compatible, on disk) or delegated to another IPAM plugin.

pub mod delegate;
pub mod range;
pub mod store;

use std::net::IpAddr;

use crate::cidr::Cidr;
use crate::error::{CniError, CniResult, code};
use range::Range;
use store::Store;

/// An address handed out, with its range's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Address with the range's prefix length.
    pub address: Cidr,
    /// The range's gateway.
    pub gateway: IpAddr,
}

/// Allocates one address from each range set for the container, under the store's lock.
/// Nothing stays reserved when any set fails.
pub fn allocate(
    store: &Store,
    sets: &[Vec<Range>],
    container_id: &str,
    ifname: &str,
) -> CniResult<Vec<Allocation>> {
    let held = store.get_by_id(container_id, ifname)?;
    let mut out: Vec<Allocation> = Vec::new();
    let result = (|| {
        for (i, set) in sets.iter().enumerate() {
            if let Some(ip) = held.iter().find(|ip| set.iter().any(|r| r.contains(**ip))) {
                return Err(CniError::new(
                    code::DUPLICATE,
                    format!(
                        "{ip} has been allocated to {container_id}/{ifname}, duplicate allocation is not allowed"
                    ),
                ));
            }
            let last = store.last_reserved(i);
            let mut failed = None;
            let picked = range::pick(set, last, |ip| {
                match store.reserve(ip, container_id, ifname, i) {
                    Ok(reserved) => !reserved,
                    Err(e) => {
                        failed = Some(e);
                        true
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let (ip, r) = picked.ok_or_else(|| {
                let ranges: Vec<String> = set
                    .iter()
                    .map(|r| format!("{}-{}", r.start, r.end))
                    .collect();
                CniError::new(
                    code::EXHAUSTED,
                    format!(
                        "no free address left in range set {i} ({})",
                        ranges.join(", ")
                    ),
                )
            })?;
            out.push(Allocation {
                address: Cidr {
                    ip,
                    prefix: r.subnet.prefix,
                },
                gateway: r.gateway,
            });
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            for a in &out {
                let _ = store.release(a.address.ip);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::range::{RangeSpec, canonicalize};
    use super::*;

    fn set(subnet: &str, end: Option<&str>) -> Vec<Range> {
        vec![
            canonicalize(&RangeSpec {
                subnet: subnet.into(),
                range_end: end.map(str::to_owned),
                ..Default::default()
            })
            .unwrap(),
        ]
    }

    #[test]
    fn allocates_round_robin_and_refuses_duplicates_and_exhaustion() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "n").unwrap();
        let sets = vec![
            set("10.5.0.0/24", Some("10.5.0.3")),
            set("fd00:5::/64", None),
        ];
        let a = allocate(&s, &sets, "c1", "eth0").unwrap();
        assert_eq!(a[0].address.to_string(), "10.5.0.2/24");
        assert_eq!(a[0].gateway.to_string(), "10.5.0.1");
        assert_eq!(a[1].address.to_string(), "fd00:5::2/64");
        let dup = allocate(&s, &sets, "c1", "eth0").unwrap_err();
        assert_eq!(dup.code, code::DUPLICATE);
        let b = allocate(&s, &sets, "c2", "eth0").unwrap();
        assert_eq!(b[0].address.to_string(), "10.5.0.3/24");
        // v4 range is full now: c3 gets nothing, and its v6 address is not kept either
        // (the v4 set is first, so nothing was reserved).
        let e = allocate(&s, &sets, "c3", "eth0").unwrap_err();
        assert_eq!(e.code, code::EXHAUSTED);
        assert!(s.get_by_id("c3", "eth0").unwrap().is_empty());
        // Free .2: the walk wraps to it.
        s.release_by_id("c1", "eth0").unwrap();
        let c = allocate(&s, &sets, "c3", "eth0").unwrap();
        assert_eq!(c[0].address.to_string(), "10.5.0.2/24");
    }

    #[test]
    fn failed_second_set_releases_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "n").unwrap();
        let sets = vec![set("10.6.0.0/24", None), set("10.7.0.0/30", None)];
        allocate(&s, &sets, "c1", "eth0").unwrap();
        let e = allocate(&s, &sets, "c2", "eth0").unwrap_err();
        assert_eq!(e.code, code::EXHAUSTED);
        assert!(s.get_by_id("c2", "eth0").unwrap().is_empty());
    }
}
