//! `ipMasq`: masquerade pod traffic leaving the pod and cluster networks, with nftables
//! in the node's namespace (through `nft -f -`, one atomic transaction per call).
//!
//! ```text
//!   table ip|ip6 skein-cni
//!     chain postrouting (nat, srcnat):  ip saddr vmap @pods
//!     map pods:         <pod ip> : jump masq-<network>
//!     chain masq-<net>: ip daddr @exempt-<net> return; masquerade
//!     set exempt-<net>: the network's subnets and the cluster network, multicast
//! ```
//!
//! Only the pod's own map element is added or deleted per ADD/DEL, so pods never
//! disturb each other.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::cidr::Cidr;
use crate::error::{CniError, CniResult};

const TABLE: &str = "skein-cni";

fn ident(network: &str) -> String {
    network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The nft script that adds masquerading for `ips`.
pub fn add_script(network: &str, ips: &[IpAddr], exempt: &[Cidr]) -> String {
    let net = ident(network);
    let mut s = String::new();
    for v4 in [true, false] {
        let fam_ips: Vec<&IpAddr> = ips.iter().filter(|i| i.is_ipv4() == v4).collect();
        if fam_ips.is_empty() {
            continue;
        }
        let (fam, ty, kw, mcast) = if v4 {
            ("ip", "ipv4_addr", "ip", "224.0.0.0/4")
        } else {
            ("ip6", "ipv6_addr", "ip6", "ff00::/8")
        };
        let mut ex: Vec<Cidr> = exempt
            .iter()
            .filter(|c| c.ip.is_ipv4() == v4)
            .map(|c| c.masked())
            .collect();
        ex.push(mcast.parse().expect("literal"));
        // An interval set refuses overlapping elements: keep only the widest.
        let ex: Vec<Cidr> = ex
            .iter()
            .filter(|c| {
                !ex.iter()
                    .any(|o| o != *c && o.prefix < c.prefix && o.contains(c.ip))
            })
            .copied()
            .collect();
        let mut uniq: Vec<String> = ex.iter().map(|c| c.to_string()).collect();
        uniq.sort();
        uniq.dedup();
        s += &format!(
            "add table {fam} {TABLE}\n\
             add chain {fam} {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
             add map {fam} {TABLE} pods {{ type {ty} : verdict; }}\n\
             add set {fam} {TABLE} exempt-{net} {{ type {ty}; flags interval; }}\n\
             flush set {fam} {TABLE} exempt-{net}\n\
             add element {fam} {TABLE} exempt-{net} {{ {} }}\n\
             add chain {fam} {TABLE} masq-{net}\n\
             flush chain {fam} {TABLE} masq-{net}\n\
             add rule {fam} {TABLE} masq-{net} {kw} daddr @exempt-{net} return\n\
             add rule {fam} {TABLE} masq-{net} masquerade\n\
             flush chain {fam} {TABLE} postrouting\n\
             add rule {fam} {TABLE} postrouting {kw} saddr vmap @pods\n",
            uniq.join(", ")
        );
        for ip in fam_ips {
            s += &format!("add element {fam} {TABLE} pods {{ {ip} : jump masq-{net} }}\n");
        }
    }
    s
}

fn nft(script: &str) -> CniResult<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::kernel(format!("exec nft: {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::kernel(format!("wait for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CniError::kernel(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Masquerades traffic from `ips` to anything outside `exempt`.
pub fn add(network: &str, ips: &[IpAddr], exempt: &[Cidr]) -> CniResult<()> {
    nft(&add_script(network, ips, exempt))
}

/// Stops masquerading `ips`; entries already gone are fine.
pub fn del(_network: &str, ips: &[IpAddr]) -> CniResult<()> {
    let mut problems = Vec::new();
    for ip in ips {
        let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
        // One element per call: a missing one must not stop the others.
        if let Err(e) = nft(&format!("delete element {fam} {TABLE} pods {{ {ip} }}\n"))
            && !e.msg.contains("No such file or directory")
            && !e.msg.contains("does not exist")
        {
            problems.push(e.msg);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::kernel(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_adds_the_pod_and_exempts_the_widest_networks() {
        let s = add_script(
            "cbr0",
            &["10.244.3.5".parse().unwrap()],
            &[
                "10.244.3.0/24".parse().unwrap(),
                "10.244.0.0/16".parse().unwrap(),
            ],
        );
        assert!(
            s.contains("add element ip skein-cni exempt-cbr0 { 10.244.0.0/16, 224.0.0.0/4 }"),
            "{s}"
        );
        assert!(s.contains("add element ip skein-cni pods { 10.244.3.5 : jump masq-cbr0 }"));
        assert!(!s.contains("ip6"));
    }

    #[test]
    fn ipv6_pods_get_the_ip6_table() {
        let s = add_script(
            "dual",
            &["fd00:1::5".parse().unwrap()],
            &[
                "fd00:1::/64".parse().unwrap(),
                "10.1.0.0/24".parse().unwrap(),
            ],
        );
        assert!(s.contains("add table ip6 skein-cni"), "{s}");
        assert!(s.contains("ip6 daddr @exempt-dual return"));
        assert!(s.contains("{ fd00:1::/64, ff00::/8 }"));
        assert!(s.contains("pods { fd00:1::5 : jump masq-dual }"));
        assert!(
            !s.contains("add table ip skein-cni"),
            "no IPv4 pod, no IPv4 table"
        );
    }
}
