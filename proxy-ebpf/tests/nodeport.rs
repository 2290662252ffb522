//! NodePort at tc on the node's uplink, on a 2-node test bed with an `outside` client:
//! local and remote backends (SNAT + reverse NAT), externalTrafficPolicy: Local keeping
//! the client address, Maglev picking the same backend on every node, conntrack keeping
//! a stream on its backend while endpoints scale, and pins keeping it across a restart.
//! Needs root.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::json;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + i as u8)
}

/// `(identity, address the backend saw)` from one connection of the outside client.
fn ask(c: &Cluster, node: usize, port: u16) -> (String, String) {
    let lines = c.outside_client(&["tcp", &node_ip(node).to_string(), &port.to_string(), "1"]);
    let f: Vec<&str> = lines[0].split_whitespace().collect();
    assert_ne!(f[0], "ERR", "outside -> node{node}:{port}: {}", lines[0]);
    // The client sees the node address it dialled as its peer (reverse NAT worked).
    assert_eq!(f[2], format!("{}:{port}", node_ip(node)), "{}", lines[0]);
    (f[0].to_owned(), f[1].split(':').next().unwrap().to_owned())
}

#[test]
fn nodeport_reaches_local_and_remote_backends_and_local_policy_keeps_the_client() {
    let mut c = Cluster::start(2);
    for i in 1..=2 {
        let p = c.add_pod(i, 1);
        serve_tcp(
            &c.pods[p].netns,
            SocketAddr::from((c.pods[p].ip, 8080)),
            &format!("backend{i}"),
        );
    }
    let (b1, b2) = (c.pods[0].ip, c.pods[1].ip);
    let only_node1 = service("only1", Some(VIP), 80, "TCP", Some(30081), &[(b1, 1)], 8080);
    let mut local = service(
        "local",
        Some(Ipv4Addr::new(10, 96, 0, 21)),
        80,
        "TCP",
        Some(30082),
        &[(b1, 1), (b2, 2)],
        8080,
    );
    local["external_traffic_policy_local"] = json!(true);
    let set = json!({"services": [only_node1, local]});
    for i in 1..=2 {
        let out = c.apply(i, &set);
        assert_eq!(out["services"], 2, "{out}");
    }

    // Backend on the node the client dialled: DNAT only, the client address is kept.
    let (who, seen) = ask(&c, 1, 30081);
    assert_eq!(
        (who.as_str(), seen.as_str()),
        ("backend1", "198.51.100.200")
    );
    // Backend on another node: SNAT to the node address so the reply comes back through it.
    for _ in 0..5 {
        let (who, seen) = ask(&c, 2, 30081);
        assert_eq!((who.as_str(), seen.as_str()), ("backend1", "198.51.100.12"));
    }
    // externalTrafficPolicy: Local: each node serves with its own backend, client kept.
    for _ in 0..5 {
        assert_eq!(
            ask(&c, 1, 30082),
            ("backend1".into(), "198.51.100.200".into())
        );
        assert_eq!(
            ask(&c, 2, 30082),
            ("backend2".into(), "198.51.100.200".into())
        );
    }
    // Pods reach NodePorts too: on their own node at the socket, on another through tc.
    let pod1 = c.add_pod(1, 2);
    let pod2 = c.add_pod(2, 2);
    for (pod, node) in [(pod1, 1), (pod2, 1), (pod2, 2)] {
        let lines = c.client(pod, &["tcp", &node_ip(node).to_string(), "30081", "3"]);
        for l in &lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                f[0], "backend1",
                "pod on node{} -> node{node}: {l}",
                c.pods[pod].node
            );
            assert_eq!(f[2], format!("{}:30081", node_ip(node)), "{l}");
        }
    }

    // Nothing listens on a port that is not a NodePort: the packet goes to the node's
    // own stack, which refuses.
    let lines = c.outside_client(&["tcp", "198.51.100.11", "30099", "1"]);
    assert!(lines[0].starts_with("ERR 111"), "{lines:?}");
}

#[test]
fn every_node_picks_the_same_backend_for_a_flow() {
    let mut c = Cluster::start(2);
    let mut eps = Vec::new();
    for (i, j) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let p = c.add_pod(i, j);
        serve_tcp(
            &c.pods[p].netns,
            SocketAddr::from((c.pods[p].ip, 8080)),
            &format!("n{i}b{j}"),
        );
        eps.push((c.pods[p].ip, i));
    }
    let set = json!({"services": [service("mg", Some(VIP), 80, "TCP", Some(30090), &eps, 8080)]});
    for i in 1..=2 {
        c.apply(i, &set);
    }
    let mut seen = std::collections::BTreeSet::new();
    for sport in 40001..40017u16 {
        let sp = sport.to_string();
        let a = c.outside_client(&["tcp", "198.51.100.11", "30090", "1", &sp]);
        let b = c.outside_client(&["tcp", "198.51.100.12", "30090", "1", &sp]);
        let wa = a[0].split_whitespace().next().unwrap().to_owned();
        let wb = b[0].split_whitespace().next().unwrap().to_owned();
        assert!(!wa.starts_with("ERR"), "{a:?}");
        assert_eq!(
            wa, wb,
            "source port {sport}: node1 chose {wa}, node2 chose {wb}"
        );
        seen.insert(wa);
    }
    assert!(
        seen.len() >= 3,
        "16 flows spread over the backends: {seen:?}"
    );
}

/// A line-echo stream from the outside host to `node:port`.
struct Stream {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Stream {
    fn open(c: &Cluster, node: usize, port: u16) -> Stream {
        let s = c
            .bed
            .outside()
            .connect_tcp(
                SocketAddr::from((node_ip(node), port)),
                Duration::from_secs(3),
            )
            .expect("open stream");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Stream {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }
    /// Sends a line; returns who answered.
    fn ping(&mut self, n: usize) -> String {
        self.w
            .write_all(format!("ping{n}\n").as_bytes())
            .expect("stream write");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("stream read");
        assert!(line.ends_with(&format!("ping{n}\n")), "{line:?}");
        line.split_whitespace().next().unwrap().to_owned()
    }
}

#[test]
fn streams_survive_scaling_and_a_proxy_restart() {
    let mut c = Cluster::start(2);
    let mut eps = Vec::new();
    for (i, j) in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)] {
        let p = c.add_pod(i, j);
        serve_echo(
            &c.pods[p].netns,
            SocketAddr::from((c.pods[p].ip, 8080)),
            &format!("n{i}b{j}"),
        );
        eps.push((c.pods[p].ip, i));
    }
    let apply_all = |eps: &[(Ipv4Addr, usize)]| {
        let set =
            json!({"services": [service("st", Some(VIP), 80, "TCP", Some(30100), eps, 8080)]});
        for i in 1..=2 {
            c.apply(i, &set);
        }
    };
    apply_all(&eps[..3]);
    // One stream through each node (node2 has no backend among the first three: SNAT).
    let mut s1 = Stream::open(&c, 1, 30100);
    let mut s2 = Stream::open(&c, 2, 30100);
    let (w1, w2) = (s1.ping(0), s2.ping(0));

    // Scale 3 -> 1 -> 5: the streams keep their backends (conntrack), every step.
    let mut n = 1;
    for step in [&eps[2..3], &eps[..5]] {
        apply_all(step);
        for _ in 0..3 {
            assert_eq!(s1.ping(n), w1);
            assert_eq!(s2.ping(n), w2);
            n += 1;
        }
        // New connections use only the new set.
        let who = Stream::open(&c, 1, 30100).ping(0);
        let names: Vec<String> = step
            .iter()
            .map(|(ip, node)| format!("n{node}b{}", ip.octets()[3] - 10))
            .collect();
        assert!(names.contains(&who), "{who} not in {names:?}");
    }

    // A restart: the datapath was never tied to a process (each apply exits); a new
    // apply with the same Services keeps the links and writes nothing.
    let set = json!({"services": [service("st", Some(VIP), 80, "TCP", Some(30100), &eps, 8080)]});
    let out = c.apply(2, &set);
    assert_eq!(out["writes"], 0, "{out}");
    assert_eq!(out["attached"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(
        out["kept"].as_array().unwrap().len(),
        6,
        "same programs kept: {out}"
    );
    assert_eq!(s2.ping(100), w2);
    assert_eq!(s1.ping(100), w1);
}

#[test]
fn udp_nodeport_external_ips_and_client_ip_affinity_at_tc() {
    let mut c = Cluster::start(2);
    let mut eps = Vec::new();
    for (i, j) in [(1, 1), (1, 2), (2, 1)] {
        let p = c.add_pod(i, j);
        let addr = SocketAddr::from((c.pods[p].ip, 8080));
        serve_udp(&c.pods[p].netns, addr, &format!("n{i}b{j}"));
        serve_tcp(&c.pods[p].netns, addr, &format!("n{i}b{j}"));
        eps.push((c.pods[p].ip, i));
    }
    let ext = Ipv4Addr::new(203, 0, 113, 7);
    let mut udp = service("dns", Some(VIP), 53, "UDP", Some(30053), &eps, 8080);
    udp["external_ips"] = json!([ext]);
    let mut sticky = service(
        "sticky",
        Some(Ipv4Addr::new(10, 96, 0, 22)),
        80,
        "TCP",
        Some(30200),
        &eps,
        8080,
    );
    sticky["session_affinity_timeout"] = json!(60);
    let lb_ip = Ipv4Addr::new(203, 0, 113, 8);
    let mut lb = service(
        "lb",
        Some(Ipv4Addr::new(10, 96, 0, 23)),
        443,
        "TCP",
        Some(30443),
        &eps,
        8080,
    );
    lb["load_balancer_ips"] = json!([lb_ip]);
    let set = json!({"services": [udp, sticky, lb]});
    for i in 1..=2 {
        c.apply(i, &set);
    }

    // UDP through both nodes: answers come back from the address the client sent to.
    for node in 1..=2 {
        let lines = c.outside_client(&["udp", &node_ip(node).to_string(), "30053", "20"]);
        for l in &lines {
            assert!(!l.starts_with("ERR"), "node{node}: {lines:?}");
            assert!(l.ends_with(&format!(" {}:30053", node_ip(node))), "{l}");
        }
    }
    // An externalIP routed to node2 by the outside network.
    c.bed
        .outside()
        .run(
            "ip",
            &["route", "add", &format!("{ext}/32"), "via", "198.51.100.12"],
        )
        .unwrap();
    let lines = c.outside_client(&["udp", &ext.to_string(), "53", "10"]);
    for l in &lines {
        assert!(l.ends_with(" 203.0.113.7:53"), "{lines:?}");
    }

    // A LoadBalancer ingress IP, routed to node1.
    c.bed
        .outside()
        .run(
            "ip",
            &[
                "route",
                "add",
                &format!("{lb_ip}/32"),
                "via",
                "198.51.100.11",
            ],
        )
        .unwrap();
    let lines = c.outside_client(&["tcp", &lb_ip.to_string(), "443", "6"]);
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f[0].starts_with('n'), "{lines:?}");
        assert_eq!(f[2], "203.0.113.8:443", "{l}");
    }

    // ClientIP affinity: every new flow from the outside client lands on one backend.
    let lines = c.outside_client(&["tcp", "198.51.100.11", "30200", "30"]);
    let mut who: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    who.dedup();
    assert_eq!(who.len(), 1, "{lines:?}");
    assert_ne!(who[0], "ERR", "{lines:?}");
}

#[test]
fn a_reused_client_port_is_balanced_afresh_after_its_backend_left() {
    let mut c = Cluster::start(1);
    let eps = two_backends(&mut c, serve_tcp);
    let set = |eps: &[(Ipv4Addr, usize)]| json!({"services": [service("re", Some(VIP), 80, "TCP", Some(30300), eps, 8080)]});
    c.apply(1, &set(&eps));
    let first = c.outside_client(&["tcp", "198.51.100.11", "30300", "1", "40500"]);
    let was = first[0].split_whitespace().next().unwrap().to_owned();
    assert!(was == "b1" || was == "b2", "{first:?}");
    // The backend that served leaves the Service (its process keeps running).
    let keep = without(&eps, &was);
    c.apply(1, &set(&keep));
    // Same client port again, after the old entry went idle: the new set serves it.
    std::thread::sleep(Duration::from_millis(3500));
    let again = c.outside_client(&["tcp", "198.51.100.11", "30300", "1", "40500"]);
    let now = again[0].split_whitespace().next().unwrap();
    assert_ne!(now, "ERR", "{again:?}");
    assert_ne!(
        now, was,
        "the reused port went to the backend that left: {again:?}"
    );
}

#[test]
fn a_udp_flow_leaves_a_backend_that_left_at_once() {
    let mut c = Cluster::start(1);
    let eps = two_backends(&mut c, serve_udp);
    let set = |eps: &[(Ipv4Addr, usize)]| json!({"services": [service("udp", Some(VIP), 53, "UDP", Some(30353), eps, 8080)]});
    c.apply(1, &set(&eps));
    // One client port, as a resolver with a fixed source port: the flow keeps its backend.
    let ask = || c.outside_client(&["udp", "198.51.100.11", "30353", "3", "40600"]);
    let first = ask();
    let was = first[0].split_whitespace().next().unwrap().to_owned();
    assert!(was == "b1" || was == "b2", "{first:?}");
    assert!(first.iter().all(|l| l.starts_with(&was)), "{first:?}");
    // The backend that served leaves the Service (its process keeps answering): the
    // flow's very next datagram goes to the one left, without waiting for any timeout.
    let keep = without(&eps, &was);
    c.apply(1, &set(&keep));
    let again = ask();
    for l in &again {
        let who = l.split_whitespace().next().unwrap();
        assert_ne!(who, "ERR", "{again:?}");
        assert_ne!(
            who, was,
            "the flow stayed on the backend that left: {again:?}"
        );
    }
}

/// Two pods on node1 answering as "b1" and "b2" on :8080 with `serve`; their endpoints.
fn two_backends(
    c: &mut Cluster,
    serve: fn(&skein_netns::NetNs, SocketAddr, &str),
) -> Vec<(Ipv4Addr, usize)> {
    (1..=2)
        .map(|j| {
            let p = c.add_pod(1, j);
            serve(
                &c.pods[p].netns,
                SocketAddr::from((c.pods[p].ip, 8080)),
                &format!("b{j}"),
            );
            (c.pods[p].ip, 1)
        })
        .collect()
}

/// `eps` without the backend that answered as `who` ("b<j>" is the pod at .(10+j)).
fn without(eps: &[(Ipv4Addr, usize)], who: &str) -> Vec<(Ipv4Addr, usize)> {
    eps.iter()
        .copied()
        .filter(|(ip, _)| format!("b{}", ip.octets()[3] - 10) != who)
        .collect()
}
