//! VXLAN mode on a test bed with real etcd: pods on three nodes reach each other, the
//! lease JSON is flannel's, a fourth node joins, a restart keeps subnet and MAC, and a
//! deleted lease takes its entries away on every node.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn lease_json(bed: &skein_testbed::TestBed, env: &SubnetEnv) -> (Value, i64) {
    let out = etcdctl(bed, &bed.node(1).host, &["get", &env.key(), "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("etcdctl json");
    let kv = &v["kvs"][0];
    let value = kv["value"].as_str().expect("lease value");
    let text = decode_base64(value);
    let lease = kv["lease"].as_i64().unwrap_or(0);
    (
        serde_json::from_str(&text).expect("lease value is JSON"),
        lease,
    )
}

fn decode_base64(s: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHA.iter().position(|a| *a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).expect("utf8")
}

fn mac_of(node: &skein_testbed::Host, dev: &str) -> String {
    link_json(node, dev)["address"]
        .as_str()
        .expect("mac")
        .to_owned()
}

#[test]
fn vxlan_pods_reach_each_other_and_leases_match_flannel() {
    let bed = bed(4, false);
    put_config(&bed, VXLAN_CONFIG);
    let mut daemons: Vec<_> = (1..=3).map(|i| start_flanneld(&bed, i, &[])).collect();
    let envs: Vec<SubnetEnv> = (1..=3)
        .map(|i| wait_subnet_file(bed.node(i), &daemons[i - 1]))
        .collect();

    // Subnet file: flannel's variables, distinct subnets, MTU = 1500 - 50.
    for env in &envs {
        assert_eq!(env.network, "10.244.0.0/16");
        assert_eq!(env.prefix_len(), 24);
        assert_eq!(env.mtu, 1450);
        assert!(!env.ipmasq);
    }
    let mut subnets: Vec<_> = envs.iter().map(SubnetEnv::cidr).collect();
    subnets.dedup();
    assert_eq!(subnets.len(), 3, "{subnets:?}");

    // Device and lease, field by field.
    for (i, env) in envs.iter().enumerate() {
        let node = bed.node(i + 1);
        let link = link_json(node, "flannel.1");
        let info = &link["linkinfo"]["info_data"];
        assert_eq!(link["linkinfo"]["info_kind"], "vxlan");
        assert_eq!(info["id"], 1);
        assert_eq!(info["port"], 8472);
        assert_eq!(info["learning"], false);
        assert_eq!(info["local"], node.addr.to_string());
        assert_eq!(link["mtu"], 1450);
        let addrs = ip(node, &["-4", "-o", "addr", "show", "dev", "flannel.1"]);
        assert!(
            addrs.contains(&format!("{}/32", env.network_addr())),
            "flannel.1 addresses: {addrs}"
        );
        let (lease, etcd_lease) = lease_json(&bed, env);
        let obj = lease.as_object().expect("object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec!["BackendData", "BackendType", "PublicIP", "PublicIPv6"],
            "{lease}"
        );
        assert_eq!(lease["PublicIP"], node.addr.to_string());
        assert_eq!(lease["PublicIPv6"], Value::Null);
        assert_eq!(lease["BackendType"], "vxlan");
        assert_eq!(lease["BackendData"]["VNI"], 1);
        assert_eq!(lease["BackendData"]["VtepMAC"], mac_of(node, "flannel.1"));
        assert_ne!(etcd_lease, 0, "the key must be attached to an etcd lease");
        let ttl = etcdctl(
            &bed,
            &bed.node(1).host,
            &["lease", "timetolive", &format!("{etcd_lease:x}")],
        );
        assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
    }

    // Pods: every pod reaches every other pod.
    let pods: Vec<Vec<Pod>> = (1..=3)
        .map(|i| wire_pods(&bed, i, &envs[i - 1], 2))
        .collect();
    let all: Vec<&Pod> = pods.iter().flatten().collect();
    all_pairs_tcp(&all, 20000, Duration::from_secs(20));

    // Per remote lease: one route, one neighbour, one FDB entry.
    let n1 = bed.node(1);
    for env in &envs[1..] {
        let route = route_to(n1, &env.cidr());
        assert!(
            route.contains(&format!("via {} dev flannel.1 onlink", env.network_addr())),
            "{route}"
        );
    }

    // A fourth node joins and is reachable from every pod.
    daemons.push(start_flanneld(&bed, 4, &[]));
    let env4 = wait_subnet_file(bed.node(4), &daemons[3]);
    let pods4 = wire_pods(&bed, 4, &env4, 1);
    for (k, p) in all.iter().enumerate() {
        tcp_eventually(
            &p.host,
            &pods4[0].host,
            21000 + k as u16,
            Duration::from_secs(20),
        );
        tcp_eventually(
            &pods4[0].host,
            &p.host,
            21100 + k as u16,
            Duration::from_secs(20),
        );
    }

    // Restart node 3: same subnet, same MAC, and traffic still flows.
    let mac_before = mac_of(bed.node(3), "flannel.1");
    daemons[2].stop();
    assert!(
        !link_json(bed.node(3), "flannel.1").is_null(),
        "SIGTERM must leave the device in place"
    );
    assert!(
        !route_to(bed.node(3), &envs[0].cidr()).is_empty(),
        "routes stay after SIGTERM"
    );
    daemons[2] = start_flanneld(&bed, 3, &[]);
    wait_for(
        "node3 flanneld to log its lease",
        Duration::from_secs(20),
        || {
            daemons[2]
                .log_tail(50)
                .contains("reusing this node's lease")
                .then_some(())
        },
    );
    let env3 = wait_subnet_file(bed.node(3), &daemons[2]);
    assert_eq!(env3, envs[2]);
    assert_eq!(mac_of(bed.node(3), "flannel.1"), mac_before);
    tcp_eventually(
        &pods[0][0].host,
        &pods[2][1].host,
        22000,
        Duration::from_secs(20),
    );
    tcp_eventually(
        &pods[2][1].host,
        &pods[0][0].host,
        22001,
        Duration::from_secs(20),
    );
    drop(daemons);
}

#[test]
fn deleted_lease_removes_route_neighbour_and_fdb_everywhere() {
    let bed = bed(3, false);
    put_config(&bed, VXLAN_CONFIG);
    let mut daemons: Vec<_> = (1..=3).map(|i| start_flanneld(&bed, i, &[])).collect();
    let envs: Vec<SubnetEnv> = (1..=3)
        .map(|i| wait_subnet_file(bed.node(i), &daemons[i - 1]))
        .collect();
    let gone = &envs[1];
    let mac2 = mac_of(bed.node(2), "flannel.1");
    let vtep = gone.network_addr().to_string();
    for i in [1, 3] {
        let node = bed.node(i);
        wait_for("entries for node2", Duration::from_secs(10), || {
            (!route_to(node, &gone.cidr()).is_empty()).then_some(())
        });
        assert!(ip(node, &["neigh", "show", "dev", "flannel.1"]).contains(&vtep));
        let fdb = node
            .run("bridge", &["fdb", "show", "dev", "flannel.1"])
            .unwrap();
        assert!(fdb.contains(&mac2), "{fdb}");
    }
    // Node 2 goes away for good: its daemon stops (the lease stays), then the lease key
    // is deleted, as when an operator removes the node.
    daemons[1].stop();
    etcdctl(&bed, &bed.node(1).host, &["del", &gone.key()]);
    for i in [1, 3] {
        let node = bed.node(i);
        wait_for("node2's route to go", Duration::from_secs(10), || {
            route_to(node, &gone.cidr()).is_empty().then_some(())
        });
        let neigh = ip(node, &["neigh", "show", "dev", "flannel.1"]);
        assert!(!neigh.contains(&vtep), "neighbour left: {neigh}");
        let fdb = node
            .run("bridge", &["fdb", "show", "dev", "flannel.1"])
            .unwrap();
        assert!(!fdb.contains(&mac2), "fdb left: {fdb}");
        // The other remote stays.
        let other = if i == 1 { &envs[2] } else { &envs[0] };
        assert!(!route_to(node, &other.cidr()).is_empty());
    }
}
