//! The network config on stdin: parsed, checked, and resolved into a [`Plan`] (what the
//! verbs do), with the node's pod subnet from flanneld's subnet file when the config
//! names no subnet.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::cidr::Cidr;
use crate::error::{CniError, CniResult, code};
use crate::ipam::range::{self, Range, RangeSpec};
use crate::ipam::store::DEFAULT_DATA_DIR;
use crate::result::{RouteConfig, check_version};
use crate::subnet_file::{self, SubnetEnv};

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The config as written (unknown keys are ignored, as the spec asks).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: Option<String>,
    /// `name`: the network's name (also the IPAM store's directory).
    pub name: Option<String>,
    /// `type`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `bridge`, default `cni0`.
    pub bridge: Option<String>,
    /// `isGateway`: give the bridge the gateway address (default true).
    pub is_gateway: Option<bool>,
    /// `isDefaultGateway`: default route in the pod via the gateway (default true).
    pub is_default_gateway: Option<bool>,
    /// `mtu`.
    pub mtu: Option<u32>,
    /// `hairpinMode`.
    pub hairpin_mode: Option<bool>,
    /// `ipMasq`.
    pub ip_masq: Option<bool>,
    /// `subnetFile`, default /run/flannel/subnet.env.
    pub subnet_file: Option<String>,
    /// `logFile`: append logs here instead of stderr.
    pub log_file: Option<String>,
    /// `ipam`.
    pub ipam: Option<IpamConf>,
    /// `dns`, passed into the result.
    pub dns: Option<Value>,
    /// `prevResult` (CHECK, DEL, chained ADD).
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC); libcni also sends it as `cni.dev/attachments`.
    #[serde(rename = "cni.dev/valid-attachments", alias = "cni.dev/attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// `ipam`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// `type`: `host-local` (or absent) is built in; anything else is delegated.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `subnet` (single-range form).
    pub subnet: Option<String>,
    /// `rangeStart`.
    pub range_start: Option<String>,
    /// `rangeEnd`.
    pub range_end: Option<String>,
    /// `gateway`.
    pub gateway: Option<String>,
    /// `ranges`: a list of range sets.
    pub ranges: Option<Vec<Vec<RangeConf>>>,
    /// `routes`.
    pub routes: Option<Vec<RouteConf>>,
    /// `dataDir`.
    pub data_dir: Option<String>,
}

/// One range in `ipam.ranges`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    /// `subnet`.
    pub subnet: String,
    /// `rangeStart`.
    pub range_start: Option<String>,
    /// `rangeEnd`.
    pub range_end: Option<String>,
    /// `gateway`.
    pub gateway: Option<String>,
}

/// One route in `ipam.routes`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RouteConf {
    /// `dst`.
    pub dst: String,
    /// `gw`.
    pub gw: Option<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `containerID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `ifname`.
    pub ifname: String,
}

/// Where addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamPlan {
    /// Built in: these range sets, stored under `data_dir/<name>`.
    BuiltIn {
        /// Range sets (one address from each).
        sets: Vec<Vec<Range>>,
        /// The data dir.
        data_dir: PathBuf,
    },
    /// Exec this IPAM plugin.
    Delegated {
        /// Its type (binary name).
        plugin: String,
    },
}

/// Everything the verbs need, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `cniVersion`.
    pub version: String,
    /// The network name.
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// Bridge gets the gateway addresses.
    pub is_gateway: bool,
    /// Pod gets default routes via the gateways.
    pub is_default_gateway: bool,
    /// Configured MTU (config, else subnet file); `None`: the default route's device.
    pub mtu: Option<u32>,
    /// Hairpin on the host veth.
    pub hairpin: bool,
    /// Masquerade pod traffic leaving `masq_exempt`.
    pub ip_masq: bool,
    /// Destinations not masqueraded (the pod subnets, the cluster networks).
    pub masq_exempt: Vec<Cidr>,
    /// IPAM.
    pub ipam: IpamPlan,
    /// Extra routes for the pod (besides default routes).
    pub routes: Vec<RouteConfig>,
    /// DNS for the result.
    pub dns: Value,
}

/// Parses stdin (code 6 when it is not JSON of the right shape).
pub fn parse(stdin: &[u8]) -> CniResult<NetConf> {
    let decode = |e: String| CniError::new(code::DECODE, format!("decode network config: {e}"));
    let value: Value = serde_json::from_slice(stdin).map_err(|e| decode(e.to_string()))?;
    serde_json::from_value(value.clone()).map_err(|e| {
        // Name the key whose value has the wrong shape.
        let culprit = value.as_object().and_then(|o| {
            o.iter().find_map(|(k, v)| {
                let one = serde_json::json!({ k: v });
                serde_json::from_value::<NetConf>(one)
                    .err()
                    .map(|_| k.clone())
            })
        });
        match culprit {
            Some(k) => decode(format!("key {k:?}: {e}")),
            None => decode(e.to_string()),
        }
    })
}

/// Checks version and name.
pub fn check_basics(conf: &NetConf) -> CniResult<(String, String)> {
    let version = conf
        .cni_version
        .clone()
        .ok_or_else(|| CniError::config("cniVersion is missing from the network config"))?;
    check_version(&version)?;
    let name = conf
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CniError::config("name is missing from the network config"))?;
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(CniError::config(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.' and '-'"
        )));
    }
    Ok((version, name))
}

/// How strictly to resolve: DEL and GC must work when the subnet file is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// ADD, CHECK, STATUS: everything must be usable.
    Full,
    /// DEL, GC: only names, the data dir and IPAM type are needed.
    Teardown,
}

/// Resolves the config into a plan, reading the subnet file when needed.
pub fn resolve(conf: &NetConf, need: Need) -> CniResult<Plan> {
    let (version, name) = check_basics(conf)?;
    let bridge = conf
        .bridge
        .clone()
        .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
    crate::env::validate_ifname(&bridge)
        .map_err(|_| CniError::config(format!("invalid bridge name {bridge:?}")))?;
    if let Some(m) = conf.mtu
        && !(68..=65535).contains(&m)
    {
        return Err(CniError::config(format!(
            "invalid mtu {m}: must be 68 to 65535"
        )));
    }
    let ipam = conf.ipam.clone().unwrap_or_default();
    let builtin = matches!(ipam.kind.as_deref(), None | Some("host-local"));
    let explicit = ipam.subnet.is_some() || ipam.ranges.is_some();

    let mut routes = Vec::new();
    for r in ipam.routes.iter().flatten() {
        let dst: Cidr = r
            .dst
            .parse()
            .map_err(|_| CniError::config(format!("invalid route dst {:?}: not a CIDR", r.dst)))?;
        let gw = match &r.gw {
            Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                CniError::config(format!("invalid route gw {g:?}: not an IP address"))
            })?),
            None => None,
        };
        routes.push(RouteConfig {
            dst: dst.masked(),
            gw,
        });
    }

    let mut mtu = conf.mtu;
    let mut ip_masq = conf.ip_masq.unwrap_or(false);
    let mut specs: Vec<Vec<RangeSpec>> = Vec::new();
    let mut masq_exempt = Vec::new();
    if builtin && explicit {
        if let Some(s) = &ipam.subnet {
            specs.push(vec![RangeSpec {
                subnet: s.clone(),
                range_start: ipam.range_start.clone(),
                range_end: ipam.range_end.clone(),
                gateway: ipam.gateway.clone(),
            }]);
        }
        for set in ipam.ranges.iter().flatten() {
            specs.push(
                set.iter()
                    .map(|r| RangeSpec {
                        subnet: r.subnet.clone(),
                        range_start: r.range_start.clone(),
                        range_end: r.range_end.clone(),
                        gateway: r.gateway.clone(),
                    })
                    .collect(),
            );
        }
    } else if builtin {
        let path = conf
            .subnet_file
            .clone()
            .unwrap_or_else(|| subnet_file::DEFAULT_PATH.to_owned());
        match (subnet_file::load(std::path::Path::new(&path)), need) {
            (Ok(env), _) => {
                apply_subnet_env(&env, &mut specs, &mut routes, &mut masq_exempt);
                mtu = mtu.or(env.mtu);
                // flannel's rule: masquerade here only when flanneld does not.
                ip_masq = conf.ip_masq.unwrap_or(!env.ipmasq);
            }
            (Err(e), Need::Full) => return Err(e),
            // Tearing down without the file: masquerade entries may exist, so try to
            // remove them (removing what is not there is harmless).
            (Err(_), Need::Teardown) => ip_masq = conf.ip_masq.unwrap_or(true),
        }
    }

    let ipam_plan = if builtin {
        let sets: Vec<Vec<Range>> = specs
            .iter()
            .map(|s| range::canonicalize_set(s))
            .collect::<CniResult<_>>()?;
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                if a[0].subnet.ip.is_ipv4() == b[0].subnet.ip.is_ipv4() {
                    // host-local allows it, but two addresses of one family on one
                    // interface from overlapping sets would be a misconfiguration.
                    if a.iter()
                        .any(|x| b.iter().any(|y| x.subnet.overlaps(&y.subnet)))
                    {
                        return Err(CniError::config("range sets overlap"));
                    }
                }
            }
        }
        for set in &sets {
            for r in set {
                if !masq_exempt.contains(&r.subnet) {
                    masq_exempt.push(r.subnet);
                }
            }
        }
        IpamPlan::BuiltIn {
            sets,
            data_dir: PathBuf::from(
                ipam.data_dir
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()),
            ),
        }
    } else {
        IpamPlan::Delegated {
            plugin: ipam.kind.clone().unwrap_or_default(),
        }
    };
    if need == Need::Full
        && let IpamPlan::BuiltIn { sets, .. } = &ipam_plan
        && sets.is_empty()
    {
        return Err(CniError::config("ipam has no subnet or ranges"));
    }
    let is_gateway = conf.is_gateway.unwrap_or(true);
    let is_default_gateway = conf.is_default_gateway.unwrap_or(is_gateway);
    Ok(Plan {
        version,
        name,
        bridge,
        // isDefaultGateway follows isGateway unless given, and implies it.
        is_gateway: is_gateway || is_default_gateway,
        is_default_gateway,
        mtu,
        hairpin: conf.hairpin_mode.unwrap_or(false),
        ip_masq,
        masq_exempt,
        ipam: ipam_plan,
        routes,
        dns: conf.dns.clone().unwrap_or(Value::Null),
    })
}

fn apply_subnet_env(
    env: &SubnetEnv,
    specs: &mut Vec<Vec<RangeSpec>>,
    routes: &mut Vec<RouteConfig>,
    exempt: &mut Vec<Cidr>,
) {
    for (subnet, network) in [
        (env.subnet, env.network),
        (env.ipv6_subnet, env.ipv6_network),
    ] {
        let Some(subnet) = subnet else { continue };
        specs.push(vec![RangeSpec {
            subnet: subnet.masked().to_string(),
            ..Default::default()
        }]);
        if let Some(net) = network {
            let net = net.masked();
            if !routes.iter().any(|r| r.dst == net) {
                routes.push(RouteConfig { dst: net, gw: None });
            }
            exempt.push(net);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> CniResult<Plan> {
        resolve(&parse(json.as_bytes())?, Need::Full)
    }

    #[test]
    fn explicit_subnet() {
        let p = plan(r#"{"cniVersion":"1.0.0","name":"n","type":"skein-cni","ipam":{"subnet":"10.1.0.0/24","routes":[{"dst":"10.9.0.0/16"}]}}"#).unwrap();
        assert_eq!(p.bridge, "cni0");
        assert!(p.is_gateway && p.is_default_gateway && !p.ip_masq);
        let IpamPlan::BuiltIn { sets, data_dir } = &p.ipam else {
            panic!()
        };
        assert_eq!(sets[0][0].gateway.to_string(), "10.1.0.1");
        assert_eq!(data_dir, &PathBuf::from("/var/lib/cni/networks"));
        assert_eq!(p.routes[0].dst.to_string(), "10.9.0.0/16");
    }

    #[test]
    fn subnet_from_flannel_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("subnet.env");
        std::fs::write(&f, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
        let p = plan(&format!(
            r#"{{"cniVersion":"0.3.1","name":"cbr0","type":"skein-cni","subnetFile":"{}"}}"#,
            f.display()
        ))
        .unwrap();
        assert_eq!(p.mtu, Some(1450));
        assert!(!p.ip_masq, "flanneld masquerades, so the plugin does not");
        let IpamPlan::BuiltIn { sets, .. } = &p.ipam else {
            panic!()
        };
        assert_eq!(sets[0][0].subnet.to_string(), "10.244.3.0/24");
        assert_eq!(
            p.routes,
            vec![RouteConfig {
                dst: "10.244.0.0/16".parse().unwrap(),
                gw: None
            }]
        );
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            (r#"{"cniVersion":"1.0.0","name":"n""#, 6, "decode"),
            (
                r#"{"cniVersion":"7.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24"}}"#,
                1,
                "7.0.0",
            ),
            (
                r#"{"name":"n","ipam":{"subnet":"10.1.0.0/24"}}"#,
                7,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","ipam":{"subnet":"10.1.0.0/24"}}"#,
                7,
                "name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/33"}}"#,
                7,
                "10.1.0.0/33",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}}"#,
                7,
                "gateway",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","rangeStart":"10.1.1.1"}}"#,
                7,
                "rangeStart",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":"big","ipam":{"subnet":"10.1.0.0/24"}}"#,
                6,
                "mtu",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","subnetFile":"/nonexistent/x.env"}"#,
                11,
                "/nonexistent/x.env",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b","ipam":{"subnet":"10.1.0.0/24"}}"#,
                7,
                "a/b",
            ),
        ];
        for (json, code, needle) in cases {
            let e = plan(json).unwrap_err();
            assert_eq!(e.code, code, "{json}: {e:?}");
            assert!(
                e.msg.contains(needle) || e.details.contains(needle),
                "{json}: {e:?}"
            );
        }
    }

    #[test]
    fn gateway_flags() {
        let base = r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24"}"#;
        let p = plan(&format!(r#"{base},"isGateway":false}}"#)).unwrap();
        assert!(!p.is_gateway && !p.is_default_gateway);
        let p = plan(&format!(
            r#"{base},"isGateway":false,"isDefaultGateway":true}}"#
        ))
        .unwrap();
        assert!(p.is_gateway && p.is_default_gateway);
        let p = plan(&format!(r#"{base},"isDefaultGateway":false}}"#)).unwrap();
        assert!(p.is_gateway && !p.is_default_gateway);
    }

    #[test]
    fn teardown_does_not_need_the_subnet_file() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"n","subnetFile":"/nonexistent/x.env"}"#)
            .unwrap();
        assert!(resolve(&c, Need::Teardown).is_ok());
    }
}
