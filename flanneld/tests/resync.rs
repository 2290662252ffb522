//! Keeping the kernel and etcd right: stale entries go on start, entries removed by hand
//! come back, a lapsed lease is taken again with the same subnet, reservations hold.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn start_removes_stale_entries_and_resync_restores_removed_ones() {
    let bed = bed(2, false);
    put_config(&bed, VXLAN_CONFIG);
    let mut d1 = start_flanneld(&bed, 1, &["--resync-interval", "1"]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let _env1 = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    let n1 = bed.node(1);
    wait_for("route to node2", Duration::from_secs(10), || {
        (!route_to(n1, &env2.cidr()).is_empty()).then_some(())
    });

    // An operator deletes the route by hand: the periodic resync puts it back.
    ip(n1, &["route", "del", &env2.cidr()]);
    wait_for("the route to come back", Duration::from_secs(10), || {
        (!route_to(n1, &env2.cidr()).is_empty()).then_some(())
    });

    // While flanneld is down, entries of a node that no longer exists appear (left by
    // an earlier run): the next start removes them and keeps the live ones.
    d1.stop();
    ip(
        n1,
        &[
            "neigh",
            "add",
            "10.244.200.0",
            "lladdr",
            "0e:01:c6:33:64:99",
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ],
    );
    n1.run(
        "bridge",
        &[
            "fdb",
            "add",
            "0e:01:c6:33:64:99",
            "dev",
            "flannel.1",
            "dst",
            "198.51.100.99",
            "self",
            "permanent",
        ],
    )
    .expect("bridge fdb add");
    ip(
        n1,
        &[
            "route",
            "add",
            "10.244.200.0/24",
            "via",
            "10.244.200.0",
            "dev",
            "flannel.1",
            "onlink",
        ],
    );
    let d1 = start_flanneld(&bed, 1, &[]);
    wait_for("the stale route to go", Duration::from_secs(10), || {
        route_to(n1, "10.244.200.0/24").is_empty().then_some(())
    });
    let neigh = ip(n1, &["neigh", "show", "dev", "flannel.1"]);
    assert!(!neigh.contains("10.244.200.0"), "{neigh}");
    let fdb = n1
        .run("bridge", &["fdb", "show", "dev", "flannel.1"])
        .unwrap();
    assert!(!fdb.contains("0e:01:c6:33:64:99"), "{fdb}");
    assert!(!route_to(n1, &env2.cidr()).is_empty(), "live route kept");
    drop((d1, d2));
}

#[test]
fn a_lease_that_disappears_is_taken_again_with_the_same_subnet() {
    let bed = bed(2, false);
    put_config(&bed, VXLAN_CONFIG);
    let d1 = start_flanneld(&bed, 1, &[]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let _ = wait_subnet_file(bed.node(2), &d2);
    // As when the etcd lease expired during an outage: the key is gone.
    etcdctl(&bed, &bed.node(1).host, &["del", &env1.key()]);
    let value = wait_for(
        "the key to be written again",
        Duration::from_secs(10),
        || {
            let v = etcdctl(
                &bed,
                &bed.node(2).host,
                &["get", &env1.key(), "--print-value-only"],
            );
            (!v.trim().is_empty()).then_some(v)
        },
    );
    assert!(
        value.contains(&format!("\"PublicIP\":\"{}\"", bed.node(1).addr)),
        "{value}"
    );
    let env1_after = wait_subnet_file(bed.node(1), &d1);
    assert_eq!(env1_after, env1);
    // Node 2 routes to it again.
    wait_for("node2's route to node1", Duration::from_secs(10), || {
        (!route_to(bed.node(2), &env1.cidr()).is_empty()).then_some(())
    });
}

#[test]
fn reservations_are_honoured_and_never_expire() {
    let bed = bed(2, false);
    put_config(&bed, VXLAN_CONFIG);
    let n1 = bed.node(1);
    // A reservation for node 1, and one for a node that is not running.
    etcdctl(
        &bed,
        &n1.host,
        &[
            "put",
            "/coreos.com/network/subnets/10.244.77.0-24",
            &format!(r#"{{"PublicIP":"{}"}}"#, n1.addr),
        ],
    );
    etcdctl(
        &bed,
        &n1.host,
        &[
            "put",
            "/coreos.com/network/subnets/10.244.78.0-24",
            r#"{"PublicIP":"198.51.100.99"}"#,
        ],
    );
    let d1 = start_flanneld(&bed, 1, &[]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(n1, &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    assert_eq!(env1.cidr(), "10.244.77.0/24");
    assert_ne!(env2.cidr(), "10.244.78.0/24");
    let out = etcdctl(&bed, &n1.host, &["get", &env1.key(), "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["kvs"][0]["lease"].is_null(),
        "a reservation keeps no TTL: {v}"
    );
    // Its value now carries node 1's backend data.
    let value = etcdctl(&bed, &n1.host, &["get", &env1.key(), "--print-value-only"]);
    assert!(value.contains("\"BackendType\":\"vxlan\""), "{value}");
    let other = etcdctl(
        &bed,
        &n1.host,
        &[
            "get",
            "/coreos.com/network/subnets/10.244.78.0-24",
            "--print-value-only",
        ],
    );
    assert_eq!(other.trim(), r#"{"PublicIP":"198.51.100.99"}"#);
}
