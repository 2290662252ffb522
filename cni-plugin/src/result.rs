//! The ADD result, held once in the current (1.x) shape and written in the shape of the
//! version the config declares; previous results of any supported version read back.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::cidr::Cidr;
use crate::error::{CniError, CniResult, code};

/// Versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest one.
pub const LATEST: &str = "1.1.0";

/// Checks that `v` is one of [`SUPPORTED_VERSIONS`] (code 1 otherwise).
pub fn check_version(v: &str) -> CniResult<()> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported cniVersion {v:?}"),
        )
        .details(format!(
            "skein-cni supports {}",
            SUPPORTED_VERSIONS.join(", ")
        )))
    }
}

/// True when version `v` is at least `min` (both supported versions).
pub fn at_least(v: &str, min: &str) -> bool {
    let pos = |x: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == x);
    matches!((pos(v), pos(min)), (Some(a), Some(b)) if a >= b)
}

/// An interface in the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// Hardware address.
    pub mac: String,
    /// MTU (written from 1.1.0 on).
    pub mtu: Option<u32>,
    /// The netns path, for interfaces inside the sandbox.
    pub sandbox: Option<String>,
}

/// An address in the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: Cidr,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A route in the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Destination.
    pub dst: Cidr,
    /// Next hop (the family's gateway when absent).
    pub gw: Option<IpAddr>,
}

/// A whole result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniOutput {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<RouteConfig>,
    /// DNS settings, passed through as given in the config.
    pub dns: Value,
}

impl CniOutput {
    /// The result JSON for `version`: 0.3.x/0.4.0 add `"version"` to each address, 1.1.0
    /// adds interface MTUs.
    pub fn to_json(&self, version: &str) -> Value {
        let legacy = !at_least(version, "1.0.0");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({ "name": i.name, "mac": i.mac });
                if let (Some(mtu), true) = (i.mtu, at_least(version, "1.1.0")) {
                    v["mtu"] = json!(mtu);
                }
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({ "address": ip.address.to_string() });
                if legacy {
                    v["version"] = json!(if ip.address.ip.is_ipv4() { "4" } else { "6" });
                }
                if let Some(gw) = ip.gateway {
                    v["gateway"] = json!(gw.to_string());
                }
                if let Some(i) = ip.interface {
                    v["interface"] = json!(i);
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({ "dst": r.dst.to_string() });
                if let Some(gw) = r.gw {
                    v["gw"] = json!(gw.to_string());
                }
                v
            })
            .collect();
        let mut out = json!({ "cniVersion": version });
        if !interfaces.is_empty() {
            out["interfaces"] = json!(interfaces);
        }
        if !ips.is_empty() {
            out["ips"] = json!(ips);
        }
        if !routes.is_empty() {
            out["routes"] = json!(routes);
        }
        out["dns"] = if self.dns.is_object() {
            self.dns.clone()
        } else {
            json!({})
        };
        out
    }

    /// Reads a result of any supported version (a `prevResult`, or a delegated IPAM
    /// plugin's output).
    pub fn from_json(v: &Value) -> CniResult<CniOutput> {
        let bad = |what: String| CniError::new(code::DECODE, format!("decode result: {what}"));
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut out = CniOutput {
            dns: v.get("dns").cloned().unwrap_or(Value::Null),
            ..Default::default()
        };
        for i in v
            .get("interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.interfaces.push(Interface {
                name: s(i, "name").ok_or_else(|| bad("interface without name".into()))?,
                mac: s(i, "mac").unwrap_or_default(),
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: s(i, "sandbox").filter(|x| !x.is_empty()),
            });
        }
        for ip in v.get("ips").and_then(Value::as_array).into_iter().flatten() {
            let addr = s(ip, "address").ok_or_else(|| bad("ip without address".into()))?;
            let gateway = match s(ip, "gateway") {
                Some(g) => Some(g.parse().map_err(|_| bad(format!("gateway {g:?}")))?),
                None => None,
            };
            out.ips.push(IpConfig {
                address: addr.parse().map_err(|_| bad(format!("address {addr:?}")))?,
                gateway,
                interface: ip
                    .get("interface")
                    .and_then(Value::as_u64)
                    .map(|i| i as usize),
            });
        }
        for r in v
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let dst = s(r, "dst").ok_or_else(|| bad("route without dst".into()))?;
            let gw = match s(r, "gw") {
                Some(g) => Some(g.parse().map_err(|_| bad(format!("route gw {g:?}")))?),
                None => None,
            };
            out.routes.push(RouteConfig {
                dst: dst.parse().map_err(|_| bad(format!("route dst {dst:?}")))?,
                gw,
            });
        }
        Ok(out)
    }
}

/// The VERSION answer.
pub fn version_json(requested: Option<&str>) -> Value {
    let v = requested
        .filter(|r| SUPPORTED_VERSIONS.contains(r))
        .unwrap_or(LATEST);
    json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniOutput {
        CniOutput {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    mtu: Some(1450),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:02".into(),
                    mtu: Some(1450),
                    sandbox: Some("/run/netns/p".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.2/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![RouteConfig {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
            dns: Value::Null,
        }
    }

    #[test]
    fn legacy_versions_carry_ip_version_and_no_mtu() {
        let v = sample().to_json("0.3.1");
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v["dns"], json!({}));
    }

    #[test]
    fn current_versions_have_no_ip_version() {
        let v = sample().to_json("1.0.0");
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][0].get("mtu").is_none());
        let v = sample().to_json("1.1.0");
        assert_eq!(v["interfaces"][0]["mtu"], 1450);
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["routes"][0]["gw"], "10.1.0.1");
    }

    #[test]
    fn round_trips_every_version() {
        for ver in SUPPORTED_VERSIONS {
            let back = CniOutput::from_json(&sample().to_json(ver)).unwrap();
            assert_eq!(back.ips, sample().ips);
            assert_eq!(back.routes, sample().routes);
        }
    }

    #[test]
    fn versions() {
        assert!(check_version("0.4.0").is_ok());
        assert_eq!(check_version("0.2.0").unwrap_err().code, 1);
        assert_eq!(check_version("9.9.9").unwrap_err().code, 1);
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert_eq!(version_json(Some("0.4.0"))["cniVersion"], "0.4.0");
        assert_eq!(
            version_json(None)["supportedVersions"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
}
