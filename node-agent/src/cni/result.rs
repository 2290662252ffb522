//! The parts of a CNI result (0.3.0 and later) the agent uses: the pod's IPs.

use std::net::IpAddr;

use serde_json::Value;

/// A parsed ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResult {
    /// The addresses on the sandbox's interface (those on interfaces with a `sandbox`
    /// path, or every address when the result names no interfaces).
    pub ips: Vec<IpAddr>,
}

impl CniResult {
    /// Reads `ips[].address` (CIDR), keeping those whose `interface` index points at an
    /// interface inside the sandbox.
    pub fn parse(v: &Value) -> Result<CniResult, String> {
        let ifaces = v.get("interfaces").and_then(Value::as_array);
        let mut ips = Vec::new();
        for ip in v.get("ips").and_then(Value::as_array).into_iter().flatten() {
            let Some(addr) = ip.get("address").and_then(Value::as_str) else {
                return Err(format!("result ip without address: {ip}"));
            };
            let host = addr.split('/').next().unwrap_or(addr);
            let parsed: IpAddr = host
                .parse()
                .map_err(|e| format!("result address {addr:?}: {e}"))?;
            let in_sandbox = match (ip.get("interface").and_then(Value::as_u64), ifaces) {
                (Some(i), Some(list)) => list
                    .get(i as usize)
                    .and_then(|itf| itf.get("sandbox"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
                _ => true,
            };
            if in_sandbox && !ips.contains(&parsed) {
                ips.push(parsed);
            }
        }
        Ok(CniResult { ips })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_sandbox_addresses() {
        let r = CniResult::parse(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/ns"}],
            "ips": [{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":2},
                    {"address":"10.244.1.1/24","interface":0}]
        }))
        .unwrap();
        assert_eq!(r.ips, vec!["10.244.1.5".parse::<IpAddr>().unwrap()]);
        let r = CniResult::parse(&json!({"ips":[{"address":"fd00::5/64"}]})).unwrap();
        assert_eq!(r.ips, vec!["fd00::5".parse::<IpAddr>().unwrap()]);
        assert!(CniResult::parse(&json!({"ips":[{"address":"nope/24"}]})).is_err());
        assert!(CniResult::parse(&json!({})).unwrap().ips.is_empty());
    }
}
