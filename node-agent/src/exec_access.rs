//! Who may open `kubectl exec` sessions on the agent's plain-HTTP endpoint
//! (`--exec-allowed-from`): by default only the API server's address, so that a pod
//! cannot reach the node's port and run commands in its neighbours.

use std::net::{IpAddr, ToSocketAddrs};

use ipnetwork::IpNetwork;

/// The peers allowed to exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecAccess {
    /// Every peer (`--exec-allowed-from any`).
    Any,
    /// Peers in these networks (empty: nobody).
    From(Vec<IpNetwork>),
}

impl Default for ExecAccess {
    /// Nobody.
    fn default() -> Self {
        ExecAccess::From(Vec::new())
    }
}

impl ExecAccess {
    /// `any`, or a comma-separated list of IPs and CIDRs.
    pub fn parse(s: &str) -> Result<ExecAccess, String> {
        if s.trim() == "any" {
            return Ok(ExecAccess::Any);
        }
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNetwork>()
                    .map_err(|e| format!("{p:?} is not an IP address or CIDR: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ExecAccess::From)
    }

    /// The API server's addresses: the host of its URL, resolved.
    pub fn api_server(host: &str, port: u16) -> ExecAccess {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, port)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        ExecAccess::From(ips.into_iter().map(IpNetwork::from).collect())
    }

    /// Whether `peer` may exec.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        match self {
            ExecAccess::Any => true,
            ExecAccess::From(nets) => nets.iter().any(|n| n.contains(peer)),
        }
    }
}

impl std::fmt::Display for ExecAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecAccess::Any => write!(f, "any"),
            ExecAccess::From(n) if n.is_empty() => write!(f, "nobody"),
            ExecAccess::From(n) => {
                let s: Vec<String> = n.iter().map(ToString::to_string).collect();
                write!(f, "{}", s.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_ips_and_cidrs() {
        let a = ExecAccess::parse("198.51.100.3, 10.0.0.0/8").unwrap();
        assert!(a.allows("198.51.100.3".parse().unwrap()));
        assert!(a.allows("::ffff:198.51.100.3".parse().unwrap()));
        assert!(a.allows("10.9.8.7".parse().unwrap()));
        assert!(!a.allows("198.51.100.4".parse().unwrap()));
        assert_eq!(a.to_string(), "198.51.100.3/32,10.0.0.0/8");
        assert!(
            ExecAccess::parse("any")
                .unwrap()
                .allows("1.2.3.4".parse().unwrap())
        );
        assert!(!ExecAccess::default().allows("127.0.0.1".parse().unwrap()));
        assert_eq!(ExecAccess::default().to_string(), "nobody");
        let e = ExecAccess::parse("10.0.0.1,nope").unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
    }

    #[test]
    fn the_api_servers_host_is_the_default() {
        let a = ExecAccess::api_server("198.51.100.3", 6443);
        assert_eq!(a.to_string(), "198.51.100.3/32");
        assert!(ExecAccess::api_server("[::1]", 6443).allows("::1".parse().unwrap()));
    }
}
