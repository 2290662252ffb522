//! host-gw mode and VXLAN with DirectRouting: plain routes via the remote node's
//! address, and pods on three nodes reach each other.

mod common;

use std::time::Duration;

use common::*;

/// Three nodes, flanneld on each (`--iface <eth0 address>` when `iface_by_addr`), two
/// pods per node, TCP between every pair.
fn pods_reach_each_other(
    config: &str,
    iface_by_addr: bool,
) -> (skein_testbed::TestBed, Vec<SubnetEnv>) {
    let mut bed = bed(3, false);
    put_config(&bed, config);
    let daemons: Vec<_> = (1..=3)
        .map(|i| {
            let addr = bed.node(i).addr.to_string();
            let extra: Vec<&str> = if iface_by_addr {
                vec!["--iface", &addr]
            } else {
                vec![]
            };
            start_flanneld(&bed, i, &extra)
        })
        .collect();
    let envs: Vec<SubnetEnv> = (1..=3)
        .map(|i| wait_subnet_file(bed.node(i), &daemons[i - 1]))
        .collect();
    let pods: Vec<Vec<Pod>> = (1..=3)
        .map(|i| wire_pods(&bed, i, &envs[i - 1], 2))
        .collect();
    let all: Vec<&Pod> = pods.iter().flatten().collect();
    all_pairs_tcp(&all, 20000, Duration::from_secs(20));
    for d in daemons {
        bed.adopt(d);
    }
    (bed, envs)
}

#[test]
fn host_gw_pods_reach_each_other_over_plain_routes() {
    let (bed, envs) = pods_reach_each_other(HOSTGW_CONFIG, false);
    for env in &envs {
        assert_eq!(env.mtu, 1500, "host-gw keeps the uplink MTU");
    }
    let n1 = bed.node(1);
    assert!(
        !ip(n1, &["-o", "link"]).contains("flannel."),
        "host-gw makes no VXLAN device"
    );
    for (k, env) in envs.iter().enumerate().skip(1) {
        let route = route_to(n1, &env.cidr());
        let via = bed.node(k + 1).addr;
        assert!(route.contains(&format!("via {via} dev eth0")), "{route}");
    }
    let lease = etcdctl(
        &bed,
        &n1.host,
        &["get", &envs[0].key(), "--print-value-only"],
    );
    assert_eq!(
        lease.trim(),
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"host-gw"}}"#,
            n1.addr
        )
    );
}

#[test]
fn vxlan_direct_routing_uses_plain_routes_on_one_l2() {
    let (bed, envs) = pods_reach_each_other(
        r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}"#,
        true,
    );
    let n1 = bed.node(1);
    for (k, env) in envs.iter().enumerate().skip(1) {
        let route = route_to(n1, &env.cidr());
        let via = bed.node(k + 1).addr;
        assert!(route.contains(&format!("via {via} dev eth0")), "{route}");
    }
}

#[test]
fn public_ip_is_announced_and_used_by_the_other_nodes() {
    let mut bed = bed(2, false);
    put_config(&bed, VXLAN_CONFIG);
    // Node 1 announces a second address of its uplink (as behind a NAT, the announced
    // address differs from the one the interface is found by).
    ip(
        bed.node(1),
        &["addr", "add", "198.51.100.111/24", "dev", "eth0"],
    );
    let d1 = start_flanneld(&bed, 1, &["--public-ip", "198.51.100.111"]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    let value = etcdctl(
        &bed,
        &bed.node(1).host,
        &["get", &env1.key(), "--print-value-only"],
    );
    assert!(value.contains(r#""PublicIP":"198.51.100.111""#), "{value}");
    wait_for(
        "node2's FDB entry towards the public IP",
        Duration::from_secs(10),
        || {
            let fdb = bed
                .node(2)
                .run("bridge", &["fdb", "show", "dev", "flannel.1"])
                .unwrap();
            fdb.contains("dst 198.51.100.111").then_some(())
        },
    );
    let p1 = wire_pods(&bed, 1, &env1, 1);
    let p2 = wire_pods(&bed, 2, &env2, 1);
    tcp_eventually(&p1[0].host, &p2[0].host, 26000, Duration::from_secs(20));
    tcp_eventually(&p2[0].host, &p1[0].host, 26001, Duration::from_secs(20));
    for d in [d1, d2] {
        bed.adopt(d);
    }
}
