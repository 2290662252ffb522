//! host-gw mode and VXLAN with DirectRouting: plain routes via the remote node's
//! address, and pods on three nodes reach each other.

mod common;

use std::time::Duration;

use common::*;

fn pods_reach_each_other(config: &str) -> (skein_testbed::TestBed, Vec<SubnetEnv>) {
    let mut bed = bed(3, false);
    put_config(&bed, config);
    let daemons: Vec<_> = (1..=3).map(|i| start_flanneld(&bed, i, &[])).collect();
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
    let (bed, envs) = pods_reach_each_other(HOSTGW_CONFIG);
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
    );
    let n1 = bed.node(1);
    for (k, env) in envs.iter().enumerate().skip(1) {
        let route = route_to(n1, &env.cidr());
        let via = bed.node(k + 1).addr;
        assert!(route.contains(&format!("via {via} dev eth0")), "{route}");
    }
}
