//! Address ranges and the allocation walk, as host-local does them: a range set is a
//! list of ranges of one family; the walk starts after the last reserved address and
//! goes round-robin through every range, skipping gateways and taken addresses.

use std::net::IpAddr;

use crate::cidr::{self, Cidr};
use crate::error::{CniError, CniResult};

/// One range as written in the config (`ipam.ranges[i][j]`, or the `ipam.subnet` form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSpec {
    /// `subnet`.
    pub subnet: String,
    /// `rangeStart`.
    pub range_start: Option<String>,
    /// `rangeEnd`.
    pub range_end: Option<String>,
    /// `gateway`.
    pub gateway: Option<String>,
}

/// A checked range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The network (host bits clear).
    pub subnet: Cidr,
    /// First address handed out.
    pub start: IpAddr,
    /// Last address handed out.
    pub end: IpAddr,
    /// The gateway (never handed out).
    pub gateway: IpAddr,
}

impl Range {
    /// True when `ip` is between start and end.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && cidr::to_u128(ip) >= cidr::to_u128(self.start)
            && cidr::to_u128(ip) <= cidr::to_u128(self.end)
    }
}

/// Checks a range and fills in host-local's defaults: start = network + 1, end = the
/// last address (IPv4: the one before broadcast), gateway = network + 1.
pub fn canonicalize(spec: &RangeSpec) -> CniResult<Range> {
    let subnet: Cidr = spec
        .subnet
        .parse()
        .map_err(|_| CniError::config(format!("invalid subnet {:?}: not a CIDR", spec.subnet)))?;
    if subnet.ip != subnet.network() {
        return Err(CniError::config(format!(
            "invalid subnet {subnet}: host bits are set (the network is {})",
            subnet.masked()
        )));
    }
    if subnet.prefix + 2 > subnet.bits() {
        return Err(CniError::config(format!(
            "invalid subnet {subnet}: too small to allocate from"
        )));
    }
    let v4 = subnet.ip.is_ipv4();
    let addr = |field: &str, v: &Option<String>| -> CniResult<Option<IpAddr>> {
        let Some(s) = v else { return Ok(None) };
        let ip: IpAddr = s
            .parse()
            .map_err(|_| CniError::config(format!("invalid {field} {s:?}: not an IP address")))?;
        if !subnet.contains(ip) {
            return Err(CniError::config(format!(
                "invalid {field} {ip}: outside the subnet {subnet}"
            )));
        }
        Ok(Some(ip))
    };
    let first = cidr::next(subnet.network());
    let last = if v4 {
        cidr::prev(subnet.last())
    } else {
        subnet.last()
    };
    let start = addr("rangeStart", &spec.range_start)?.unwrap_or(first);
    let end = addr("rangeEnd", &spec.range_end)?.unwrap_or(last);
    let gateway = addr("gateway", &spec.gateway)?.unwrap_or(first);
    if cidr::to_u128(start) > cidr::to_u128(end) {
        return Err(CniError::config(format!(
            "invalid range in {subnet}: rangeStart {start} is after rangeEnd {end}"
        )));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

/// Checks a range set: at least one range, one family, no overlaps.
pub fn canonicalize_set(specs: &[RangeSpec]) -> CniResult<Vec<Range>> {
    if specs.is_empty() {
        return Err(CniError::config("empty range set in ipam.ranges"));
    }
    let set: Vec<Range> = specs.iter().map(canonicalize).collect::<CniResult<_>>()?;
    for (i, a) in set.iter().enumerate() {
        if a.subnet.ip.is_ipv4() != set[0].subnet.ip.is_ipv4() {
            return Err(CniError::config(format!(
                "range set mixes address families: {} and {}",
                set[0].subnet, a.subnet
            )));
        }
        for b in &set[i + 1..] {
            if a.contains(b.start) || a.contains(b.end) || b.contains(a.start) {
                return Err(CniError::config(format!(
                    "ranges {}-{} and {}-{} overlap",
                    a.start, a.end, b.start, b.end
                )));
            }
        }
    }
    Ok(set)
}

/// Walks the set as host-local does and returns the first address (with its range) that
/// `taken` says is free, or `None` when every address is taken.
pub fn pick(
    set: &[Range],
    last_reserved: Option<IpAddr>,
    mut taken: impl FnMut(IpAddr) -> bool,
) -> Option<(IpAddr, &Range)> {
    let (mut idx, mut cur) =
        match last_reserved.and_then(|ip| set.iter().position(|r| r.contains(ip))) {
            Some(i) => (i, last_reserved),
            None => (0, None),
        };
    let mut first: Option<IpAddr> = None;
    loop {
        let next = match cur {
            None => set[idx].start,
            Some(c) if c == set[idx].end => {
                idx = (idx + 1) % set.len();
                set[idx].start
            }
            Some(c) => cidr::next(c),
        };
        match first {
            None => first = Some(next),
            Some(f) if f == next => return None,
            Some(_) => {}
        }
        cur = Some(next);
        let r = &set[idx];
        if next != r.gateway && !taken(next) {
            return Some((next, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_like_host_local() {
        let r = canonicalize(&spec("10.1.0.0/24")).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.0.1"), ip("10.1.0.254"), ip("10.1.0.1"))
        );
        let r6 = canonicalize(&spec("fd00::/120")).unwrap();
        assert_eq!(r6.end, ip("fd00::ff"));
    }

    #[test]
    fn bad_ranges_name_the_problem() {
        let e = canonicalize(&spec("10.1.0.0/33")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("10.1.0.0/33"));
        assert!(
            canonicalize(&spec("10.1.0.5/24"))
                .unwrap_err()
                .msg
                .contains("host bits")
        );
        assert!(
            canonicalize(&spec("10.1.0.0/31"))
                .unwrap_err()
                .msg
                .contains("too small")
        );
        let gw = RangeSpec {
            gateway: Some("10.2.0.1".into()),
            ..spec("10.1.0.0/24")
        };
        assert!(
            canonicalize(&gw)
                .unwrap_err()
                .msg
                .contains("gateway 10.2.0.1: outside")
        );
        let rev = RangeSpec {
            range_start: Some("10.1.0.9".into()),
            range_end: Some("10.1.0.3".into()),
            ..spec("10.1.0.0/24")
        };
        assert!(
            canonicalize(&rev)
                .unwrap_err()
                .msg
                .contains("after rangeEnd")
        );
        assert!(
            canonicalize_set(&[spec("10.1.0.0/24"), spec("10.1.0.0/25")])
                .unwrap_err()
                .msg
                .contains("overlap")
        );
        assert!(
            canonicalize_set(&[spec("10.1.0.0/24"), spec("fd00::/64")])
                .unwrap_err()
                .msg
                .contains("families")
        );
    }

    #[test]
    fn walk_starts_after_last_reserved_and_wraps() {
        let set = vec![
            canonicalize(&RangeSpec {
                range_end: Some("10.1.0.5".into()),
                ..spec("10.1.0.0/24")
            })
            .unwrap(),
        ];
        // Fresh: .1 is the gateway, so .2.
        assert_eq!(pick(&set, None, |_| false).unwrap().0, ip("10.1.0.2"));
        // After .3 was reserved: .4, even though .2 is free (round robin).
        assert_eq!(
            pick(&set, Some(ip("10.1.0.3")), |_| false).unwrap().0,
            ip("10.1.0.4")
        );
        // After .5 (the end): wrap to the start, skipping the gateway.
        assert_eq!(
            pick(&set, Some(ip("10.1.0.5")), |_| false).unwrap().0,
            ip("10.1.0.2")
        );
        // Everything taken but the last reserved one: that one comes last.
        assert_eq!(
            pick(&set, Some(ip("10.1.0.4")), |i| i != ip("10.1.0.4"))
                .unwrap()
                .0,
            ip("10.1.0.4")
        );
        // Exhausted.
        assert!(pick(&set, Some(ip("10.1.0.4")), |_| true).is_none());
        assert!(pick(&set, None, |_| true).is_none());
    }

    #[test]
    fn walk_crosses_ranges() {
        let a = canonicalize(&RangeSpec {
            range_end: Some("10.1.0.3".into()),
            ..spec("10.1.0.0/24")
        })
        .unwrap();
        let b = canonicalize(&spec("10.9.0.0/30")).unwrap();
        let set = vec![a, b];
        let (got, r) = pick(&set, Some(ip("10.1.0.3")), |_| false).unwrap();
        // 10.9.0.1 is b's gateway, and /30's end is .2.
        assert_eq!(got, ip("10.9.0.2"));
        assert_eq!(r.subnet.to_string(), "10.9.0.0/30");
    }
}
