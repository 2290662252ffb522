//! A node set up the way real flannel sets one up (its VXLAN device, its lease JSON
//! written byte for byte as flannel writes it, its neighbour/FDB/route entries made by
//! hand) shares the network with nodes running our flanneld.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_flannel_style_node_and_our_nodes_share_one_network() {
    let bed = bed(3, false);
    put_config(&bed, VXLAN_CONFIG);
    let d1 = start_flanneld(&bed, 1, &[]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);

    // Node 3, "real flannel": device, address, lease on an etcd lease.
    let n3 = bed.node(3);
    let mac3 = "0e:aa:bb:cc:dd:03";
    let local = n3.addr.to_string();
    ip(
        n3,
        &[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local,
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ],
    );
    ip(
        n3,
        &[
            "link",
            "set",
            "flannel.1",
            "address",
            mac3,
            "mtu",
            "1450",
            "up",
        ],
    );
    ip(n3, &["addr", "add", "10.244.250.0/32", "dev", "flannel.1"]);
    n3.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .expect("sysctl");
    let grant = etcdctl(&bed, &n3.host, &["lease", "grant", "600"]);
    let lease_id = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    let value = format!(
        r#"{{"PublicIP":"{local}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac3}"}}}}"#
    );
    etcdctl(
        &bed,
        &n3.host,
        &[
            "put",
            "--lease",
            &lease_id,
            "/coreos.com/network/subnets/10.244.250.0-24",
            &value,
        ],
    );
    let env3 = SubnetEnv {
        network: env1.network.clone(),
        subnet: "10.244.250.1/24".into(),
        mtu: 1450,
        ipmasq: false,
    };
    // What flannel on node 3 would program for our two nodes, read from their leases.
    for env in [&env1, &env2] {
        let v: serde_json::Value = serde_json::from_str(&etcdctl(
            &bed,
            &n3.host,
            &["get", &env.key(), "--print-value-only"],
        ))
        .unwrap();
        let mac = v["BackendData"]["VtepMAC"].as_str().unwrap().to_owned();
        let public = v["PublicIP"].as_str().unwrap().to_owned();
        let vtep = env.network_addr().to_string();
        ip(
            n3,
            &[
                "neigh",
                "add",
                &vtep,
                "lladdr",
                &mac,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        );
        n3.run(
            "bridge",
            &[
                "fdb",
                "add",
                &mac,
                "dev",
                "flannel.1",
                "dst",
                &public,
                "self",
                "permanent",
            ],
        )
        .unwrap();
        ip(
            n3,
            &[
                "route",
                "add",
                &env.cidr(),
                "via",
                &vtep,
                "dev",
                "flannel.1",
                "onlink",
            ],
        );
    }

    let p1 = wire_pods(&bed, 1, &env1, 1);
    let p2 = wire_pods(&bed, 2, &env2, 1);
    let p3 = wire_pods(&bed, 3, &env3, 1);
    for (k, (a, b)) in [
        (&p1[0], &p3[0]),
        (&p3[0], &p1[0]),
        (&p2[0], &p3[0]),
        (&p3[0], &p2[0]),
    ]
    .into_iter()
    .enumerate()
    {
        tcp_eventually(&a.host, &b.host, 25000 + k as u16, Duration::from_secs(20));
    }
    // Our nodes programmed node 3 from its flannel-written lease.
    let neigh = ip(bed.node(1), &["neigh", "show", "dev", "flannel.1"]);
    assert!(
        neigh.contains(&format!("10.244.250.0 lladdr {mac3} PERMANENT")),
        "{neigh}"
    );
}
