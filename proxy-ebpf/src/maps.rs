//! The BPF map layouts, mirrored once from `bpf/skein_maps.h` as `#[repr(C)]` types, and
//! the names of the maps and programs. Addresses and ports are kept in network byte
//! order, exactly as the programs read them; the constructors take host values.
//!
//! This is the crate's one module with `unsafe`: the `aya::Pod` impls, which promise
//! aya that each type is plain bytes with no padding the kernel could leave undefined.

use std::net::Ipv4Addr;

/// Pinned map names (also the file names under the pin dir).
pub const MAP_SVC: &str = "skein_svc";
/// Backend slots: (group, slot) -> backend.
pub const MAP_BE: &str = "skein_be";
/// Maglev tables: group -> table.
pub const MAP_MAGLEV: &str = "skein_maglev";
/// Group names: group -> "namespace/name:port".
pub const MAP_NAMES: &str = "skein_names";
/// Socket reverse NAT: (cookie, backend) -> VIP.
pub const MAP_SOCK_RN: &str = "skein_sock_rn";
/// Session affinity.
pub const MAP_AFF: &str = "skein_aff";
/// tc conntrack.
pub const MAP_CT: &str = "skein_ct";
/// tc reverse NAT.
pub const MAP_REVNAT: &str = "skein_revnat";
/// Node config (SNAT address).
pub const MAP_CFG: &str = "skein_cfg";
/// New connections per group, per CPU.
pub const MAP_CONNS: &str = "skein_conns";
/// Pod routing config (cluster network, node subnet, bridge).
pub const MAP_PODNET: &str = "skein_podnet";
/// Local pods learned at tc: IPv4 -> host-side veth and MAC.
pub const MAP_PODS: &str = "skein_pods";
/// Every map the proxy pins, for cleanup.
pub const ALL_MAPS: &[&str] = &[
    MAP_SVC,
    MAP_BE,
    MAP_MAGLEV,
    MAP_NAMES,
    MAP_SOCK_RN,
    MAP_AFF,
    MAP_CT,
    MAP_REVNAT,
    MAP_CFG,
    MAP_CONNS,
    MAP_PODNET,
    MAP_PODS,
];

/// Program names (function names in the C sources).
pub const PROG_CONNECT4: &str = "skein_connect4";
/// UDP sendmsg hook.
pub const PROG_SENDMSG4: &str = "skein_sendmsg4";
/// UDP recvmsg hook.
pub const PROG_RECVMSG4: &str = "skein_recvmsg4";
/// getpeername hook.
pub const PROG_GETPEERNAME4: &str = "skein_getpeername4";
/// tc ingress on the uplink.
pub const PROG_TC_INGRESS: &str = "skein_tc_ingress";
/// tc egress on the uplink.
pub const PROG_TC_EGRESS: &str = "skein_tc_egress";
/// tc ingress on each pod's host-side veth (pod routing).
pub const PROG_TC_POD: &str = "skein_tc_pod";

/// Maglev table size (prime), `SKEIN_MAGLEV_M`.
pub const MAGLEV_M: usize = 1021;
/// Group ids are below this (`SKEIN_MAX_GROUPS`).
pub const MAX_GROUPS: u32 = 65536;
/// Longest group name stored, `SKEIN_NAME_LEN`.
pub const NAME_LEN: usize = 64;

/// Frontend matched at the socket (ClusterIP, externalIPs from pods).
pub const SCOPE_CLUSTER: u8 = 0;
/// Frontend matched at tc (NodePort, externalIPs, LoadBalancer).
pub const SCOPE_EXTERNAL: u8 = 1;
/// sessionAffinity: ClientIP.
pub const SVC_F_AFFINITY: u16 = 1;
/// externalTrafficPolicy: Local.
pub const SVC_F_LOCAL: u16 = 2;
/// The backend runs on this node.
pub const BE_F_LOCAL: u8 = 1;

/// IP protocol numbers the proxy balances.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// `struct skein_svc_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SvcKey {
    pub addr: [u8; 4],
    pub port: [u8; 2],
    pub proto: u8,
    pub scope: u8,
}

impl SvcKey {
    /// A frontend key from host values.
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8, scope: u8) -> SvcKey {
        SvcKey {
            addr: addr.octets(),
            port: port.to_be_bytes(),
            proto,
            scope,
        }
    }
    /// The frontend address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
    /// The frontend port.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// `struct skein_svc_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcValue {
    pub group: u32,
    pub count: u16,
    pub flags: u16,
    pub affinity_timeout: u32,
}

/// `struct skein_be_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BeKey {
    pub group: u32,
    pub slot: u32,
}

/// `struct skein_backend`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: [u8; 4],
    pub port: [u8; 2],
    pub flags: u8,
    pub pad: u8,
}

impl Backend {
    /// A backend from host values.
    pub fn new(addr: Ipv4Addr, port: u16, local: bool) -> Backend {
        Backend {
            addr: addr.octets(),
            port: port.to_be_bytes(),
            flags: if local { BE_F_LOCAL } else { 0 },
            pad: 0,
        }
    }
    /// The backend address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
    /// The backend port.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// `struct skein_maglev`: bucket -> backend slot.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MaglevTable {
    pub slot: [u16; MAGLEV_M],
}

impl std::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaglevTable({:?}..)", &self.slot[..8])
    }
}

/// `struct skein_name`: a NUL-padded group name.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GroupName {
    pub name: [u8; NAME_LEN],
}

impl GroupName {
    /// Stores `s`, cut to [`NAME_LEN`] bytes (names are for resync and humans; the
    /// reconciler never relies on two long names differing only past the cut).
    pub fn new(s: &str) -> GroupName {
        let mut name = [0u8; NAME_LEN];
        let b = s.as_bytes();
        let n = b.len().min(NAME_LEN);
        name[..n].copy_from_slice(&b[..n]);
        GroupName { name }
    }
    /// The stored name.
    pub fn as_str(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

impl std::fmt::Debug for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupName({:?})", self.as_str())
    }
}

/// `struct skein_tuple`: a flow's 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct skein_ct_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtValue {
    pub backend_addr: [u8; 4],
    pub backend_port: [u8; 2],
    pub nat_port: [u8; 2],
    pub nat_addr: [u8; 4],
    pub group: u32,
    pub last_seen_ns: u64,
}

/// `struct skein_revnat_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevNatValue {
    pub to: Tuple,
    pub last_seen_ns: u64,
}

/// `struct skein_sock_rn_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockRnKey {
    pub cookie: u64,
    pub addr: [u8; 4],
    pub port: [u8; 2],
    pub pad: u16,
}

/// `struct skein_sock_rn_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockRnValue {
    pub addr: [u8; 4],
    pub port: [u8; 2],
    pub pad: u16,
}

/// `struct skein_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCfg {
    pub node_addr: [u8; 4],
    pub pad: u32,
}

/// `struct skein_route_cfg`: pod routing, on when `enabled` is 1.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodNetCfg {
    pub enabled: u32,
    pub bridge_ifindex: u32,
    pub uplink_ifindex: u32,
    pub cluster_net: [u8; 4],
    pub cluster_mask: [u8; 4],
    pub node_net: [u8; 4],
    pub node_mask: [u8; 4],
}

impl PodNetCfg {
    /// On, for the pods of `bridge` (`node`, this node's subnet) in `cluster`, routed
    /// out of `uplink`.
    pub fn new(
        bridge_ifindex: u32,
        uplink_ifindex: u32,
        cluster: (Ipv4Addr, u8),
        node: (Ipv4Addr, u8),
    ) -> Self {
        let net = |(addr, len): (Ipv4Addr, u8)| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            ((u32::from(addr) & mask).to_be_bytes(), mask.to_be_bytes())
        };
        let (cluster_net, cluster_mask) = net(cluster);
        let (node_net, node_mask) = net(node);
        PodNetCfg {
            enabled: 1,
            bridge_ifindex,
            uplink_ifindex,
            cluster_net,
            cluster_mask,
            node_net,
            node_mask,
        }
    }
}

/// `struct skein_pod`: a learned local pod.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodEntry {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub pad: u16,
}

// SAFETY: every type below is #[repr(C)], made only of integers and byte arrays, with
// explicit padding fields (the size tests prove there is no implicit padding), so any
// bit pattern is valid and all bytes are initialised.
unsafe impl aya::Pod for SvcKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SvcValue {}
// SAFETY: as above.
unsafe impl aya::Pod for BeKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Backend {}
// SAFETY: as above.
unsafe impl aya::Pod for MaglevTable {}
// SAFETY: as above.
unsafe impl aya::Pod for GroupName {}
// SAFETY: as above.
unsafe impl aya::Pod for Tuple {}
// SAFETY: as above.
unsafe impl aya::Pod for CtValue {}
// SAFETY: as above.
unsafe impl aya::Pod for RevNatValue {}
// SAFETY: as above.
unsafe impl aya::Pod for SockRnKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SockRnValue {}
// SAFETY: as above.
unsafe impl aya::Pod for NodeCfg {}
// SAFETY: as above.
unsafe impl aya::Pod for PodNetCfg {}
// SAFETY: as above.
unsafe impl aya::Pod for PodEntry {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Reads `#define SKEIN_<NAME> <n>` from the C header, so a change on one side only
    /// fails here.
    fn c_size(name: &str) -> usize {
        let header = include_str!("../bpf/skein_maps.h");
        let prefix = format!("#define SKEIN_{name} ");
        let line = header
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("skein_maps.h has no SKEIN_{name}"));
        let v = line[prefix.len()..].trim();
        if let Some(inner) = v.strip_prefix("(2 * SKEIN_MAGLEV_M)") {
            assert!(inner.is_empty());
            return 2 * c_size("MAGLEV_M");
        }
        v.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("SKEIN_{name} is not a number: {v}"))
    }

    #[test]
    fn rust_layouts_match_the_c_header() {
        assert_eq!(size_of::<SvcKey>(), c_size("SVC_KEY_SIZE"));
        assert_eq!(size_of::<SvcValue>(), c_size("SVC_VALUE_SIZE"));
        assert_eq!(size_of::<BeKey>(), c_size("BE_KEY_SIZE"));
        assert_eq!(size_of::<Backend>(), c_size("BACKEND_SIZE"));
        assert_eq!(size_of::<MaglevTable>(), c_size("MAGLEV_SIZE"));
        assert_eq!(size_of::<GroupName>(), c_size("NAME_LEN"));
        assert_eq!(size_of::<Tuple>(), c_size("TUPLE_SIZE"));
        assert_eq!(size_of::<CtValue>(), c_size("CT_VALUE_SIZE"));
        assert_eq!(size_of::<RevNatValue>(), c_size("REVNAT_VALUE_SIZE"));
        assert_eq!(size_of::<SockRnKey>(), c_size("SOCK_RN_KEY_SIZE"));
        assert_eq!(size_of::<SockRnValue>(), c_size("SOCK_RN_VALUE_SIZE"));
        assert_eq!(size_of::<NodeCfg>(), c_size("CFG_SIZE"));
        assert_eq!(size_of::<PodNetCfg>(), c_size("ROUTE_CFG_SIZE"));
        assert_eq!(size_of::<PodEntry>(), c_size("POD_SIZE"));
        assert_eq!(MAGLEV_M, c_size("MAGLEV_M"));
        assert_eq!(MAX_GROUPS as usize, c_size("MAX_GROUPS"));
    }

    #[test]
    fn keys_hold_network_byte_order() {
        let k = SvcKey::new(Ipv4Addr::new(10, 96, 0, 1), 80, PROTO_TCP, SCOPE_CLUSTER);
        assert_eq!(k.addr, [10, 96, 0, 1]);
        assert_eq!(k.port, [0, 80]);
        assert_eq!((k.ip(), k.port()), (Ipv4Addr::new(10, 96, 0, 1), 80));
        let b = Backend::new(Ipv4Addr::new(10, 244, 1, 5), 8080, true);
        assert_eq!(b.port, 8080u16.to_be_bytes());
        assert_eq!(b.flags, BE_F_LOCAL);
    }

    #[test]
    fn pod_network_config_holds_networks_and_masks() {
        let c = PodNetCfg::new(
            7,
            2,
            (Ipv4Addr::new(10, 244, 0, 0), 16),
            (Ipv4Addr::new(10, 244, 3, 1), 24),
        );
        assert_eq!((c.enabled, c.bridge_ifindex, c.uplink_ifindex), (1, 7, 2));
        assert_eq!(c.cluster_net, [10, 244, 0, 0]);
        assert_eq!(c.cluster_mask, [255, 255, 0, 0]);
        // The bridge's own address names the subnet; the host bits are cleared.
        assert_eq!(c.node_net, [10, 244, 3, 0]);
        assert_eq!(c.node_mask, [255, 255, 255, 0]);
    }

    #[test]
    fn group_names_round_trip_and_cut() {
        assert_eq!(
            GroupName::new("default/web:http").as_str(),
            "default/web:http"
        );
        assert_eq!(GroupName::new(&"x".repeat(100)).as_str().len(), NAME_LEN);
    }
}
