//! `--ip-masq`: flannel's masquerade rules, as one nftables table in the namespace
//! flanneld runs in.
//!
//! Meaning (flannel's `MasqRules`): pod → pod inside the cluster network is left
//! alone; pod → outside is masqueraded (not multicast); outside → this node's pods is
//! left alone; outside → other nodes' pods is masqueraded. The table is replaced as a
//! whole (one `nft -f` transaction) and deleted on exit.
//!
//! The rules go to `nft` as a text script rather than through the `nftables` crate:
//! that crate drives the same binary (with JSON), and the text here is exactly what an
//! operator reads back with `nft list table ip skein-flannel`.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnetwork::Ipv4Network;

use crate::Error;

/// The nftables table flanneld owns (family `ip`).
pub const TABLE: &str = "skein-flannel";

/// The `nft -f` script that (re)creates the table.
pub fn ruleset(network: Ipv4Network, own: Ipv4Network) -> String {
    format!(
        "table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {network} ip daddr {network} return\n\
         \t\tip saddr {network} ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t\tip saddr != {network} ip daddr {own} return\n\
         \t\tip saddr != {network} ip daddr {network} masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("run nft (is the nftables package installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::Nft(format!("write to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("wait for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Installs (or replaces) the rules.
pub fn install(network: Ipv4Network, own: Ipv4Network) -> Result<(), Error> {
    nft(&ruleset(network, own))
}

/// Removes the table (absent is fine).
pub fn remove() -> Result<(), Error> {
    nft(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_flannels_four_rules_in_order() {
        let s = ruleset(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        );
        let rules: Vec<&str> = s
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("ip "))
            .collect();
        assert_eq!(
            rules,
            vec![
                "ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return",
                "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
                "ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
                "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
            ]
        );
        assert!(s.starts_with("table ip skein-flannel {}\ndelete table ip skein-flannel\n"));
    }
}
