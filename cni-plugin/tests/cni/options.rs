//! ipMasq, delegated IPAM, IPv6 range sets.

use std::net::{IpAddr, SocketAddr};

use serde_json::json;

use crate::driver::*;

#[test]
fn ip_masq_makes_pod_traffic_leave_with_the_node_address() {
    let bed = bed(1, true);
    let node = bed.node(1);
    // flanneld not masquerading: the plugin does it (flannel's rule).
    write_subnet_file(node, false);
    let conf = flannel_conf(node, "1.0.0");
    let pod = Pod::new(&bed, "masq");
    let r = cni(node, &pod.call("ADD"), &conf).ok();

    let target = SocketAddr::new(skein_testbed::OUTSIDE_ADDR.into(), 7300);
    let server = serve_once(bed.outside().listen_tcp(target).unwrap());
    ping_pong(pod.connect(target).expect("pod reaches the outside host"));
    let peer = server.join().unwrap().unwrap();
    assert_eq!(
        peer.ip(),
        IpAddr::from(node.addr),
        "source must be the node's address"
    );

    let map = node
        .run("nft", &["list", "map", "ip", "skein-cni", "pods"])
        .unwrap();
    assert!(map.contains(&pod_ip(&r).to_string()), "{map}");
    cni(node, &pod.call("DEL"), &conf).ok();
    let map = node
        .run("nft", &["list", "map", "ip", "skein-cni", "pods"])
        .unwrap();
    assert!(!map.contains(&pod_ip(&r).to_string()), "{map}");
    assert_no_veths(node);
}

#[test]
fn no_masquerade_when_flanneld_does_it() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let pod = Pod::new(&bed, "nomasq");
    cni(node, &pod.call("ADD"), &flannel_conf(node, "1.0.0")).ok();
    assert!(
        node.run("nft", &["list", "table", "ip", "skein-cni"])
            .is_err(),
        "no masquerade table expected"
    );
    cni(node, &pod.call("DEL"), &flannel_conf(node, "1.0.0")).ok();
}

#[test]
fn other_ipam_types_are_delegated_to_the_plugin_in_cni_path() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "static-net", "type": "skein-cni", "hairpinMode": true,
        "ipam": {"type": "static", "addresses": [{"address": "10.244.1.77/24", "gateway": GATEWAY}]},
    });
    let pod = Pod::new(&bed, "dlg");
    let r = cni(node, &pod.call("ADD"), &conf).ok();
    assert_eq!(r["ips"][0]["address"], "10.244.1.77/24");
    assert_eq!(r["ips"][0]["interface"], 2);
    let host_end = r["interfaces"][1]["name"].as_str().unwrap();
    let link = skein_netns::netlink::Netlink::open_in(&node.netns)
        .unwrap()
        .link(host_end)
        .unwrap()
        .expect("host end on the node");
    assert_eq!(
        link.hairpin,
        Some(true),
        "hairpinMode sets the bridge port's hairpin flag"
    );
    let gw: SocketAddr = format!("{GATEWAY}:7400").parse().unwrap();
    let server = serve_once(node.listen_tcp(gw).unwrap());
    ping_pong(
        pod.connect(gw)
            .expect("pod with a delegated address reaches the gateway"),
    );
    server.join().unwrap().unwrap();
    cni(node, &pod.call("DEL"), &conf).ok();
    assert_no_veths(node);

    let mut missing = conf.clone();
    missing["ipam"]["type"] = json!("no-such-ipam");
    let msg = cni(node, &pod.call("ADD"), &missing).err(7);
    assert!(msg.contains("no-such-ipam"), "{msg}");
    assert_eq!(pod.links(), vec!["lo"]);
}

#[test]
fn ipv4_and_ipv6_range_sets_give_dual_stack_pods() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = json!({
        "cniVersion": "1.1.0", "name": "dual", "type": "skein-cni", "mtu": 1400,
        "ipam": {
            "dataDir": node.dirs.ipam_data_dir,
            "ranges": [
                [{"subnet": "10.244.1.0/24"}],
                [{"subnet": "fd00:244:1::/64", "rangeStart": "fd00:244:1::10", "rangeEnd": "fd00:244:1::20"}]
            ]
        },
    });
    let p1 = Pod::new(&bed, "d1");
    let p2 = Pod::new(&bed, "d2");
    let r1 = cni(node, &p1.call("ADD"), &conf).ok();
    let r2 = cni(node, &p2.call("ADD"), &conf).ok();
    assert_eq!(r1["ips"][1]["address"], "fd00:244:1::10/64");
    assert_eq!(r1["ips"][1]["gateway"], "fd00:244:1::1");
    assert_eq!(r2["ips"][1]["address"], "fd00:244:1::11/64");
    assert_eq!(r1["interfaces"][2]["mtu"], 1400);
    let routes = r1["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({"dst": "::/0", "gw": "fd00:244:1::1"})),
        "{routes:?}"
    );
    let files = ipam_files(node, "dual");
    assert!(
        files.contains(&"fd00:244:1::10".to_owned())
            && files.contains(&"last_reserved_ip.1".to_owned()),
        "{files:?}"
    );

    let v6: IpAddr = "fd00:244:1::11".parse().unwrap();
    pod_to_pod(&p1, &p2, SocketAddr::new(v6, 7500));
    let gw6: SocketAddr = "[fd00:244:1::1]:7501".parse().unwrap();
    let server = serve_once(node.listen_tcp(gw6).unwrap());
    ping_pong(p1.connect(gw6).expect("pod reaches its IPv6 gateway"));
    server.join().unwrap().unwrap();

    for p in [&p1, &p2] {
        cni(node, &p.call("DEL"), &conf).ok();
    }
    assert_no_allocations(node, "dual");
    assert_no_veths(node);
}

#[test]
fn mtu_defaults_to_the_default_route_device() {
    let bed = bed(1, false);
    let node = bed.node(1);
    {
        // Give the node an uplink MTU of 1380 and a default route through it.
        let mut nl = skein_netns::netlink::Netlink::open_in(&node.netns).unwrap();
        let eth0 = nl.link("eth0").unwrap().unwrap();
        nl.set_mtu(eth0.index, 1380).unwrap();
        nl.add_route(
            &skein_netns::netlink::Route {
                dst: "0.0.0.0".parse().unwrap(),
                dst_len: 0,
                gateway: Some("198.51.100.1".parse().unwrap()),
                oif: Some(eth0.index),
                link_scope: false,
            },
            false,
        )
        .unwrap();
    }
    let conf = json!({
        "cniVersion": "1.1.0", "name": "mtu", "type": "skein-cni",
        "ipam": {"subnet": "10.244.1.0/24", "dataDir": node.dirs.ipam_data_dir},
    });
    let pod = Pod::new(&bed, "mtu");
    let r = cni(node, &pod.call("ADD"), &conf).ok();
    assert_eq!(r["interfaces"][2]["mtu"], 1380, "{r}");
    let inside = skein_netns::netlink::Netlink::open_in(pod.ns())
        .unwrap()
        .link("eth0")
        .unwrap()
        .unwrap();
    assert_eq!(inside.mtu, 1380);
    cni(node, &pod.call("DEL"), &conf).ok();
    assert_no_veths(node);
}

#[test]
fn one_pod_on_two_networks_with_two_bridges() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let a = flannel_conf(node, "1.0.0");
    let b = json!({
        "cniVersion": "1.0.0", "name": "second", "type": "skein-cni", "bridge": "cni1",
        "isDefaultGateway": false,
        "ipam": {"subnet": "10.250.0.0/24", "dataDir": node.dirs.ipam_data_dir},
    });
    let pod = Pod::new(&bed, "multi");
    let ra = cni(node, &pod.call("ADD"), &a).ok();
    let net1 = Call {
        ifname: "net1",
        ..pod.call("ADD")
    };
    let rb = cni(node, &net1, &b).ok();
    assert_eq!(rb["ips"][0]["address"], "10.250.0.2/24");
    assert_ne!(
        ra["interfaces"][1]["name"], rb["interfaces"][1]["name"],
        "one host veth per interface"
    );
    let routes = rb["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        routes.is_empty(),
        "no default route on the second network: {routes:?}"
    );
    let mut links = pod.links();
    links.sort();
    assert_eq!(links, vec!["eth0", "lo", "net1"]);
    // Both gateways answer.
    for (gw, port) in [(GATEWAY, 7600), ("10.250.0.1", 7601)] {
        let addr: SocketAddr = format!("{gw}:{port}").parse().unwrap();
        let server = serve_once(node.listen_tcp(addr).unwrap());
        ping_pong(
            pod.connect(addr)
                .unwrap_or_else(|e| panic!("pod reaches {addr}: {e}")),
        );
        server.join().unwrap().unwrap();
    }
    cni(
        node,
        &Call {
            command: "DEL",
            ..net1
        },
        &b,
    )
    .ok();
    assert_eq!(pod.links().len(), 2, "DEL of net1 leaves eth0");
    cni(node, &pod.call("DEL"), &a).ok();
    assert_no_allocations(node, "cbr0");
    assert_no_allocations(node, "second");
    let left: Vec<String> = node_links(node)
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
