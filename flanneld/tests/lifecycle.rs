//! The daemon's life: waiting for a valid config, many nodes starting at once, lease
//! renewal, /healthz and /metrics, and masquerade rules.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;

#[test]
fn invalid_config_is_reported_then_picked_up_when_fixed() {
    let bed = bed(1, false);
    let d = start_flanneld(&bed, 1, &["--log-format", "json"]);
    // No config yet: the daemon says so and waits.
    wait_for(
        "the missing-config log line",
        Duration::from_secs(20),
        || {
            d.log_tail(20)
                .contains("/coreos.com/network/config is missing")
                .then_some(())
        },
    );
    put_config(&bed, r#"{"Network": "10.244.0.0/16", "SubnetLen": 8}"#);
    wait_for(
        "the invalid-config log line",
        Duration::from_secs(20),
        || {
            d.log_tail(20)
                .contains("SubnetLen 8 must be longer than the Network prefix /16")
                .then_some(())
        },
    );
    let mut d = d;
    assert!(d.is_running(), "an invalid config must not kill the daemon");
    assert!(!bed.node(1).dirs.subnet_file.exists());
    put_config(&bed, VXLAN_CONFIG);
    let env = wait_subnet_file(bed.node(1), &d);
    assert_eq!(env.network, "10.244.0.0/16");
    // --log-format json: every line is a JSON object with a level and a message.
    let log = std::fs::read_to_string(d.log()).unwrap();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn twenty_flanneld_started_at_once_get_twenty_distinct_subnets() {
    let bed = bed(20, false);
    // A small range makes collisions likely if the create were not atomic.
    put_config(
        &bed,
        r#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.24.0", "Backend": {"Type": "host-gw"}}"#,
    );
    let daemons: Vec<_> = (1..=20).map(|i| start_flanneld(&bed, i, &[])).collect();
    let envs: Vec<SubnetEnv> = (1..=20)
        .map(|i| wait_subnet_file(bed.node(i), &daemons[i - 1]))
        .collect();
    let distinct: HashSet<String> = envs.iter().map(SubnetEnv::cidr).collect();
    assert_eq!(distinct.len(), 20, "{envs:#?}");
    let keys = etcdctl(
        &bed,
        &bed.node(1).host,
        &[
            "get",
            "/coreos.com/network/subnets/",
            "--prefix",
            "--keys-only",
        ],
    );
    let keys: HashSet<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys.len(), 20, "{keys:?}");
    for env in &envs {
        assert!(
            keys.contains(env.key().as_str()),
            "{} not in etcd",
            env.key()
        );
    }
}

#[test]
fn lease_is_renewed_before_it_expires_and_metrics_show_it() {
    let bed = bed(2, false);
    put_config(&bed, VXLAN_CONFIG);
    let d1 = start_flanneld(
        &bed,
        1,
        &["--subnet-lease-ttl", "4", "--healthz-port", "9101"],
    );
    let d2 = start_flanneld(&bed, 2, &[]);
    let env = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    // Three TTLs later the key is still there, on a live etcd lease.
    std::thread::sleep(Duration::from_secs(12));
    let value = etcdctl(
        &bed,
        &bed.node(1).host,
        &["get", &env.key(), "--print-value-only"],
    );
    assert!(
        value.contains(&bed.node(1).addr.to_string()),
        "lease lost: {value:?}"
    );
    let node1 = bed.node(1);
    let (code, body) =
        skein_testbed::http_get(node1, SocketAddr::from((node1.addr, 9101)), "/healthz")
            .expect("GET /healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) =
        skein_testbed::http_get(node1, SocketAddr::from((node1.addr, 9101)), "/metrics")
            .expect("GET /metrics");
    assert_eq!(code, 200);
    let value_of = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(value_of("flannel_lease_renewals_total") >= 2.0, "{metrics}");
    assert_eq!(value_of("flannel_leases"), 2.0);
    assert_eq!(value_of("flannel_routes_programmed"), 1.0);
    assert_eq!(value_of("flannel_has_lease"), 1.0);
    assert_eq!(value_of("flannel_etcd_up"), 1.0);
    assert!(value_of("flannel_syncs_total") >= 1.0);
    // Node 2 never lost its route to node 1 while the lease moved between etcd leases.
    assert!(!route_to(bed.node(2), &env.cidr()).is_empty());
    assert!(!route_to(bed.node(1), &env2.cidr()).is_empty());
}

#[test]
fn ip_masq_masquerades_pod_to_outside_only_and_is_removed_on_exit() {
    let bed = bed(2, true);
    put_config(&bed, VXLAN_CONFIG);
    let mut d1 = start_flanneld(&bed, 1, &["--ip-masq"]);
    let d2 = start_flanneld(&bed, 2, &["--ip-masq"]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    assert!(env1.ipmasq);
    let rules = ip_nft(bed.node(1));
    assert!(rules.contains("masquerade"), "{rules}");
    let p1 = wire_pods(&bed, 1, &env1, 1);
    let p2 = wire_pods(&bed, 2, &env2, 1);

    // Pod -> outside: the outside host sees the node's address.
    let outside = bed.outside();
    let peer = accept_from(outside, &p1[0].host, 23000);
    assert_eq!(peer, bed.node(1).addr.to_string());
    // Pod -> pod: the pod's own address.
    let peer = accept_from(&p2[0].host, &p1[0].host, 23001);
    assert_eq!(peer, p1[0].host.addr.to_string());

    d1.stop();
    let out = bed
        .node(1)
        .run("nft", &["list", "tables"])
        .expect("nft list tables");
    assert!(
        !out.contains("skein-flannel"),
        "table left after exit: {out}"
    );
}

fn ip_nft(node: &skein_testbed::Host) -> String {
    node.run("nft", &["list", "table", "ip", "skein-flannel"])
        .expect("nft list table")
}

/// Accepts one connection in `server` from `client` and returns the peer address seen.
fn accept_from(server: &skein_testbed::Host, client: &skein_testbed::Host, port: u16) -> String {
    let addr = SocketAddr::from((server.addr, port));
    let listener = server.listen_tcp(addr).expect("listen");
    let mut last = String::new();
    for _ in 0..50 {
        match client.connect_tcp(addr, Duration::from_secs(2)) {
            Ok(_stream) => {
                let (_s, peer) = listener.accept().expect("accept");
                return peer.ip().to_string();
            }
            Err(e) => {
                last = e.to_string();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    panic!("{} could not reach {addr}: {last}", client.name);
}

#[test]
fn bad_flags_exit_with_a_clear_error() {
    let bed = bed(1, false);
    put_config(&bed, VXLAN_CONFIG);
    let cases: [(&[&str], &str); 5] = [
        (&["--iface", "nope0"], "no interface named \"nope0\""),
        (
            &["--iface-regex", "^nomatch$"],
            "no interface address or name matches \"^nomatch$\" (--iface-regex)",
        ),
        (&["--iface-regex", "(eth"], "not a regular expression"),
        (
            &["--etcd-certfile", "/nonexistent.pem"],
            "--etcd-certfile and --etcd-keyfile must be given together",
        ),
        (
            &["--etcd-cafile", "/nonexistent-ca.pem"],
            "read /nonexistent-ca.pem",
        ),
    ];
    for (args, want) in cases {
        let mut d = start_flanneld(&bed, 1, args);
        let status = d
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("flanneld {args:?} kept running"));
        assert!(!status.success());
        let log = d.log_tail(400);
        assert!(log.contains(want), "{args:?}: {log}");
    }
    assert!(!bed.node(1).dirs.subnet_file.exists());
}

#[test]
fn iface_regex_matches_addresses_then_names_in_go_style_too() {
    let bed = bed(1, false);
    put_config(&bed, VXLAN_CONFIG);
    // An address pattern (flannel tries addresses first), as an operator's unit file
    // written for flannel would pass it.
    let addr = bed.node(1).addr.to_string();
    let pattern = format!("^{}$", addr.replace('.', "\\."));
    let mut d = start_flanneld(&bed, 1, &["-iface-regex", &pattern, "-ip-masq=false"]);
    wait_for("the subnet file", Duration::from_secs(20), || {
        bed.node(1).dirs.subnet_file.exists().then_some(())
    });
    let log = d.log_tail(200);
    let pick = log
        .lines()
        .find(|l| l.contains("using uplink"))
        .unwrap_or_default();
    assert!(pick.contains("eth0") && pick.contains(&addr), "{log}");
    d.stop();
    // A name pattern: nothing's address matches `^eth`, eth0's name does. (The log is
    // appended to: count the "using uplink" lines.)
    let d = start_flanneld(&bed, 1, &["--iface-regex", "^eth"]);
    wait_for("flanneld on eth0 by name", Duration::from_secs(20), || {
        let log = d.log_tail(400);
        let picks: Vec<&str> = log.lines().filter(|l| l.contains("using uplink")).collect();
        (picks.len() == 2 && picks[1].contains("eth0")).then_some(())
    });
}
