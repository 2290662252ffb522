//! ClusterIP at the socket, on a 3-node test bed: pods' connect() and sendmsg() to a VIP
//! reach the backends, the application sees the VIP, empty Services refuse at once.
//! Needs root (eBPF, namespaces, cgroups).

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use common::*;
use serde_json::json;
use skein_proxy::maps::{PROG_CONNECT4, PROG_SENDMSG4};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Three nodes, one backend pod (p1) and one client pod (p2) on each.
fn three_nodes(protocol: &str) -> (Cluster, Vec<usize>) {
    let mut c = Cluster::start(3);
    let mut clients = Vec::new();
    for i in 1..=3 {
        let b = c.add_pod(i, 1);
        let addr = SocketAddr::from((c.pods[b].ip, 8080));
        match protocol {
            "TCP" => serve_tcp(&c.pods[b].netns, addr, &format!("backend{i}")),
            _ => serve_udp(&c.pods[b].netns, addr, &format!("backend{i}")),
        }
        clients.push(c.add_pod(i, 2));
    }
    (c, clients)
}

fn backends(c: &Cluster) -> Vec<(Ipv4Addr, usize)> {
    c.pods
        .iter()
        .filter(|p| p.name.ends_with("p1"))
        .map(|p| (p.ip, p.node))
        .collect()
}

fn tally(lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        let who = l.split_whitespace().next().unwrap_or("").to_owned();
        *m.entry(who).or_insert(0) += 1;
    }
    m
}

#[test]
fn tcp_clusterip_reaches_every_backend_evenly_from_every_node() {
    let (c, clients) = three_nodes("TCP");
    let svc =
        json!({"services": [service("web", Some(VIP), 80, "TCP", None, &backends(&c), 8080)]});
    for i in 1..=3 {
        let out = c.apply(i, &svc);
        assert_eq!(out["services"], 1, "{out}");
        assert_eq!(out["attached"].as_array().unwrap().len(), 6, "{out}");
    }
    // The four socket hooks are attached to each node's cgroup, and only there.
    let attached = bpftool_cgroup(&c.cgroup(1));
    for hook in ["connect4", "sendmsg4", "recvmsg4", "getpeername4"] {
        assert!(attached.contains(hook), "{hook} missing: {attached}");
    }
    let root = skein_testbed::cgroup2_mount().unwrap();
    assert!(
        !bpftool_cgroup(&root).contains("skein"),
        "nothing on the root cgroup"
    );
    for (n, &client) in clients.iter().enumerate() {
        let lines = c.client(client, &["tcp", &VIP.to_string(), "80", "600"]);
        assert_eq!(lines.len(), 600);
        let t = tally(&lines);
        assert!(
            !t.contains_key("ERR"),
            "node{}: failures {t:?}: {:?}",
            n + 1,
            &lines[..3]
        );
        for b in ["backend1", "backend2", "backend3"] {
            let k = t.get(b).copied().unwrap_or(0);
            assert!(
                (160..=240).contains(&k),
                "node{}: {b} got {k} of 600: {t:?}",
                n + 1
            );
        }
        // The application sees the VIP as its peer; the backend sees the client pod.
        let client_ip = c.pods[client].ip.to_string();
        for l in &lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[2], "10.96.0.10:80", "{l}");
            assert!(f[1].starts_with(&format!("{client_ip}:")), "{l}");
        }
    }
    // The per-service connection counter in BPF saw them.
    let list: serde_json::Value =
        serde_json::from_str(&c.proxy(1, &["list", "--pin-dir", c.pin_dir(1).to_str().unwrap()]))
            .unwrap();
    let f = &list["frontends"][0];
    assert_eq!(f["frontend"], "10.96.0.10:80");
    assert!(f["connections"].as_u64().unwrap() >= 600, "{list}");
}

#[test]
fn udp_clusterip_works_both_ways() {
    let (c, clients) = three_nodes("UDP");
    let svc =
        json!({"services": [service("dns", Some(VIP), 53, "UDP", None, &backends(&c), 8080)]});
    for i in 1..=3 {
        c.apply(i, &svc);
    }
    let lines = c.client(clients[1], &["udp", &VIP.to_string(), "53", "90"]);
    let t = tally(&lines);
    assert!(!t.contains_key("ERR"), "{t:?} {lines:?}");
    assert_eq!(t.len(), 3, "every backend answers some sockets: {t:?}");
    for l in &lines {
        // recvfrom() reports the VIP, not the backend.
        assert!(l.ends_with(" 10.96.0.10:53"), "{l}");
    }
}

#[test]
fn service_without_endpoints_refuses_at_once_and_deleted_or_headless_get_no_vip() {
    let mut c = Cluster::start(1);
    let b = c.add_pod(1, 1);
    serve_tcp(
        &c.pods[b].netns,
        SocketAddr::from((c.pods[b].ip, 8080)),
        "backend",
    );
    let client = c.add_pod(1, 2);
    let be = [(c.pods[b].ip, 1)];
    let empty = Ipv4Addr::new(10, 96, 0, 11);
    let headless = service("headless", None, 80, "TCP", None, &be, 8080);
    let mut empty_svc = service("empty", Some(empty), 80, "TCP", None, &[], 8080);
    empty_svc["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "u", "protocol": "UDP", "port": 80}));
    c.apply(
        1,
        &json!({"services": [
            service("web", Some(VIP), 80, "TCP", None, &be, 8080),
            empty_svc.clone(),
            headless,
        ]}),
    );
    let ok = c.client(client, &["tcp", "10.96.0.10", "80", "3"]);
    assert!(ok.iter().all(|l| l.starts_with("backend ")), "{ok:?}");

    let refused = c.client(client, &["tcp", &empty.to_string(), "80", "3"]);
    for l in &refused {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(&f[..2], ["ERR", "111"], "ECONNREFUSED expected: {l}");
        assert!(
            f[2].parse::<u32>().unwrap() < 500,
            "refused at once, not after a timeout: {l}"
        );
    }
    let udp = c.client(client, &["udp", &empty.to_string(), "80", "1"]);
    assert!(udp[0].starts_with("ERR 111"), "{udp:?}");

    let list = c.proxy(1, &["list", "--pin-dir", c.pin_dir(1).to_str().unwrap()]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let fronts: Vec<&str> = list["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["frontend"].as_str().unwrap())
        .collect();
    assert_eq!(
        fronts,
        ["10.96.0.10:80", "10.96.0.11:80", "10.96.0.11:80"],
        "TCP and UDP of the empty Service, headless gets no VIP"
    );

    // The Service is deleted: the next apply removes it and the VIP stops answering.
    let out = c.apply(1, &json!({"services": [empty_svc]}));
    assert_eq!(
        out["kept"].as_array().unwrap().len(),
        6,
        "links kept: {out}"
    );
    let gone = c.client(client, &["tcp", "10.96.0.10", "80", "1"]);
    assert!(
        gone[0].starts_with("ERR"),
        "deleted Service still answers: {gone:?}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&c.proxy(1, &["list", "--pin-dir", c.pin_dir(1).to_str().unwrap()]))
            .unwrap();
    assert_eq!(list["frontends"].as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn session_affinity_sticks_to_one_backend() {
    let (c, clients) = three_nodes("TCP");
    let mut svc = service("sticky", Some(VIP), 80, "TCP", None, &backends(&c), 8080);
    svc["session_affinity_timeout"] = json!(60);
    c.apply(2, &json!({"services": [svc]}));
    let lines = c.client(clients[1], &["tcp", &VIP.to_string(), "80", "40"]);
    let t = tally(&lines);
    assert_eq!(t.len(), 1, "one backend for every connection: {t:?}");
    assert!(!t.contains_key("ERR"), "{t:?}");
}

#[test]
fn bad_service_file_is_rejected_and_changes_nothing() {
    let c = Cluster::start(1);
    let file = c.bed.state_dir().join("bad.json");
    std::fs::write(&file, r#"{"services":[{"namespace":"default","name":"x","ports":[{"protocol":"TCP","port":0}]}]}"#).unwrap();
    let mut cmd = c.bed.node(1).command(PROXY).unwrap();
    cmd.args(["apply", "--node-name", "node1", "--pin-dir"])
        .arg(c.pin_dir(1))
        .args(["--from-file"])
        .arg(&file);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("default/x") && err.contains("port"), "{err}");
    assert!(!c.pin_dir(1).exists(), "nothing installed for a bad file");
}

#[test]
fn the_root_cgroup_is_refused_and_nothing_is_attached() {
    let c = Cluster::start(1);
    let root = skein_testbed::cgroup2_mount().unwrap();
    let file = c.bed.state_dir().join("svc.json");
    std::fs::write(&file, json!({"services": []}).to_string()).unwrap();
    let mut cmd = c.bed.node(1).command(PROXY).unwrap();
    cmd.args(["apply", "--node-name", "node1", "--uplink", "", "--pin-dir"])
        .arg(c.pin_dir(1))
        .arg("--cgroup-root")
        .arg(&root)
        .arg("--from-file")
        .arg(&file);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root cgroup"), "{err}");
    assert!(!c.pin_dir(1).exists(), "nothing made for a refused cgroup");
}

#[test]
fn a_missing_uplink_fails_cleanly_with_nothing_left_behind() {
    let c = Cluster::start(1);
    let file = c.bed.state_dir().join("svc.json");
    std::fs::write(&file, json!({"services": []}).to_string()).unwrap();
    let mut cmd = c.bed.node(1).command(PROXY).unwrap();
    cmd.args(["apply", "--node-name", "node1", "--uplink", "nosuch0"])
        .args(["--node-ip", "198.51.100.11", "--pin-dir"])
        .arg(c.pin_dir(1))
        .arg("--cgroup-root")
        .arg(c.cgroup(1))
        .arg("--from-file")
        .arg(&file);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch0"), "{err}");
    assert!(
        !c.pin_dir(1).exists(),
        "rolled back: cgroup links and maps removed"
    );
    // The cgroup hooks attached before the failure are detached again.
    let attached = bpftool_cgroup(&c.cgroup(1));
    assert!(attached.trim().is_empty(), "{attached}");
}

/// What `bpftool cgroup show` lists as attached to `cgroup`.
fn bpftool_cgroup(cgroup: &std::path::Path) -> String {
    let mut cmd = std::process::Command::new("bpftool");
    cmd.args(["cgroup", "show"]).arg(cgroup);
    skein_testbed::run_checked(&mut cmd).expect("bpftool cgroup show")
}

#[test]
fn a_link_running_other_code_is_replaced_on_the_next_start() {
    let mut c = Cluster::start(1);
    let b = c.add_pod(1, 1);
    serve_tcp(
        &c.pods[b].netns,
        SocketAddr::from((c.pods[b].ip, 8080)),
        "backend",
    );
    let client = c.add_pod(1, 2);
    let set = json!({"services": [service("web", Some(VIP), 80, "TCP", None, &[(c.pods[b].ip, 1)], 8080)]});
    c.apply(1, &set);

    // Play an older binary: the connect4 link now runs other code (here: the sendmsg4
    // program, attached as a second sendmsg4 hook and pinned in connect4's place).
    let pin_dir = c.pin_dir(1);
    let connect_pin = pin_dir.join(format!("link_{PROG_CONNECT4}"));
    {
        let mut obj = aya::EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(skein_proxy::datapath::CGROUP_OBJ)
            .unwrap();
        let prog: &mut aya::programs::CgroupSockAddr =
            obj.program_mut(PROG_SENDMSG4).unwrap().try_into().unwrap();
        prog.load().unwrap();
        let cg = std::fs::File::open(c.cgroup(1)).unwrap();
        let id = prog
            .attach(&cg, aya::programs::CgroupAttachMode::default())
            .unwrap();
        let link: aya::programs::links::FdLink = prog.take_link(id).unwrap().try_into().unwrap();
        std::fs::remove_file(&connect_pin).unwrap();
        link.pin(&connect_pin).unwrap();
    }
    let hooks = bpftool_cgroup(&c.cgroup(1));
    assert_eq!(hooks.matches("connect4").count(), 0, "{hooks}");
    assert_eq!(hooks.matches("sendmsg4").count(), 2, "{hooks}");
    assert!(c.client(client, &["tcp", "10.96.0.10", "80", "1"])[0].starts_with("ERR"));

    let out = c.apply(1, &set);
    assert_eq!(out["replaced"], json!([PROG_CONNECT4]), "{out}");
    assert_eq!(out["kept"].as_array().unwrap().len(), 5, "{out}");
    let hooks = bpftool_cgroup(&c.cgroup(1));
    assert_eq!(hooks.matches("connect4").count(), 1, "{hooks}");
    assert_eq!(
        hooks.matches("sendmsg4").count(),
        1,
        "old link detached: {hooks}"
    );
    let lines = c.client(client, &["tcp", "10.96.0.10", "80", "3"]);
    assert!(lines.iter().all(|l| l.starts_with("backend ")), "{lines:?}");
}
