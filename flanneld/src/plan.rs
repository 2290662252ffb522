//! From leases to kernel entries, and from (wanted, present) to changes (pure logic).
//!
//! ```text
//! leases ──desired()──► Entries {routes, neighs, fdbs} ──diff(present)──► Changes
//! ```
//!
//! VXLAN, per remote lease: a route `subnet via <subnet>.0 dev flannel.N onlink`, a
//! permanent neighbour `<subnet>.0 lladdr <VtepMAC>`, and an FDB entry `<VtepMAC> dst
//! <PublicIP>`; with DirectRouting and the remote on the uplink's L2 subnet, a plain
//! route via its PublicIP instead. host-gw: a route via the remote PublicIP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::config::Backend;
use crate::lease::LeaseRecord;

/// A route to a remote subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    /// The remote subnet.
    pub dst: Ipv4Network,
    /// Next hop.
    pub gateway: Ipv4Addr,
    /// Output interface index.
    pub oif: u32,
    /// Whether the route carries the `onlink` flag.
    pub onlink: bool,
}

/// A permanent neighbour on the VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighEntry {
    /// The remote VTEP's address (the remote subnet's network address).
    pub ip: Ipv4Addr,
    /// The remote VTEP's MAC.
    pub mac: [u8; 6],
}

/// A forwarding entry on the VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    /// The remote VTEP's MAC.
    pub mac: [u8; 6],
    /// The remote node's public IP.
    pub dst: Ipv4Addr,
}

/// A set of kernel entries, wanted or present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// Routes to remote subnets.
    pub routes: Vec<RouteEntry>,
    /// Neighbours on the VXLAN device.
    pub neighs: Vec<NeighEntry>,
    /// FDB entries on the VXLAN device.
    pub fdbs: Vec<FdbEntry>,
}

/// What the node looks like, for planning.
#[derive(Debug, Clone)]
pub struct Context {
    /// This node's subnet (its own lease is skipped).
    pub own_subnet: Ipv4Network,
    /// This node's public IP.
    pub own_ip: Ipv4Addr,
    /// The backend.
    pub backend: Backend,
    /// Index of the VXLAN device (unused for host-gw).
    pub vxlan_index: u32,
    /// Index of the uplink.
    pub uplink_index: u32,
    /// The uplink's address and prefix (its L2 subnet).
    pub uplink_net: Ipv4Network,
}

/// What to change in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes to add or replace.
    pub set_routes: Vec<RouteEntry>,
    /// Routes to delete.
    pub del_routes: Vec<RouteEntry>,
    /// Neighbours to add or replace.
    pub set_neighs: Vec<NeighEntry>,
    /// Neighbours to delete.
    pub del_neighs: Vec<NeighEntry>,
    /// FDB entries to add or replace.
    pub set_fdbs: Vec<FdbEntry>,
    /// FDB entries to delete.
    pub del_fdbs: Vec<FdbEntry>,
}

impl Changes {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set_routes.is_empty()
            && self.del_routes.is_empty()
            && self.set_neighs.is_empty()
            && self.del_neighs.is_empty()
            && self.set_fdbs.is_empty()
            && self.del_fdbs.is_empty()
    }
}

/// Why a lease got no entries (logged once per lease by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The lease's subnet.
    pub subnet: Ipv4Network,
    /// Why.
    pub reason: String,
}

/// The entries wanted for `leases`, and the leases that could not be used.
pub fn desired(ctx: &Context, leases: &[LeaseRecord]) -> (Entries, Vec<Skipped>) {
    let mut out = Entries::default();
    let mut skipped = Vec::new();
    for l in leases {
        if l.subnet == ctx.own_subnet || l.attrs.public_ip == ctx.own_ip {
            continue;
        }
        let same_l2 = ctx.uplink_net.contains(l.attrs.public_ip);
        let direct = RouteEntry {
            dst: l.subnet,
            gateway: l.attrs.public_ip,
            oif: ctx.uplink_index,
            onlink: false,
        };
        match ctx.backend {
            Backend::HostGw => {
                if same_l2 {
                    out.routes.push(direct);
                } else {
                    skipped.push(Skipped {
                        subnet: l.subnet,
                        reason: format!(
                            "host-gw needs the remote {} on this node's L2 subnet {}",
                            l.attrs.public_ip, ctx.uplink_net
                        ),
                    });
                }
            }
            Backend::Vxlan {
                vni,
                direct_routing,
                ..
            } => {
                if direct_routing && same_l2 {
                    out.routes.push(direct);
                    continue;
                }
                let Some((remote_vni, mac)) = l.attrs.vxlan_data() else {
                    skipped.push(Skipped {
                        subnet: l.subnet,
                        reason: format!(
                            "lease has BackendType {:?} without usable VXLAN BackendData",
                            l.attrs.backend_type
                        ),
                    });
                    continue;
                };
                if remote_vni != vni {
                    skipped.push(Skipped {
                        subnet: l.subnet,
                        reason: format!("lease VNI {remote_vni} differs from ours ({vni})"),
                    });
                    continue;
                }
                let vtep = l.subnet.network();
                out.routes.push(RouteEntry {
                    dst: l.subnet,
                    gateway: vtep,
                    oif: ctx.vxlan_index,
                    onlink: true,
                });
                out.neighs.push(NeighEntry { ip: vtep, mac });
                out.fdbs.push(FdbEntry {
                    mac,
                    dst: l.attrs.public_ip,
                });
            }
        }
    }
    (out, skipped)
}

/// The changes that turn `present` into `wanted`. Routes are keyed by destination,
/// neighbours by IP, FDB entries by MAC: an entry with the same key but other fields is
/// replaced, one with no wanted counterpart is deleted.
pub fn diff(wanted: &Entries, present: &Entries) -> Changes {
    let mut c = Changes::default();
    keyed_diff(
        &wanted.routes,
        &present.routes,
        |r| r.dst,
        &mut c.set_routes,
        &mut c.del_routes,
    );
    keyed_diff(
        &wanted.neighs,
        &present.neighs,
        |n| n.ip,
        &mut c.set_neighs,
        &mut c.del_neighs,
    );
    keyed_diff(
        &wanted.fdbs,
        &present.fdbs,
        |f| f.mac,
        &mut c.set_fdbs,
        &mut c.del_fdbs,
    );
    c
}

fn keyed_diff<T: Copy + PartialEq, K: Ord>(
    wanted: &[T],
    present: &[T],
    key: impl Fn(&T) -> K,
    set: &mut Vec<T>,
    del: &mut Vec<T>,
) {
    let want: BTreeMap<K, T> = wanted.iter().map(|e| (key(e), *e)).collect();
    let mut have: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for e in present {
        have.entry(key(e)).or_default().push(*e);
    }
    for (k, w) in &want {
        match have.get(k) {
            None => set.push(*w),
            Some(list) => {
                // One entry per key: a differing one is replaced in place. Several (say,
                // one per old remote): the extra ones go.
                if list.len() > 1 {
                    del.extend(list.iter().filter(|e| *e != w).copied());
                }
                if !list.contains(w) {
                    set.push(*w);
                }
            }
        }
    }
    for (k, list) in have {
        if !want.contains_key(&k) {
            del.extend(list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;

    const VX: u32 = 7;
    const UP: u32 = 2;

    fn ctx(backend: Backend) -> Context {
        Context {
            own_subnet: "10.244.1.0/24".parse().unwrap(),
            own_ip: Ipv4Addr::new(198, 51, 100, 11),
            backend,
            vxlan_index: VX,
            uplink_index: UP,
            uplink_net: "198.51.100.11/24".parse().unwrap(),
        }
    }
    fn vxlan(direct_routing: bool) -> Backend {
        Backend::Vxlan {
            vni: 1,
            port: 8472,
            direct_routing,
            mtu: None,
        }
    }
    fn lease(subnet: &str, ip: [u8; 4], mac_last: u8) -> LeaseRecord {
        LeaseRecord {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::from(ip), 1, [2, 0, 0, 0, 0, mac_last]),
            etcd_lease: 9,
        }
    }

    #[test]
    fn vxlan_wants_route_neigh_fdb_per_remote_and_skips_self() {
        let leases = [
            lease("10.244.1.0/24", [198, 51, 100, 11], 1),
            lease("10.244.2.0/24", [198, 51, 100, 12], 2),
            lease("10.244.3.0/24", [203, 0, 113, 5], 3),
        ];
        let (e, skipped) = desired(&ctx(vxlan(false)), &leases);
        assert!(skipped.is_empty());
        assert_eq!(
            e.routes,
            vec![
                RouteEntry {
                    dst: "10.244.2.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 244, 2, 0),
                    oif: VX,
                    onlink: true
                },
                RouteEntry {
                    dst: "10.244.3.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 244, 3, 0),
                    oif: VX,
                    onlink: true
                }
            ]
        );
        assert_eq!(
            e.neighs[0],
            NeighEntry {
                ip: Ipv4Addr::new(10, 244, 2, 0),
                mac: [2, 0, 0, 0, 0, 2]
            }
        );
        assert_eq!(
            e.fdbs[1],
            FdbEntry {
                mac: [2, 0, 0, 0, 0, 3],
                dst: Ipv4Addr::new(203, 0, 113, 5)
            }
        );
    }

    #[test]
    fn direct_routing_only_for_same_l2() {
        let leases = [
            lease("10.244.2.0/24", [198, 51, 100, 12], 2),
            lease("10.244.3.0/24", [203, 0, 113, 5], 3),
        ];
        let (e, _) = desired(&ctx(vxlan(true)), &leases);
        assert_eq!(
            e.routes[0],
            RouteEntry {
                dst: "10.244.2.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(198, 51, 100, 12),
                oif: UP,
                onlink: false
            }
        );
        assert_eq!(e.routes[1].oif, VX);
        assert_eq!(e.neighs.len(), 1);
        assert_eq!(e.fdbs.len(), 1);
    }

    #[test]
    fn host_gw_routes_via_public_ip_and_skips_other_l2() {
        let mut leases = vec![
            lease("10.244.2.0/24", [198, 51, 100, 12], 2),
            lease("10.244.3.0/24", [203, 0, 113, 5], 3),
        ];
        leases[0].attrs = LeaseAttrs::host_gw(Ipv4Addr::new(198, 51, 100, 12));
        let (e, skipped) = desired(&ctx(Backend::HostGw), &leases);
        assert_eq!(e.routes.len(), 1);
        assert_eq!(e.routes[0].gateway, Ipv4Addr::new(198, 51, 100, 12));
        assert!(e.neighs.is_empty() && e.fdbs.is_empty());
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("L2"));
    }

    #[test]
    fn vxlan_skips_leases_without_vxlan_data_or_with_other_vni() {
        let mut a = lease("10.244.2.0/24", [198, 51, 100, 12], 2);
        a.attrs = LeaseAttrs::host_gw(a.attrs.public_ip);
        let mut b = lease("10.244.3.0/24", [198, 51, 100, 13], 3);
        b.attrs = LeaseAttrs::vxlan(b.attrs.public_ip, 9, [2, 0, 0, 0, 0, 3]);
        let (e, skipped) = desired(&ctx(vxlan(false)), &[a, b]);
        assert_eq!(e, Entries::default());
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn diff_adds_replaces_and_removes() {
        let leases = [
            lease("10.244.2.0/24", [198, 51, 100, 12], 2),
            lease("10.244.3.0/24", [198, 51, 100, 13], 3),
        ];
        let (wanted, _) = desired(&ctx(vxlan(false)), &leases);
        // Present: .2 correct, .3 with an old MAC, .4 stale.
        let (mut present, _) = desired(
            &ctx(vxlan(false)),
            &[
                lease("10.244.2.0/24", [198, 51, 100, 12], 2),
                lease("10.244.3.0/24", [198, 51, 100, 13], 99),
                lease("10.244.4.0/24", [198, 51, 100, 14], 4),
            ],
        );
        present.routes.reverse();
        let c = diff(&wanted, &present);
        assert!(c.set_routes.is_empty(), "routes to .3 are unchanged");
        assert_eq!(c.del_routes.len(), 1);
        assert_eq!(c.del_routes[0].dst, "10.244.4.0/24".parse().unwrap());
        assert_eq!(c.set_neighs, vec![wanted.neighs[1]]);
        assert_eq!(c.del_neighs.len(), 1);
        // The FDB is keyed by MAC: MAC 3 is new, MACs 99 and 4 go.
        assert_eq!(c.set_fdbs, vec![wanted.fdbs[1]]);
        assert_eq!(c.del_fdbs.len(), 2);
        assert!(diff(&wanted, &wanted).is_empty());
    }

    #[test]
    fn diff_removes_duplicates_of_a_key() {
        let r = RouteEntry {
            dst: "10.244.2.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 2, 0),
            oif: VX,
            onlink: true,
        };
        let other = RouteEntry {
            gateway: Ipv4Addr::new(198, 51, 100, 12),
            oif: UP,
            onlink: false,
            ..r
        };
        let wanted = Entries {
            routes: vec![r],
            ..Default::default()
        };
        let present = Entries {
            routes: vec![r, other],
            ..Default::default()
        };
        let c = diff(&wanted, &present);
        assert_eq!(c.del_routes, vec![other]);
        assert!(c.set_routes.is_empty());
    }
}
