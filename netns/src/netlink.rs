//! Synchronous rtnetlink: links, addresses and routes, over one socket per namespace.
//!
//! ```text
//!   Netlink::open()        socket in the calling thread's namespace
//!   Netlink::open_in(&ns)  socket made inside `ns` (it stays bound to `ns` for its life)
//!        │
//!        ├── link(name) / links()            RTM_GETLINK
//!        ├── add_bridge / add_veth(peer in another netns) / set_up / set_master / set_mtu
//!        ├── set_hairpin / del_link          RTM_NEWLINK, RTM_SETLINK, RTM_DELLINK
//!        ├── addresses / add_address / del_address
//!        └── routes / add_route / del_route
//! ```
//!
//! No async runtime and no `ip` exec: each call sends one request and reads the kernel's
//! answer on the same thread, which keeps a short-lived program (a CNI plugin) fast.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::{NetNs, NetNsGuard};

/// How long one answer from the kernel may take before the call fails.
const RECV_TIMEOUT_SECS: i64 = 30;

/// A netlink failure: the operation, and the kernel's (or the socket's) error.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetlinkError {
    /// What was being done, naming the object (`add veth veth1a2b`).
    pub op: String,
    /// The underlying error; `raw_os_error()` holds the kernel's errno.
    pub source: io::Error,
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
    /// True when the object already existed (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
    /// True when the object was not there (ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}

/// Result alias for netlink calls.
pub type NlResult<T> = std::result::Result<T, NetlinkError>;

fn nl_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError { op, source }
}

/// What this module reports about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Index of the master (bridge) it is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, ...), when the driver reports one.
    pub kind: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// Hairpin mode, for a bridge port.
    pub hairpin: Option<bool>,
}

impl Link {
    /// The hardware address as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// Link index.
    pub index: u32,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// A route in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network (0.0.0.0 or :: with length 0 for a default route).
    pub dst: IpAddr,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Route scope is link (a connected network, no gateway).
    pub link_scope: bool,
}

/// A veth pair to create with [`Netlink::add_veth_with`].
#[derive(Debug, Clone, Copy)]
pub struct VethOptions<'a> {
    /// Name of the local end.
    pub name: &'a str,
    /// Name of the peer.
    pub peer_name: &'a str,
    /// Namespace the peer is created in (`None`: this one).
    pub peer_netns: Option<BorrowedFd<'a>>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// Master (bridge) index for the local end.
    pub master: Option<u32>,
    /// Bring the local end up.
    pub up: bool,
}

/// A route netlink socket bound to one network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's namespace.
    pub fn open() -> NlResult<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl_err("open netlink socket"))?;
        socket.bind_auto().map_err(nl_err("bind netlink socket"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(nl_err("connect netlink socket"))?;
        // A kernel answer never takes this long; a stuck call fails instead of hanging.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0),
        )
        .map_err(|e| nl_err("set netlink receive timeout")(e.into()))?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Opens a socket inside `ns` (entering it on this thread only for the socket call).
    pub fn open_in(ns: &NetNs) -> NlResult<Netlink> {
        let _guard = NetNsGuard::enter(ns).map_err(|e| NetlinkError {
            op: format!("enter netns {}", ns.path().display()),
            source: io::Error::other(e.to_string()),
        })?;
        Self::open()
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.socket.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Sends a request and reads answers until the kernel's ACK or DONE; returns the
    /// data messages.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, flags)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let n = loop {
                match self.socket.recv(&mut &mut self.buf[..], 0) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let len = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                    .length() as usize;
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        if e.code.is_some() {
                            return Err(e.to_io());
                        }
                        if !dump {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16, op: String) -> NlResult<()> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(drop)
            .map_err(nl_err(op))
    }

    // ---- links ----

    /// Every link in the namespace.
    pub fn links(&mut self) -> NlResult<Vec<Link>> {
        let msgs = self
            .exchange(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(nl_err("list links"))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, or `None` when there is none.
    pub fn link(&mut self, name: &str) -> NlResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.exchange(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(format!("get link {name}"))(e)),
        }
    }

    /// Creates a bridge (down). Fails with EEXIST when the name is taken.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> NlResult<()> {
        self.add_bridge_with_mac(name, mtu, None)
    }

    /// Creates a bridge (down) with a fixed hardware address: the kernel then never
    /// changes it as ports come and go (a bridge without one takes its lowest port's).
    pub fn add_bridge_with_mac(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add bridge {name}"),
        )
    }

    /// Creates a veth pair: `name` here, `peer_name` directly inside the namespace
    /// `peer_netns` (or here when `None`), both with `mtu`.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_netns: Option<BorrowedFd<'_>>,
        mtu: Option<u32>,
    ) -> NlResult<()> {
        self.add_veth_with(&VethOptions {
            name,
            peer_name,
            peer_netns,
            mtu,
            master: None,
            up: false,
        })
    }

    /// Creates a veth pair in one request: the local end optionally already enslaved to
    /// `master` and up, the peer inside `peer_netns`.
    pub fn add_veth_with(&mut self, o: &VethOptions<'_>) -> NlResult<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(o.peer_name.to_owned()));
        if let Some(fd) = o.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(o.name.to_owned()));
        if let Some(mtu) = o.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = o.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        if o.up {
            msg.header.flags |= LinkFlags::Up;
            msg.header.change_mask |= LinkFlags::Up;
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add veth {} (peer {})", o.name, o.peer_name),
        )
    }

    fn set_link(
        &mut self,
        index: u32,
        op: String,
        f: impl FnOnce(&mut LinkMessage),
    ) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        f(&mut msg);
        self.ack(RouteNetlinkMessage::NewLink(msg), 0, op)
    }

    /// Brings a link up.
    pub fn set_up(&mut self, index: u32) -> NlResult<()> {
        self.set_link(index, format!("set link {index} up"), |m| {
            m.header.flags |= LinkFlags::Up;
            m.header.change_mask |= LinkFlags::Up;
        })
    }

    /// Enslaves a link to a master (a bridge).
    pub fn set_master(&mut self, index: u32, master: u32) -> NlResult<()> {
        self.set_link(index, format!("set link {index} master {master}"), |m| {
            m.attributes.push(LinkAttribute::Controller(master));
        })
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> NlResult<()> {
        self.set_link(index, format!("set link {index} mtu {mtu}"), |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        })
    }

    /// Turns hairpin mode of a bridge port on or off.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> NlResult<()> {
        self.set_link(index, format!("set hairpin {on} on link {index}"), |m| {
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                    on,
                )])),
            ]));
        })
    }

    /// Deletes a link (both ends, for a veth).
    pub fn del_link(&mut self, index: u32) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(
            RouteNetlinkMessage::DelLink(msg),
            0,
            format!("delete link {index}"),
        )
    }

    /// Deletes the link called `name`; returns false when there was none.
    pub fn del_link_by_name(&mut self, name: &str) -> NlResult<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.ack(
            RouteNetlinkMessage::DelLink(msg),
            0,
            format!("delete link {name}"),
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- addresses ----

    /// Addresses of one family (`None`: all), optionally of one link.
    pub fn addresses(&mut self, index: Option<u32>) -> NlResult<Vec<Address>> {
        let msgs = self
            .exchange(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(nl_err("list addresses"))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => to_address(&a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    fn addr_msg(a: &Address) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = family(a.addr);
        msg.header.prefix_len = a.prefix_len;
        msg.header.index = a.index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(a.addr));
        msg.attributes.push(AddressAttribute::Address(a.addr));
        msg
    }

    /// Adds an address (IPv6 without duplicate address detection, so it is usable at
    /// once). Fails with EEXIST when present.
    pub fn add_address(&mut self, a: &Address) -> NlResult<()> {
        let mut msg = Self::addr_msg(a);
        match a.addr {
            IpAddr::V4(v4) => {
                if a.prefix_len < 31 {
                    let mask = u32::MAX.checked_shr(u32::from(a.prefix_len)).unwrap_or(0);
                    let bcast = std::net::Ipv4Addr::from(u32::from(v4) | mask);
                    msg.attributes.push(AddressAttribute::Broadcast(bcast));
                }
            }
            IpAddr::V6(_) => msg.header.flags |= AddressHeaderFlags::Nodad,
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            format!(
                "add address {}/{} on link {}",
                a.addr, a.prefix_len, a.index
            ),
        )
    }

    /// Removes an address.
    pub fn del_address(&mut self, a: &Address) -> NlResult<()> {
        self.ack(
            RouteNetlinkMessage::DelAddress(Self::addr_msg(a)),
            0,
            format!(
                "delete address {}/{} on link {}",
                a.addr, a.prefix_len, a.index
            ),
        )
    }

    // ---- routes ----

    /// Routes of the main table.
    pub fn routes(&mut self) -> NlResult<Vec<Route>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = fam;
            let msgs = self
                .exchange(
                    RouteNetlinkMessage::GetRoute(req),
                    NLM_F_REQUEST | NLM_F_DUMP,
                )
                .map_err(nl_err("list routes"))?;
            out.extend(msgs.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => to_route(&r),
                _ => None,
            }));
        }
        Ok(out)
    }

    fn route_msg(r: &Route) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(r.dst);
        msg.header.destination_prefix_length = r.dst_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if r.link_scope {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if r.dst_len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
        }
        if let Some(gw) = r.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = r.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        msg
    }

    /// Adds a route; with `replace`, an existing route to the same destination is
    /// replaced, otherwise EEXIST is an error.
    pub fn add_route(&mut self, r: &Route, replace: bool) -> NlResult<()> {
        let how = if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        self.ack(
            RouteNetlinkMessage::NewRoute(Self::route_msg(r)),
            NLM_F_CREATE | how,
            format!("add route {}", describe_route(r)),
        )
    }

    /// Deletes a route.
    pub fn del_route(&mut self, r: &Route) -> NlResult<()> {
        self.ack(
            RouteNetlinkMessage::DelRoute(Self::route_msg(r)),
            0,
            format!("delete route {}", describe_route(r)),
        )
    }
}

/// `10.0.0.0/8 via 10.1.0.1 dev 3` for messages.
pub fn describe_route(r: &Route) -> String {
    let mut s = format!("{}/{}", r.dst, r.dst_len);
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {oif}"));
    }
    s
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn to_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mtu: 0,
        master: None,
        kind: None,
        up: l.header.flags.contains(LinkFlags::Up),
        mac: Vec::new(),
        hairpin: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(c) => link.master = Some(*c),
            LinkAttribute::Address(mac) => link.mac = mac.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::HairpinMode(on) = p {
                                    link.hairpin = Some(*on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn to_address(a: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    Some(Address {
        index: a.header.index,
        addr: local.or(address)?,
        prefix_len: a.header.prefix_len,
    })
}

fn to_route(r: &RouteMessage) -> Option<Route> {
    if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
        return None;
    }
    let unspecified = match r.header.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
        _ => return None,
    };
    let mut route = Route {
        dst: unspecified,
        dst_len: r.header.destination_prefix_length,
        gateway: None,
        oif: None,
        link_scope: r.header.scope == RouteScope::Link,
    };
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Destination(d) => route.dst = ip(d)?,
            RouteAttribute::Gateway(g) => route.gateway = ip(g),
            RouteAttribute::Oif(o) => route.oif = Some(*o),
            _ => {}
        }
    }
    Some(route)
}
