//! The kernel side, over rtnetlink, in the namespace flanneld runs in: the uplink, the
//! VXLAN device, and dumping and applying the entries of [`crate::plan`].

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::Error;
use crate::lease::format_mac;
use crate::plan::{Changes, Entries, FdbEntry, NeighEntry, RouteEntry};

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| Error::Netlink {
        what,
        reason: e.to_string(),
    }
}

/// The uplink: the interface that carries node-to-node traffic.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Its IPv4 address and prefix.
    pub addr: Ipv4Network,
    /// Its MTU.
    pub mtu: u32,
}

/// What the VXLAN device should be.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    /// Device name, `flannel.<vni>`.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Local (public) address.
    pub local: Ipv4Addr,
    /// Uplink index.
    pub uplink: u32,
    /// Device MTU.
    pub mtu: u32,
    /// MAC to give a newly made device.
    pub mac: [u8; 6],
}

/// The VXLAN device as it is.
#[derive(Debug, Clone, Copy)]
pub struct VxlanDev {
    /// Its index.
    pub index: u32,
    /// Its MAC (kept when the device already existed).
    pub mac: [u8; 6],
}

/// A netlink connection in the current network namespace.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
}

#[derive(Debug, Default)]
struct LinkFacts {
    index: u32,
    name: String,
    mtu: u32,
    mac: Option<[u8; 6]>,
    kind: Option<InfoKind>,
    vxlan: Vec<InfoVxlan>,
}

fn link_facts(msg: &LinkMessage) -> LinkFacts {
    let mut f = LinkFacts {
        index: msg.header.index,
        ..Default::default()
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => f.name = n.clone(),
            LinkAttribute::Mtu(m) => f.mtu = *m,
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                f.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => f.kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => f.vxlan = v.clone(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    f
}

impl Kernel {
    /// Opens a netlink socket (needs a tokio runtime).
    pub fn connect() -> Result<Kernel, Error> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| Error::Io {
            what: "open netlink socket".into(),
            source: e,
        })?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
    }

    async fn links(&self) -> Result<Vec<LinkFacts>, Error> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list links"))?;
        Ok(msgs.iter().map(link_facts).collect())
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkFacts>, Error> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<Ipv4Network>, Error> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("list addresses of link {index}")))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.index != index {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a
                    && let Ok(n) = Ipv4Network::new(*ip, m.header.prefix_len)
                {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Every interface's name and IPv4 addresses, in index order.
    pub async fn interfaces(&self) -> Result<Vec<(String, Vec<Ipv4Addr>)>, Error> {
        let mut out = Vec::new();
        for l in self.links().await? {
            let addrs = self.ipv4_addrs(l.index).await?;
            out.push((l.name.clone(), addrs.iter().map(|a| a.ip()).collect()));
        }
        Ok(out)
    }

    /// Finds the uplink: `iface` is a name or an IPv4 address; without it, the
    /// interface of the default route. `public_ip` picks which address when the
    /// interface has several.
    pub async fn uplink(
        &self,
        iface: Option<&str>,
        public_ip: Option<Ipv4Addr>,
    ) -> Result<Uplink, Error> {
        let links = self.links().await?;
        let chosen = match iface {
            Some(spec) => {
                if let Ok(ip) = spec.parse::<Ipv4Addr>() {
                    let mut found = None;
                    for l in &links {
                        if self.ipv4_addrs(l.index).await?.iter().any(|a| a.ip() == ip) {
                            found = Some(l);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        Error::Uplink(format!("no interface has the address {ip} (--iface)"))
                    })?
                } else {
                    links.iter().find(|l| l.name == spec).ok_or_else(|| {
                        Error::Uplink(format!("no interface named {spec:?} (--iface)"))
                    })?
                }
            }
            None => {
                let index = self.default_route_oif().await?.ok_or_else(|| {
                    Error::Uplink("no default route to pick an interface from; pass --iface".into())
                })?;
                links.iter().find(|l| l.index == index).ok_or_else(|| {
                    Error::Uplink(format!("default route's interface {index} vanished"))
                })?
            }
        };
        let addrs = self.ipv4_addrs(chosen.index).await?;
        let addr = match public_ip {
            Some(ip) => addrs
                .iter()
                .find(|a| a.ip() == ip)
                .copied()
                .or(addrs.first().copied()),
            None => addrs.first().copied(),
        }
        .ok_or_else(|| Error::Uplink(format!("interface {} has no IPv4 address", chosen.name)))?;
        Ok(Uplink {
            name: chosen.name.clone(),
            index: chosen.index,
            addr,
            mtu: chosen.mtu,
        })
    }

    async fn default_route_oif(&self) -> Result<Option<u32>, Error> {
        for r in self.main_routes().await? {
            if r.header.destination_prefix_length == 0
                && let Some(oif) = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            {
                return Ok(Some(oif));
            }
        }
        Ok(None)
    }

    async fn main_routes(&self) -> Result<Vec<RouteMessage>, Error> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        Ok(msgs
            .into_iter()
            .filter(|r| route_table(r) == 254 && r.header.kind == RouteType::Unicast)
            .collect())
    }

    /// Makes the VXLAN device match `spec` (keeping an existing compatible device and
    /// its MAC; replacing an incompatible one) and brings it up.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VxlanDev, Error> {
        if let Some(l) = self.link_by_name(&spec.name).await? {
            let compatible = l.kind == Some(InfoKind::Vxlan)
                && l.vxlan.contains(&InfoVxlan::Id(spec.vni))
                && l.vxlan.contains(&InfoVxlan::Port(spec.port))
                && l.vxlan.contains(&InfoVxlan::Local(spec.local))
                && l.vxlan.contains(&InfoVxlan::Learning(false));
            if compatible {
                tracing::info!(device = %spec.name, "keeping existing vxlan device");
            } else {
                tracing::warn!(device = %spec.name, "existing device does not match the config; recreating it");
                self.handle
                    .link()
                    .del(l.index)
                    .execute()
                    .await
                    .map_err(nl(format!("delete link {}", spec.name)))?;
            }
        }
        if self.link_by_name(&spec.name).await?.is_none() {
            let msg = LinkVxlan::new(&spec.name, spec.vni)
                .dev(spec.uplink)
                .port(spec.port)
                .local(spec.local)
                .learning(false)
                .mtu(spec.mtu)
                .address(spec.mac.to_vec())
                .build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("create vxlan device {}", spec.name)))?;
        }
        let l = self
            .link_by_name(&spec.name)
            .await?
            .ok_or_else(|| Error::Netlink {
                what: format!("find {} after creating it", spec.name),
                reason: "not found".into(),
            })?;
        let mut set = LinkUnspec::new_with_index(l.index).up();
        if l.mtu != spec.mtu {
            set = set.mtu(spec.mtu);
        }
        self.handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(nl(format!("set {} up", spec.name)))?;
        Ok(VxlanDev {
            index: l.index,
            mac: l.mac.unwrap_or(spec.mac),
        })
    }

    /// Leaves exactly the IPv4 address `want` on link `index` (named `name` in errors).
    pub async fn set_only_address(
        &self,
        index: u32,
        name: &str,
        want: Ipv4Network,
    ) -> Result<(), Error> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("list addresses of {name}")))?;
        let mut have = false;
        for m in msgs {
            if m.header.index != index || m.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if ip == Some(want.ip()) && m.header.prefix_len == want.prefix() {
                have = true;
            } else {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(nl(format!("remove stale address from {name}")))?;
            }
        }
        if !have {
            self.handle
                .address()
                .add(index, IpAddr::V4(want.ip()), want.prefix())
                .execute()
                .await
                .map_err(nl(format!("add {want} to {name}")))?;
        }
        Ok(())
    }

    /// The entries flanneld owns that the kernel has now: routes in the main table to
    /// destinations inside `network` (but not `own`) through `vxlan` or `uplink`, and
    /// the permanent neighbours and FDB entries of the VXLAN device.
    pub async fn dump(
        &self,
        network: Ipv4Network,
        own: Ipv4Network,
        vxlan: Option<u32>,
        uplink: u32,
    ) -> Result<Entries, Error> {
        let mut out = Entries::default();
        for r in self.main_routes().await? {
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let gateway = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            let (Some(dst), Some(gateway), Some(oif)) = (dst, gateway, oif) else {
                continue;
            };
            let Ok(dst) = Ipv4Network::new(dst, r.header.destination_prefix_length) else {
                continue;
            };
            if dst.prefix() < network.prefix() || !network.contains(dst.ip()) || dst == own {
                continue;
            }
            if oif != uplink && Some(oif) != vxlan {
                continue;
            }
            out.routes.push(RouteEntry {
                dst,
                gateway,
                oif,
                onlink: r.header.flags.contains(RouteFlags::Onlink),
            });
        }
        let Some(vx) = vxlan else {
            return Ok(out);
        };
        let neighs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours"))?;
        for n in neighs {
            if n.header.ifindex != vx || n.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(ip), Some(mac)) = (neigh_ip(&n), neigh_mac(&n)) {
                out.neighs.push(NeighEntry { ip, mac });
            }
        }
        let fdbs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list fdb"))?;
        for n in fdbs {
            if n.header.ifindex != vx {
                continue;
            }
            if let (Some(dst), Some(mac)) = (neigh_ip(&n), neigh_mac(&n)) {
                out.fdbs.push(FdbEntry { mac, dst });
            }
        }
        Ok(out)
    }

    /// Applies `changes` (`vxlan` is the device index for neighbours and FDB entries):
    /// deletions first, then additions (neighbour and FDB before the route that uses
    /// them). Keeps going past failures and reports them all.
    pub async fn apply(&self, changes: &Changes, vxlan: u32) -> Result<(), Error> {
        let mut errors = Vec::new();
        for r in &changes.del_routes {
            if let Err(e) = self.handle.route().del(route_msg(r)).execute().await {
                errors.push(format!("delete route {} via {}: {e}", r.dst, r.gateway));
            }
        }
        for n in &changes.del_neighs {
            if let Err(e) = self
                .handle
                .neighbours()
                .del(neigh_msg(n, vxlan))
                .execute()
                .await
            {
                errors.push(format!("delete neighbour {}: {e}", n.ip));
            }
        }
        for f in &changes.del_fdbs {
            if let Err(e) = self
                .handle
                .neighbours()
                .del(fdb_msg(f, vxlan))
                .execute()
                .await
            {
                errors.push(format!(
                    "delete fdb {} dst {}: {e}",
                    format_mac(f.mac),
                    f.dst
                ));
            }
        }
        for n in &changes.set_neighs {
            let req = self
                .handle
                .neighbours()
                .add(vxlan, IpAddr::V4(n.ip))
                .link_layer_address(&n.mac)
                .state(NeighbourState::Permanent)
                .replace();
            if let Err(e) = req.execute().await {
                errors.push(format!("set neighbour {}: {e}", n.ip));
            }
        }
        for f in &changes.set_fdbs {
            let req = self
                .handle
                .neighbours()
                .add_bridge(vxlan, &f.mac)
                .destination(IpAddr::V4(f.dst))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace();
            if let Err(e) = req.execute().await {
                errors.push(format!("set fdb {} dst {}: {e}", format_mac(f.mac), f.dst));
            }
        }
        for r in &changes.set_routes {
            if let Err(e) = self
                .handle
                .route()
                .add(route_msg(r))
                .replace()
                .execute()
                .await
            {
                errors.push(format!("set route {} via {}: {e}", r.dst, r.gateway));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Netlink {
                what: "apply changes".into(),
                reason: errors.join("; "),
            })
        }
    }
}

fn neigh_msg(n: &NeighEntry, ifindex: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    m
}

fn fdb_msg(f: &FdbEntry, ifindex: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            f.dst,
        )));
    m
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_msg(r: &RouteEntry) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.ip(), r.dst.prefix())
        .gateway(r.gateway)
        .output_interface(r.oif)
        // What flannel's routes carry (netlink's default when no protocol is given).
        .protocol(RouteProtocol::Boot);
    if r.onlink {
        b = b.onlink();
    }
    b.build()
}

fn neigh_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
            Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        _ => None,
    })
}

fn neigh_mac(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(b);
            Some(mac)
        }
        _ => None,
    })
}
