//! flanneld's subnet file (`/run/flannel/subnet.env`), read as flannel's CNI plugin
//! reads it: `FLANNEL_NETWORK`, `FLANNEL_SUBNET`, `FLANNEL_MTU`, `FLANNEL_IPMASQ`, and
//! the IPv6 pair `FLANNEL_IPV6_NETWORK`, `FLANNEL_IPV6_SUBNET`.

use std::path::Path;

use crate::cidr::Cidr;
use crate::error::{CniError, CniResult, code};

/// Where flanneld writes it by default.
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

/// What the subnet file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// The whole cluster network (a route to it goes via the bridge gateway).
    pub network: Option<Cidr>,
    /// This node's pod subnet (flannel writes the gateway address with its prefix).
    pub subnet: Option<Cidr>,
    /// The cluster IPv6 network.
    pub ipv6_network: Option<Cidr>,
    /// This node's IPv6 pod subnet.
    pub ipv6_subnet: Option<Cidr>,
    /// MTU for pod interfaces.
    pub mtu: Option<u32>,
    /// True when flanneld masquerades traffic leaving the cluster network.
    pub ipmasq: bool,
}

/// Reads and parses the file. Missing is code 11 (flanneld may not have written it yet);
/// malformed is code 7.
pub fn load(path: &Path) -> CniResult<SubnetEnv> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let c = if e.kind() == std::io::ErrorKind::NotFound {
            code::TRY_AGAIN_LATER
        } else {
            code::IO_FAILURE
        };
        CniError::new(c, format!("read subnet file {}: {e}", path.display()))
            .details("is flanneld running on this node? it writes the file once it holds a lease")
    })?;
    parse(&text).map_err(|msg| CniError::config(format!("subnet file {}: {msg}", path.display())))
}

/// Parses the text of a subnet file.
pub fn parse(text: &str) -> Result<SubnetEnv, String> {
    let mut env = SubnetEnv {
        network: None,
        subnet: None,
        ipv6_network: None,
        ipv6_subnet: None,
        mtu: None,
        ipmasq: false,
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE, got {line:?}", n + 1))?;
        let value = value.trim().trim_matches('"');
        let cidr = |v: &str| {
            v.parse::<Cidr>()
                .map_err(|_| format!("{key}: invalid CIDR {v:?}"))
        };
        match key.trim() {
            "FLANNEL_NETWORK" => env.network = Some(cidr(value)?),
            "FLANNEL_SUBNET" => env.subnet = Some(cidr(value)?),
            "FLANNEL_IPV6_NETWORK" => env.ipv6_network = Some(cidr(value)?),
            "FLANNEL_IPV6_SUBNET" => env.ipv6_subnet = Some(cidr(value)?),
            "FLANNEL_MTU" => {
                env.mtu = Some(
                    value
                        .parse()
                        .map_err(|_| format!("FLANNEL_MTU: invalid number {value:?}"))?,
                )
            }
            "FLANNEL_IPMASQ" => {
                env.ipmasq = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "FLANNEL_IPMASQ: expected true or false, got {value:?}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if env.subnet.is_none() && env.ipv6_subnet.is_none() {
        return Err("FLANNEL_SUBNET is missing".into());
    }
    if env.network.is_none() && env.ipv6_network.is_none() {
        return Err("FLANNEL_NETWORK is missing".into());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flanneld_output() {
        let env = parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        assert_eq!(env.network.unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(env.subnet.unwrap().to_string(), "10.244.3.1/24");
        assert_eq!(env.mtu, Some(1450));
        assert!(env.ipmasq);
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(
            parse("FLANNEL_NETWORK=10.244.0.0/16\n")
                .unwrap_err()
                .contains("FLANNEL_SUBNET")
        );
        assert!(
            parse("FLANNEL_SUBNET=10.244.3.1/24")
                .unwrap_err()
                .contains("FLANNEL_NETWORK")
        );
        assert!(
            parse("FLANNEL_SUBNET=10.244.3.1/99\nFLANNEL_NETWORK=10.0.0.0/8")
                .unwrap_err()
                .contains("FLANNEL_SUBNET")
        );
        assert!(parse("garbage").unwrap_err().contains("line 1"));
        assert!(
            parse("FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_MTU=x")
                .unwrap_err()
                .contains("FLANNEL_MTU")
        );
    }

    #[test]
    fn missing_file_is_try_again_later() {
        let e = load(Path::new("/nonexistent/skein/subnet.env")).unwrap_err();
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("/nonexistent/skein/subnet.env"));
    }
}
