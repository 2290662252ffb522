//! Pod routing (`--pod-routing`) on a 2-node test bed: pod-to-pod TCP between nodes
//! works and no longer crosses the pods' bridge (routes via the uplink, as host-gw's),
//! while VXLAN traffic keeps the kernel path; a pod replaced by a new one with the same address (new veth, new MAC,
//! nothing sent yet) is still reached; turning the option off and `cleanup` take the
//! filters away. Needs root.

mod common;
mod fake_api;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use common::*;
use fake_api::FakeApi;
use serde_json::json;
use skein_testbed::Daemon;

/// `skein-proxy apply` (no Services) on node `i`, with `extra` flags.
fn apply(c: &Cluster, i: usize, extra: &[&str]) -> serde_json::Value {
    let file = c.bed.state_dir().join(format!("empty-node{i}.json"));
    std::fs::write(&file, json!({ "services": [] }).to_string()).unwrap();
    let pin = c.pin_dir(i);
    let mut args = vec![
        "apply",
        "--node-name",
        "nodeX",
        "--pin-dir",
        pin.to_str().unwrap(),
        "--from-file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = c.proxy(i, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("apply output {out:?}: {e}"))
}

const ROUTING: &[&str] = &["--pod-routing", "--cluster-cidr", "10.244.0.0/16"];

/// Packets `dev` of node `i` has received (`rx`) or sent (`tx`).
fn packets(c: &Cluster, i: usize, dev: &str, dir: &str) -> u64 {
    let out = c
        .bed
        .node(i)
        .run("ip", &["-s", "-j", "link", "show", dev])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"][dir]["packets"].as_u64().unwrap()
}

/// Packets the node's bridge received from its pods plus packets it sent to them (what
/// pod routing takes off it: the pods' packets out and the packets for them).
fn bridge_packets(c: &Cluster, i: usize) -> u64 {
    packets(c, i, "cni0", "rx") + packets(c, i, "cni0", "tx")
}

/// Packets node `i`'s bridge carried (both ways) while `f` ran.
fn bridged_during(c: &Cluster, i: usize, f: impl FnOnce()) -> u64 {
    let before = bridge_packets(c, i);
    f();
    bridge_packets(c, i) - before
}

/// Adds pod 1 on node `i`, serving TCP on 8080 as `identity`; its index and address.
fn serving_pod(c: &mut Cluster, i: usize, identity: &str) -> (usize, Ipv4Addr) {
    let p = c.add_pod(i, 1);
    let ip = c.pods[p].ip;
    serve_tcp(&c.pods[p].netns, SocketAddr::from((ip, 8080)), identity);
    (p, ip)
}

/// `n` connections from pod `from` to `to`:8080; every one answers with `identity`.
fn connect(c: &Cluster, from: usize, to: Ipv4Addr, n: usize, identity: &str) {
    let lines = c.client(from, &["tcp", &to.to_string(), "8080", &n.to_string()]);
    assert_eq!(lines.len(), n, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with(identity), "pod{from} -> {to}: {l}");
    }
}

/// Replaces the nodes' plain routes between pod subnets with flannel's VXLAN layout, as
/// flanneld makes it: `flannel.1` (VNI 1, port 8472, learning off, address
/// `<subnet>.0/32`), and per peer a permanent neighbour, an FDB entry and an onlink route.
fn vxlan_overlay(c: &Cluster, nodes: usize) {
    let mac = |i: usize| {
        let out = c
            .bed
            .node(i)
            .run("ip", &["-j", "link", "show", "flannel.1"])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["address"].as_str().unwrap().to_owned()
    };
    for i in 1..=nodes {
        let n = c.bed.node(i);
        let local = n.addr.to_string();
        n.run(
            "ip",
            &[
                "link",
                "add",
                "flannel.1",
                "type",
                "vxlan",
                "id",
                "1",
                "dstport",
                "8472",
                "local",
                &local,
                "dev",
                "eth0",
                "nolearning",
            ],
        )
        .unwrap();
        n.run(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.244.{i}.0/32"),
                "dev",
                "flannel.1",
            ],
        )
        .unwrap();
        n.run("ip", &["link", "set", "flannel.1", "mtu", "1450", "up"])
            .unwrap();
    }
    for i in 1..=nodes {
        let n = c.bed.node(i);
        for k in (1..=nodes).filter(|k| *k != i) {
            let (gw, peer_mac) = (format!("10.244.{k}.0"), mac(k));
            let peer = c.bed.node(k).addr.to_string();
            n.run(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &gw,
                    "lladdr",
                    &peer_mac,
                    "dev",
                    "flannel.1",
                    "nud",
                    "permanent",
                ],
            )
            .unwrap();
            n.run(
                "bridge",
                &["fdb", "append", &peer_mac, "dev", "flannel.1", "dst", &peer],
            )
            .unwrap();
            n.run(
                "ip",
                &[
                    "route",
                    "replace",
                    &format!("{gw}/24"),
                    "via",
                    &gw,
                    "dev",
                    "flannel.1",
                    "onlink",
                ],
            )
            .unwrap();
        }
    }
}

fn tc_filters(c: &Cluster, i: usize, dev: &str) -> String {
    c.bed
        .node(i)
        .run("tc", &["filter", "show", "dev", dev, "ingress"])
        .unwrap_or_default()
}

#[test]
fn pod_traffic_skips_the_bridge_and_a_replaced_pod_is_still_reached() {
    let mut c = Cluster::start(2);
    let (p1, _) = serving_pod(&mut c, 1, "pod1");
    let (p2, ip2) = serving_pod(&mut c, 2, "pod2");

    // Off: the packets cross node2's bridge (both ways).
    for i in 1..=2 {
        let out = apply(&c, i, &[]);
        assert!(out["pod_ports"].is_null(), "{out}");
    }
    let off = bridged_during(&c, 2, || connect(&c, p1, ip2, 10, "pod2"));
    assert!(
        off >= 30,
        "without pod routing node2's bridge saw only {off} packets"
    );

    // On: the pods' veths carry the program, pod2 is learned from its first reply, and
    // then its traffic (both ways) no longer crosses node2's bridge: pod2's packets leave
    // its veth straight for the uplink, and the packets for it go from the uplink
    // straight into its namespace.
    for i in 1..=2 {
        let out = apply(&c, i, ROUTING);
        assert_eq!(out["pod_ports"], 1, "node{i}: {out}");
    }
    assert!(tc_filters(&c, 2, "vn2p1").contains("skein_tc_pod"));
    connect(&c, p1, ip2, 2, "pod2");
    let on = bridged_during(&c, 2, || connect(&c, p1, ip2, 10, "pod2"));
    assert!(
        on < 5,
        "with pod routing node2's bridge still saw {on} packets (off: {off})"
    );
    // And the other way round.
    connect(&c, p2, c.pods[p1].ip, 5, "pod1");

    // pod2 goes; a new pod takes its address on a new veth with a new MAC and has sent
    // nothing yet: the learned entry names a veth that is gone, so traffic takes the
    // bridge until the new pod answers (and is learned).
    // (Its listener thread keeps the old namespace alive, so the veth is deleted by hand,
    // as a CNI DEL does.)
    let old = c.pods.remove(p2);
    c.bed.node(2).run("ip", &["link", "del", "vn2p1"]).unwrap();
    drop(old.netns);
    skein_netns::NetNs::delete_named(&format!("{}-{}", c.bed.prefix(), old.name)).unwrap();
    let (_, new_ip) = serving_pod(&mut c, 2, "new-pod2");
    assert_eq!(new_ip, ip2);
    // The node's neighbour entry would still name the old MAC for a few seconds, on any
    // data path; the test looks at the learned entry, not at ARP ageing.
    c.bed
        .node(2)
        .run("ip", &["neigh", "flush", "dev", "cni0"])
        .unwrap();
    // The proxy that attaches to new pods is the daemon; `apply` attaches once.
    let out = apply(&c, 2, ROUTING);
    assert_eq!(out["pod_ports"], 1, "{out}");
    connect(&c, p1, ip2, 3, "new-pod2");
    let relearned = bridged_during(&c, 2, || connect(&c, p1, ip2, 10, "new-pod2"));
    assert!(
        relearned < 5,
        "the new pod was not learned: {relearned} packets on the bridge"
    );

    // Off again: the filters go, the bridge carries the traffic, and it still works.
    apply(&c, 2, &[]);
    assert!(!tc_filters(&c, 2, "vn2p1").contains("skein_tc_pod"));
    assert!(bridged_during(&c, 2, || connect(&c, p1, ip2, 5, "new-pod2")) >= 15);

    // cleanup takes node1's filter away too.
    assert!(tc_filters(&c, 1, "vn1p1").contains("skein_tc_pod"));
    let pin = c.pin_dir(1);
    c.proxy(
        1,
        &[
            "cleanup",
            "--node-name",
            "nodeX",
            "--pin-dir",
            pin.to_str().unwrap(),
        ],
    );
    assert!(!tc_filters(&c, 1, "vn1p1").contains("skein_tc_pod"));
}

/// Over flannel's VXLAN overlay pod routing stays out of the way: the routes name
/// `flannel.1`, not the uplink, so the traffic keeps the kernel path (the bridge, the
/// overlay) and works.
#[test]
fn pod_routing_leaves_the_vxlan_overlay_to_the_kernel() {
    let mut c = Cluster::start(2);
    vxlan_overlay(&c, 2);
    let (p1, _) = serving_pod(&mut c, 1, "pod1");
    let (p2, ip2) = serving_pod(&mut c, 2, "pod2");
    let vxlan_rx = |c: &Cluster, i: usize| packets(c, i, "flannel.1", "rx");
    for i in 1..=2 {
        let out = apply(&c, i, ROUTING);
        assert_eq!(out["pod_ports"], 1, "node{i}: {out}");
    }
    connect(&c, p1, ip2, 2, "pod2");
    connect(&c, p2, c.pods[p1].ip, 2, "pod1");
    let before = (bridge_packets(&c, 2), vxlan_rx(&c, 2));
    connect(&c, p1, ip2, 10, "pod2");
    let bridged = bridge_packets(&c, 2) - before.0;
    assert!(
        bridged >= 60,
        "node2's bridge saw only {bridged} packets: vxlan traffic was routed past it"
    );
    assert!(
        vxlan_rx(&c, 2) - before.1 >= 30,
        "the traffic did not take the overlay"
    );
}

/// The daemon with `--pod-routing` on a node without pods yet: it waits for the bridge
/// (the CNI plugin makes it with the first pod) instead of failing, a pod started after
/// it is picked up within seconds (its traffic leaves the bridge), and `--cleanup` on
/// SIGTERM takes the filters away.
#[test]
fn the_daemon_routes_pods_started_after_it_and_cleans_up() {
    let mut c = Cluster::start(2);
    let (p1, ip1) = serving_pod(&mut c, 1, "pod1");
    let node2 = c.bed.node(2);
    node2.run("ip", &["link", "del", "cni0"]).unwrap();
    let listener = c
        .bed
        .node(2)
        .in_netns(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let api = FakeApi::serve(listener);
    let mut cmd = c.bed.node(2).command(PROXY).unwrap();
    cmd.args(["--node-name", "node2", "--api-server"])
        .arg(format!("http://{}", api.addr))
        .arg("--pin-dir")
        .arg(c.pin_dir(2))
        .args(["--metrics-port", "0", "--cleanup"])
        .args(ROUTING)
        .env("RUST_LOG", "info");
    let log = c.bed.node(2).dirs.log_dir.join("skein-proxy-routing.log");
    let mut d = Daemon::spawn("skein-proxy", cmd, &log).unwrap();
    let wait_log = |d: &Daemon, what: &str| {
        let started = std::time::Instant::now();
        while !d.log_tail(50).contains(what) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {what:?} in the skein-proxy log:\n{}",
                d.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_log(&d, "bridge cni0 does not exist");
    assert!(d.is_running(), "{}", d.log_tail(40));

    // The first pod's CNI ADD makes the bridge.
    let node2 = c.bed.node(2);
    node2
        .run("ip", &["link", "add", "cni0", "type", "bridge"])
        .unwrap();
    node2
        .run("ip", &["addr", "add", "10.244.2.1/24", "dev", "cni0"])
        .unwrap();
    node2.run("ip", &["link", "set", "cni0", "up"]).unwrap();
    wait_log(&d, "pod routing on");

    // A pod started after the daemon.
    let (p2, ip2) = serving_pod(&mut c, 2, "pod2");
    wait_for(
        "the daemon to attach to the new pod's veth",
        Duration::from_secs(10),
        || {
            tc_filters(&c, 2, "vn2p1")
                .contains("skein_tc_pod")
                .then_some(())
        },
    );
    connect(&c, p2, ip1, 2, "pod1");
    let on = bridged_during(&c, 2, || connect(&c, p1, ip2, 10, "pod2"));
    assert!(
        on < 5,
        "node2's bridge still saw {on} packets; skein-proxy log:\n{}",
        d.log_tail(40)
    );

    d.stop();
    assert!(!tc_filters(&c, 2, "vn2p1").contains("skein_tc_pod"));
    assert!(!c.pin_dir(2).exists(), "pin dir removed by --cleanup");
    connect(&c, p1, ip2, 3, "pod2");
}

#[test]
fn pod_routing_needs_a_cluster_cidr_and_an_existing_bridge() {
    let c = Cluster::start(1);
    let pin = c.pin_dir(1);
    let file = c.bed.state_dir().join("empty.json");
    std::fs::write(&file, r#"{"services":[]}"#).unwrap();
    // `apply` with `extra`, which must fail: its stderr.
    let refused = |extra: &[&str]| {
        let mut cmd = c.bed.node(1).command(PROXY).unwrap();
        cmd.args(["apply", "--node-name", "n", "--pin-dir"])
            .arg(&pin)
            .arg("--from-file")
            .arg(&file)
            .args(extra);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "apply {extra:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&["--pod-routing"]);
    assert!(err.contains("--cluster-cidr"), "{err}");
    let err = refused(&["--pod-routing", "--cluster-cidr", "10.244.0.0/40"]);
    assert!(
        err.contains("--cluster-cidr") && err.contains("10.244.0.0/40"),
        "{err}"
    );
    let mut extra = ROUTING.to_vec();
    extra.extend(["--pod-bridge", "nosuchbr0"]);
    let err = refused(&extra);
    assert!(err.contains("bridge nosuchbr0 does not exist"), "{err}");
}
