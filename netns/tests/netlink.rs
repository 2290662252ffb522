//! Privileged: the synchronous netlink module against the real kernel, in throwaway
//! namespaces.

use std::net::IpAddr;

use skein_netns::NetNs;
use skein_netns::netlink::{Address, Netlink, Route};

struct Scratch(Vec<NetNs>);
impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in self.0.drain(..) {
            let path = ns.path().to_owned();
            drop(ns);
            let _ = NetNs::delete_at(&path);
        }
    }
}

#[test]
fn bridge_veth_into_other_netns_addresses_and_routes() {
    // An empty test bed (no hosts) gives a unique prefix, takes part in the machine-wide
    // bed lock, and sweeps both namespaces even if this test dies half-way.
    let bed = skein_testbed::TestBed::start(skein_testbed::Config {
        nodes: 0,
        outside: false,
        etcd: skein_testbed::EtcdMode::None,
        cgroups: false,
        prefix: None,
    })
    .expect("test bed");
    let host = NetNs::create(&format!("{}-host", bed.prefix())).expect("create host netns");
    let pod = NetNs::create(&format!("{}-pod", bed.prefix())).expect("create pod netns");
    let scratch = Scratch(vec![host, pod]);
    let (host, pod) = (&scratch.0[0], &scratch.0[1]);

    let mut h = Netlink::open_in(host).expect("host socket");
    let mut p = Netlink::open_in(pod).expect("pod socket");

    h.add_bridge("br-t", Some(1400)).expect("add bridge");
    let err = h.add_bridge("br-t", None).expect_err("second bridge");
    assert!(err.is_exists(), "{err}");
    let br = h.link("br-t").unwrap().expect("bridge listed");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);
    h.set_up(br.index).unwrap();

    h.add_veth(
        "veth-t",
        "eth0",
        Some(std::os::fd::AsFd::as_fd(pod.file())),
        Some(1400),
    )
    .expect("add veth");
    let v = h.link("veth-t").unwrap().expect("host end");
    h.set_master(v.index, br.index).unwrap();
    h.set_up(v.index).unwrap();
    h.set_hairpin(v.index, true).expect("hairpin");
    let v = h.link("veth-t").unwrap().unwrap();
    assert_eq!(v.hairpin, Some(true));
    assert_eq!(v.master, Some(br.index));
    assert!(v.up);

    let e = p.link("eth0").unwrap().expect("peer is in the pod netns");
    assert_eq!(e.mtu, 1400);
    assert!(
        h.link("eth0").unwrap().is_none(),
        "peer must not be in host"
    );
    let lo = p.link("lo").unwrap().unwrap();
    p.set_up(lo.index).unwrap();
    p.set_up(e.index).unwrap();

    let gw: IpAddr = "10.99.0.1".parse().unwrap();
    let ip: IpAddr = "10.99.0.2".parse().unwrap();
    h.add_address(&Address {
        index: br.index,
        addr: gw,
        prefix_len: 24,
    })
    .unwrap();
    p.add_address(&Address {
        index: e.index,
        addr: ip,
        prefix_len: 24,
    })
    .unwrap();
    let addrs = p.addresses(Some(e.index)).unwrap();
    assert!(
        addrs.iter().any(|a| a.addr == ip && a.prefix_len == 24),
        "{addrs:?}"
    );

    let default = Route {
        dst: "0.0.0.0".parse().unwrap(),
        dst_len: 0,
        gateway: Some(gw),
        oif: Some(e.index),
        link_scope: false,
    };
    p.add_route(&default, false).expect("default route");
    assert!(p.add_route(&default, false).unwrap_err().is_exists());
    let routes = p.routes().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.dst_len == 0 && r.gateway == Some(gw)),
        "{routes:?}"
    );

    let v6: IpAddr = "fd00:99::2".parse().unwrap();
    p.add_address(&Address {
        index: e.index,
        addr: v6,
        prefix_len: 64,
    })
    .unwrap();
    assert!(
        p.addresses(Some(e.index))
            .unwrap()
            .iter()
            .any(|a| a.addr == v6)
    );

    // TCP from the pod to the bridge address crosses the veth.
    let listener = host
        .run(|| std::net::TcpListener::bind("10.99.0.1:0"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    pod.run(|| {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::new(gw, port),
            std::time::Duration::from_secs(3),
        )
    })
    .unwrap()
    .expect("pod reaches the bridge address over the veth");

    p.del_route(&default).unwrap();
    assert!(h.del_link_by_name("veth-t").unwrap());
    assert!(!h.del_link_by_name("veth-t").unwrap());
    assert!(
        p.link("eth0").unwrap().is_none(),
        "deleting one end removes the peer"
    );
}
