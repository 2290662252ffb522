//! IP prefixes (`10.244.1.0/24`, `10.244.1.7/24`, `fd00::/64`) and address arithmetic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length; the address may have host bits set
/// (`10.1.0.5/24` is an interface address in that network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Width of the address family in bits.
    pub fn bits(&self) -> u8 {
        bits(self.ip)
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        from_u128(to_u128(self.ip) & self.mask(), self.ip.is_ipv4())
    }

    /// The prefix with host bits cleared.
    pub fn masked(&self) -> Cidr {
        Cidr {
            ip: self.network(),
            prefix: self.prefix,
        }
    }

    /// The last address of the network (IPv4: the broadcast address).
    pub fn last(&self) -> IpAddr {
        from_u128(
            to_u128(self.ip) | (!self.mask() & family_max(self.ip)),
            self.ip.is_ipv4(),
        )
    }

    /// True when `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.ip.is_ipv4() && to_u128(ip) & self.mask() == to_u128(self.network())
    }

    /// True when the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    fn mask(&self) -> u128 {
        let host_bits = u32::from(self.bits() - self.prefix);
        let host_mask = match host_bits {
            0 => 0,
            128 => u128::MAX,
            n => (1u128 << n) - 1,
        };
        family_max(self.ip) & !host_mask
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// Why a string is not a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > bits(ip) {
            return Err(bad());
        }
        Ok(Cidr { ip, prefix })
    }
}

/// Width of `ip`'s family in bits.
pub fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn family_max(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

/// The address as an integer.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The integer as an address of the given family (truncated to 32 bits for IPv4).
pub fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// The address after `ip` (wrapping within its family).
pub fn next(ip: IpAddr) -> IpAddr {
    from_u128(to_u128(ip).wrapping_add(1) & family_max(ip), ip.is_ipv4())
}

/// The address before `ip` (wrapping within its family).
pub fn prev(ip: IpAddr) -> IpAddr {
    from_u128(to_u128(ip).wrapping_sub(1) & family_max(ip), ip.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(c("10.1.2.3/24").to_string(), "10.1.2.3/24");
        assert_eq!(c("fd00::5/64").to_string(), "fd00::5/64");
        for bad in [
            "10.1.2.3",
            "10.1.2.3/33",
            "10.1.2/24",
            "x/8",
            "10.0.0.0/-1",
            "::/129",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn network_last_contains() {
        let n = c("10.1.2.3/24");
        assert_eq!(n.network().to_string(), "10.1.2.0");
        assert_eq!(n.last().to_string(), "10.1.2.255");
        assert!(n.contains("10.1.2.200".parse().unwrap()));
        assert!(!n.contains("10.1.3.0".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let z = c("0.0.0.0/0");
        assert!(z.contains("203.0.113.9".parse().unwrap()));
        assert_eq!(z.last().to_string(), "255.255.255.255");
        let h = c("10.9.9.9/32");
        assert_eq!(h.network().to_string(), "10.9.9.9");
        let v6 = c("fd00:1::7/64");
        assert_eq!(v6.network().to_string(), "fd00:1::");
        assert_eq!(v6.last().to_string(), "fd00:1::ffff:ffff:ffff:ffff");
        assert!(c("10.0.0.0/8").overlaps(&c("10.3.0.0/16")));
        assert!(!c("10.0.0.0/16").overlaps(&c("10.1.0.0/16")));
    }

    #[test]
    fn next_and_prev() {
        assert_eq!(next("10.0.0.255".parse().unwrap()).to_string(), "10.0.1.0");
        assert_eq!(prev("10.0.1.0".parse().unwrap()).to_string(), "10.0.0.255");
        assert_eq!(
            next("255.255.255.255".parse().unwrap()).to_string(),
            "0.0.0.0"
        );
    }
}
