//! Subnet leases as flannel stores them in etcd.
//!
//! Key `<prefix>/subnets/10.244.3.0-24`, value (Go's `subnet.LeaseAttrs`, field order
//! and casing as flannel writes them):
//!
//! ```json
//! {"PublicIP":"198.51.100.11","PublicIPv6":null,"BackendType":"vxlan",
//!  "BackendData":{"VNI":1,"VtepMAC":"0a:58:c6:33:64:0b"}}
//! ```
//!
//! A key attached to an etcd lease expires with it; a key without one is a reservation
//! an operator made, and is honoured for ever.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The value of a subnet key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    /// The node's address on the underlay.
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// Always written (as `null` when unset), as flannel does.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    /// `vxlan` or `host-gw`.
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    /// Backend-specific data (VXLAN: `{"VNI":1,"VtepMAC":"..."}`).
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<serde_json::Value>,
}

/// flannel's `vxlanLeaseAttrs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    /// VXLAN network identifier.
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// MAC address of the node's VTEP, `aa:bb:cc:dd:ee:ff`.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

impl LeaseAttrs {
    /// Attributes of a VXLAN node.
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, mac: [u8; 6]) -> LeaseAttrs {
        let data = VxlanData {
            vni,
            vtep_mac: format_mac(mac),
        };
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: serde_json::to_value(data).ok(),
        }
    }

    /// Attributes of a host-gw node.
    pub fn host_gw(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
        }
    }

    /// The JSON text stored in etcd.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stored value.
    pub fn from_json(text: &[u8]) -> Result<LeaseAttrs, Error> {
        serde_json::from_slice(text).map_err(|e| Error::Lease(format!("bad lease JSON: {e}")))
    }

    /// The VXLAN data, when the lease is a VXLAN one with valid data.
    pub fn vxlan_data(&self) -> Option<(u32, [u8; 6])> {
        if self.backend_type != "vxlan" {
            return None;
        }
        let data: VxlanData = serde_json::from_value(self.backend_data.clone()?).ok()?;
        Some((data.vni, parse_mac(&data.vtep_mac)?))
    }
}

/// One subnet key as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The leased subnet.
    pub subnet: Ipv4Network,
    /// Its value.
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to; 0 for a reservation.
    pub etcd_lease: i64,
}

impl LeaseRecord {
    /// Whether this is an operator's reservation (no TTL).
    pub fn is_reservation(&self) -> bool {
        self.etcd_lease == 0
    }
}

/// `<prefix>/subnets/` (the prefix without a trailing slash).
pub fn subnets_prefix(prefix: &str) -> String {
    format!("{}/subnets/", prefix.trim_end_matches('/'))
}

/// `<prefix>/config`.
pub fn config_key(prefix: &str) -> String {
    format!("{}/config", prefix.trim_end_matches('/'))
}

/// `<prefix>/subnets/10.244.3.0-24`.
pub fn subnet_key(prefix: &str, subnet: &Ipv4Network) -> String {
    format!(
        "{}{}-{}",
        subnets_prefix(prefix),
        subnet.ip(),
        subnet.prefix()
    )
}

/// The subnet of a key under `<prefix>/subnets/`, or `None` for a key of another form.
pub fn parse_subnet_key(prefix: &str, key: &str) -> Option<Ipv4Network> {
    let rest = key.strip_prefix(&subnets_prefix(prefix))?;
    let (ip, len) = rest.split_once('-')?;
    let net = Ipv4Network::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.ip()).then_some(net)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_json_is_flannels_byte_for_byte() {
        let a = LeaseAttrs::vxlan(
            Ipv4Addr::new(192, 168, 64, 3),
            1,
            [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44],
        );
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        );
        assert_eq!(
            a.vxlan_data(),
            Some((1, [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]))
        );
        assert_eq!(LeaseAttrs::from_json(a.to_json().as_bytes()).unwrap(), a);
    }

    #[test]
    fn host_gw_json_has_no_backend_data() {
        let a = LeaseAttrs::host_gw(Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"10.0.0.4","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(a.vxlan_data(), None);
    }

    #[test]
    fn reads_old_flannel_values_without_ipv6() {
        let a = LeaseAttrs::from_json(br#"{"PublicIP":"10.0.0.4"}"#).unwrap();
        assert_eq!(a.public_ip, Ipv4Addr::new(10, 0, 0, 4));
        assert!(LeaseAttrs::from_json(b"{}").is_err());
    }

    #[test]
    fn keys_round_trip() {
        let n: Ipv4Network = "10.244.3.0/24".parse().unwrap();
        let k = subnet_key("/coreos.com/network/", &n);
        assert_eq!(k, "/coreos.com/network/subnets/10.244.3.0-24");
        assert_eq!(parse_subnet_key("/coreos.com/network", &k), Some(n));
        assert_eq!(
            parse_subnet_key(
                "/coreos.com/network",
                "/coreos.com/network/subnets/10.244.3.7-24"
            ),
            None
        );
        assert_eq!(
            parse_subnet_key("/coreos.com/network", "/coreos.com/network/config"),
            None
        );
        assert_eq!(config_key("/x/"), "/x/config");
    }

    #[test]
    fn macs_parse_and_format() {
        assert_eq!(
            parse_mac("0a:58:c6:33:64:0b"),
            Some([10, 88, 198, 51, 100, 11])
        );
        assert_eq!(parse_mac("0a:58:c6:33:64"), None);
        assert_eq!(parse_mac("0a:58:c6:33:64:0b:00"), None);
        assert_eq!(format_mac([10, 88, 198, 51, 100, 11]), "0a:58:c6:33:64:0b");
    }
}
