//! The network config at `<prefix>/config`, parsed and checked the way flannel does.
//!
//! ```json
//! {"Network": "10.244.0.0/16", "SubnetLen": 24, "SubnetMin": "10.244.1.0",
//!  "SubnetMax": "10.244.255.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472,
//!  "DirectRouting": false, "MTU": 0}}
//! ```
//!
//! Like Go's `encoding/json`, field names match case-insensitively.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value};

use crate::Error;

/// flannel's default VXLAN UDP port (the Linux kernel's legacy port).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// Which backend carries traffic to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A kernel VXLAN device `flannel.<vni>`.
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
        /// UDP port.
        port: u16,
        /// Use a plain route when the remote node is on the same L2 subnet.
        direct_routing: bool,
        /// Device MTU; `None` means uplink MTU − 50.
        mtu: Option<u32>,
    },
    /// A route to each remote subnet via the remote node's public IP.
    HostGw,
}

impl Backend {
    /// The `BackendType` string of a lease.
    pub fn type_name(&self) -> &'static str {
        match self {
            Backend::Vxlan { .. } => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// A checked network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The cluster network.
    pub network: Ipv4Network,
    /// Prefix length of each node's subnet.
    pub subnet_len: u8,
    /// The lowest subnet (network address) that may be leased.
    pub subnet_min: Ipv4Addr,
    /// The highest subnet (network address) that may be leased.
    pub subnet_max: Ipv4Addr,
    /// The backend.
    pub backend: Backend,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// Lower-cases the keys of a JSON object (Go's case-insensitive field match).
fn fold_keys(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn opt_u64(map: &Map<String, Value>, key: &str, label: &str) -> Result<Option<u64>, Error> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{label} must be a non-negative integer, got {v}"))),
    }
}

fn opt_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    label: &str,
) -> Result<Option<&'a str>, Error> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(v) => Err(invalid(format!("{label} must be a string, got {v}"))),
    }
}

fn opt_ip(map: &Map<String, Value>, key: &str, label: &str) -> Result<Option<Ipv4Addr>, Error> {
    opt_str(map, key, label)?
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| invalid(format!("{label} {s:?} is not an IPv4 address")))
        })
        .transpose()
}

impl NetworkConfig {
    /// Parses and checks the JSON text of `<prefix>/config`.
    pub fn parse(text: &str) -> Result<NetworkConfig, Error> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("config is not valid JSON: {e}")))?;
        let Value::Object(top) = value else {
            return Err(invalid("config must be a JSON object"));
        };
        let top = fold_keys(&top);

        if top.get("enableipv6").and_then(Value::as_bool) == Some(true) {
            return Err(invalid("EnableIPv6 is not supported by this flanneld"));
        }
        let network_text =
            opt_str(&top, "network", "Network")?.ok_or_else(|| invalid("Network is missing"))?;
        let network: Ipv4Network = network_text
            .contains('/')
            .then(|| network_text.parse().ok())
            .flatten()
            .ok_or_else(|| invalid(format!("Network {network_text:?} is not an IPv4 CIDR")))?;
        if network.prefix() > 28 {
            return Err(invalid(format!(
                "Network {network} is too small (prefix length must be at most 28)"
            )));
        }
        let network = Ipv4Network::new(network.network(), network.prefix())
            .map_err(|e| invalid(format!("Network {network}: {e}")))?;

        let subnet_len = match opt_u64(&top, "subnetlen", "SubnetLen")? {
            None | Some(0) if network.prefix() < 24 => 24,
            None | Some(0) => network.prefix() + 1,
            Some(n) => {
                u8::try_from(n).map_err(|_| invalid(format!("SubnetLen {n} is out of range")))?
            }
        };
        if subnet_len <= network.prefix() {
            return Err(invalid(format!(
                "SubnetLen {subnet_len} must be longer than the Network prefix /{}",
                network.prefix()
            )));
        }
        if subnet_len > 30 {
            return Err(invalid(format!(
                "SubnetLen {subnet_len} leaves no room for pods (at most 30)"
            )));
        }
        let step = 1u32 << (32 - subnet_len);
        let base = u32::from(network.network());
        let last = base + (1u32 << (32 - network.prefix())) - step;
        let subnet_min =
            opt_ip(&top, "subnetmin", "SubnetMin")?.unwrap_or_else(|| Ipv4Addr::from(base + step));
        let subnet_max = opt_ip(&top, "subnetmax", "SubnetMax")?.unwrap_or(Ipv4Addr::from(last));
        for (label, ip) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if !network.contains(ip) {
                return Err(invalid(format!(
                    "{label} {ip} is not inside Network {network}"
                )));
            }
            if (u32::from(ip) - base) % step != 0 {
                return Err(invalid(format!(
                    "{label} {ip} is not on a /{subnet_len} boundary"
                )));
            }
        }
        if u32::from(subnet_min) > u32::from(subnet_max) {
            return Err(invalid(format!(
                "SubnetMin {subnet_min} is above SubnetMax {subnet_max}"
            )));
        }

        let backend = match top.get("backend") {
            None | Some(Value::Null) => Backend::Vxlan {
                vni: 1,
                port: DEFAULT_VXLAN_PORT,
                direct_routing: false,
                mtu: None,
            },
            Some(Value::Object(b)) => parse_backend(&fold_keys(b))?,
            Some(v) => return Err(invalid(format!("Backend must be an object, got {v}"))),
        };
        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend,
        })
    }

    /// Every subnet that may be leased, lowest first.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        let step = 1u32 << (32 - self.subnet_len);
        let (lo, hi) = (u32::from(self.subnet_min), u32::from(self.subnet_max));
        (0..=((hi - lo) / step)).filter_map(move |i| {
            Ipv4Network::new(Ipv4Addr::from(lo + i * step), self.subnet_len).ok()
        })
    }

    /// Whether `subnet` is one this config may lease.
    pub fn allows(&self, subnet: &Ipv4Network) -> bool {
        subnet.prefix() == self.subnet_len
            && subnet.ip() == subnet.network()
            && u32::from(subnet.ip()) >= u32::from(self.subnet_min)
            && u32::from(subnet.ip()) <= u32::from(self.subnet_max)
    }
}

fn parse_backend(b: &Map<String, Value>) -> Result<Backend, Error> {
    let kind = opt_str(b, "type", "Backend.Type")?.unwrap_or("vxlan");
    match kind {
        "vxlan" => {
            let vni = opt_u64(b, "vni", "Backend.VNI")?.unwrap_or(1);
            if vni == 0 || vni > 0xff_ffff {
                return Err(invalid(format!(
                    "Backend.VNI {vni} is out of range (1 to 16777215)"
                )));
            }
            let port = match opt_u64(b, "port", "Backend.Port")? {
                None | Some(0) => DEFAULT_VXLAN_PORT,
                Some(p) => u16::try_from(p)
                    .map_err(|_| invalid(format!("Backend.Port {p} is out of range")))?,
            };
            let direct_routing = match b.get("directrouting") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(v)) => *v,
                Some(v) => {
                    return Err(invalid(format!(
                        "Backend.DirectRouting must be true or false, got {v}"
                    )));
                }
            };
            let mtu = match opt_u64(b, "mtu", "Backend.MTU")? {
                None | Some(0) => None,
                Some(m) if (68..=65535).contains(&m) => Some(m as u32),
                Some(m) => {
                    return Err(invalid(format!(
                        "Backend.MTU {m} is out of range (68 to 65535)"
                    )));
                }
            };
            Ok(Backend::Vxlan {
                vni: vni as u32,
                port,
                direct_routing,
                mtu,
            })
        }
        "host-gw" => Ok(Backend::HostGw),
        other => Err(invalid(format!(
            "Backend.Type {other:?} is not supported (use \"vxlan\" or \"host-gw\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_flannel() {
        let c = NetworkConfig::parse(r#"{"Network": "10.244.0.0/16"}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!(
            c.backend,
            Backend::Vxlan {
                vni: 1,
                port: 8472,
                direct_routing: false,
                mtu: None
            }
        );
        assert_eq!(c.subnets().count(), 255);
    }

    #[test]
    fn small_network_gets_prefix_plus_one() {
        let c = NetworkConfig::parse(r#"{"Network": "10.1.0.0/25"}"#).unwrap();
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 1, 0, 64));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 1, 0, 64));
    }

    #[test]
    fn keys_match_case_insensitively_and_backend_is_read() {
        let c = NetworkConfig::parse(
            r#"{"network":"10.5.0.0/16","subnetlen":26,"SubnetMin":"10.5.1.0","SubnetMax":"10.5.2.192",
                "backend":{"type":"vxlan","vni":42,"Port":4789,"DirectRouting":true,"MTU":1400}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.subnets().count(), 8);
        assert_eq!(
            c.backend,
            Backend::Vxlan {
                vni: 42,
                port: 4789,
                direct_routing: true,
                mtu: Some(1400)
            }
        );
        let h = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#)
            .unwrap();
        assert_eq!(h.backend, Backend::HostGw);
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            ("not json", "not valid JSON"),
            (r#"{"SubnetLen": 24}"#, "Network is missing"),
            (r#"{"Network": "10.244.0.0"}"#, "not an IPv4 CIDR"),
            (
                r#"{"Network": "10.244.0.0/16", "SubnetLen": 16}"#,
                "must be longer",
            ),
            (
                r#"{"Network": "10.244.0.0/16", "SubnetLen": 31}"#,
                "no room",
            ),
            (
                r#"{"Network": "10.244.0.0/16", "SubnetMin": "10.245.0.0"}"#,
                "not inside Network",
            ),
            (
                r#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.5"}"#,
                "boundary",
            ),
            (
                r#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.0", "SubnetMax": "10.244.3.0"}"#,
                "above SubnetMax",
            ),
            (
                r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}"#,
                "not supported",
            ),
            (
                r#"{"Network": "10.244.0.0/16", "Backend": {"VNI": 0}}"#,
                "VNI 0",
            ),
            (r#"{"Network": 7}"#, "must be a string"),
        ];
        for (text, want) in cases {
            let err = NetworkConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn allows_only_aligned_subnets_in_range() {
        let c = NetworkConfig::parse(
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}"#,
        )
        .unwrap();
        let n = |s: &str| s.parse::<Ipv4Network>().unwrap();
        assert!(c.allows(&n("10.244.10.0/24")));
        assert!(c.allows(&n("10.244.20.0/24")));
        assert!(!c.allows(&n("10.244.9.0/24")));
        assert!(!c.allows(&n("10.244.21.0/24")));
        assert!(!c.allows(&n("10.244.10.0/25")));
    }
}
