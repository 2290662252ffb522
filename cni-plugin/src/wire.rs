//! The kernel side of an attachment, through netlink sockets opened up front in the
//! node's namespace and in the pod's:
//!
//! ```text
//!   node netns:  cni0 (bridge, gateway addresses) ── veth<hash> (host end, port of cni0)
//!                                                        ║
//!   pod netns:   lo up, <ifname> (addresses, routes via the gateway)
//! ```
//!
//! The host end's name is derived from the container ID and interface name, so DEL,
//! GC and a retried ADD find it without any state on disk.

use std::net::IpAddr;
use std::os::fd::AsFd;

use skein_netns::NetNs;
use skein_netns::netlink::{Address, Link, Netlink, NetlinkError, Route, VethOptions};

use crate::cidr::Cidr;
use crate::error::{CniError, CniResult};

/// The host end's name: `veth` + 11 hex digits of a hash of container ID and ifname.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bit: stable across releases (the name must not change on upgrade).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:011x}", h & ((1u64 << 44) - 1))
}

/// True for names [`host_veth_name`] makes.
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 15
        && name.starts_with("veth")
        && name[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

const LOOPBACK_INDEX: u32 = 1;

fn kernel(e: NetlinkError) -> CniError {
    CniError::kernel(e)
}

/// The MTU of the node's default-route device (IPv4 first), if there is one.
pub fn default_route_mtu(nl: &mut Netlink) -> CniResult<Option<u32>> {
    let routes = nl.routes().map_err(kernel)?;
    let Some(oif) = routes.iter().filter(|r| r.dst_len == 0).find_map(|r| r.oif) else {
        return Ok(None);
    };
    Ok(nl
        .links()
        .map_err(kernel)?
        .into_iter()
        .find(|l| l.index == oif)
        .map(|l| l.mtu))
}

/// Finds or creates the bridge, brings it up, and (when `gateways` is not empty) gives it
/// those addresses. A new bridge gets the fixed MAC of [`bridge_mac`]. Concurrent ADDs
/// racing to create it are fine.
pub fn ensure_bridge(nl: &mut Netlink, name: &str, mtu: u32, gateways: &[Cidr]) -> CniResult<Link> {
    let link = match nl.link(name).map_err(kernel)? {
        Some(l) => l,
        None => {
            match nl.add_bridge_with_mac(name, Some(mtu), Some(bridge_mac(gateways))) {
                // EEXIST: a concurrent ADD made it first.
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(kernel(e)),
            }
            nl.link(name)
                .map_err(kernel)?
                .ok_or_else(|| CniError::kernel(format!("bridge {name} vanished after creation")))?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::config(format!(
            "{name} exists and is not a bridge (kind {})",
            link.kind.as_deref().unwrap_or("unknown")
        )));
    }
    if !link.up {
        nl.set_up(link.index).map_err(kernel)?;
    }
    if !gateways.is_empty() {
        let have = nl.addresses(Some(link.index)).map_err(kernel)?;
        for gw in gateways {
            if have.iter().any(|a| a.addr == gw.ip) {
                continue;
            }
            let a = Address {
                index: link.index,
                addr: gw.ip,
                prefix_len: gw.prefix,
            };
            match nl.add_address(&a) {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(CniError::kernel(format!("bridge {name}: {e}"))),
            }
        }
    }
    Ok(link)
}

/// The bridge's fixed MAC: `0a:58` and the last four bytes of its first gateway (the
/// convention of flannel and the reference plugins), so that the gateway's MAC never
/// changes under the pods' ARP caches; random (locally administered) without a gateway.
pub fn bridge_mac(gateways: &[Cidr]) -> [u8; 6] {
    let tail: [u8; 4] = match gateways.first().map(|g| g.ip) {
        Some(IpAddr::V4(v4)) => v4.octets(),
        Some(IpAddr::V6(v6)) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
        None => {
            let mut b = [0u8; 4];
            if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
                use std::io::Read;
                let _ = f.read_exact(&mut b);
            }
            b
        }
    };
    [0x0a, 0x58, tail[0], tail[1], tail[2], tail[3]]
}

/// Turns on forwarding in the node's namespace for the families used (a gateway
/// forwards; the reference bridge plugin does the same).
pub fn enable_forwarding(v4: bool, v6: bool) -> CniResult<()> {
    let set = |path: &str| -> CniResult<()> {
        match std::fs::read_to_string(path) {
            Ok(s) if s.trim() == "1" => Ok(()),
            _ => std::fs::write(path, "1")
                .map_err(|e| CniError::kernel(format!("write {path}: {e}"))),
        }
    };
    if v4 {
        set("/proc/sys/net/ipv4/ip_forward")?;
    }
    if v6 {
        set("/proc/sys/net/ipv6/conf/all/forwarding")?;
    }
    Ok(())
}

/// Creates the veth pair with the pod end directly inside `pod_ns` as `ifname`, plugs
/// the host end into the bridge and brings it up. A stale host end of the same name (an
/// ADD killed half-way) is removed first.
pub fn create_veth(
    host: &mut Netlink,
    pod_ns: &NetNs,
    host_name: &str,
    ifname: &str,
    mtu: u32,
    bridge: &Link,
    hairpin: bool,
) -> CniResult<Link> {
    let opts = VethOptions {
        name: host_name,
        peer_name: ifname,
        peer_netns: Some(pod_ns.file().as_fd()),
        mtu: Some(mtu),
        master: Some(bridge.index),
        up: true,
    };
    let exists = |e: &NetlinkError| {
        CniError::kernel(format!(
            "create veth {host_name}: interface {ifname} already exists in netns {} ({e})",
            pod_ns.path().display()
        ))
    };
    match host.add_veth_with(&opts) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {
            // A host end left by an ADD that was killed: remove it and try once more. If
            // there was none, the name taken is the pod's.
            if !host.del_link_by_name(host_name).map_err(kernel)? {
                return Err(exists(&e));
            }
            host.add_veth_with(&opts)
                .map_err(|e| if e.is_exists() { exists(&e) } else { kernel(e) })?;
        }
        Err(e) => return Err(kernel(e)),
    }
    let link = host
        .link(host_name)
        .map_err(kernel)?
        .ok_or_else(|| CniError::kernel(format!("veth {host_name} vanished after creation")))?;
    if hairpin {
        host.set_hairpin(link.index, true).map_err(kernel)?;
    }
    Ok(link)
}

/// Inside the pod: `lo` up, `ifname` up with its addresses, then the routes.
pub fn configure_pod(
    pod: &mut Netlink,
    ifname: &str,
    addrs: &[Cidr],
    routes: &[Route],
) -> CniResult<Link> {
    // Loopback is always interface 1 in a network namespace.
    pod.set_up(LOOPBACK_INDEX).map_err(kernel)?;
    let link = pod
        .link(ifname)
        .map_err(kernel)?
        .ok_or_else(|| CniError::kernel(format!("{ifname} missing in the pod after creation")))?;
    for a in addrs {
        pod.add_address(&Address {
            index: link.index,
            addr: a.ip,
            prefix_len: a.prefix,
        })
        .map_err(kernel)?;
    }
    pod.set_up(link.index).map_err(kernel)?;
    for r in routes {
        let r = Route {
            oif: Some(link.index),
            ..*r
        };
        pod.add_route(&r, false).map_err(kernel)?;
    }
    Ok(link)
}

/// The route to add in the pod for `dst` via `gw`.
pub fn route(dst: Cidr, gw: Option<IpAddr>) -> Route {
    Route {
        dst: dst.network(),
        dst_len: dst.prefix,
        gateway: gw,
        oif: None,
        link_scope: gw.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_recognisable() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(is_host_veth_name(&a));
        assert!(!is_host_veth_name("veth1234"));
        assert!(!is_host_veth_name("eth0"));
    }

    #[test]
    fn bridge_mac_comes_from_the_gateway() {
        let gw: Cidr = "10.244.1.1/24".parse().unwrap();
        assert_eq!(bridge_mac(&[gw]), [0x0a, 0x58, 10, 244, 1, 1]);
        let random = bridge_mac(&[]);
        assert_eq!(random[0] & 0x03, 0x02, "locally administered unicast");
    }
}
