//! 50 ADDs at once: 50 distinct addresses; 50 DELs at once: nothing left.

use std::collections::HashSet;
use std::process::Child;

use crate::driver::*;

fn spawn(node: &skein_testbed::Host, call: &Call<'_>, conf: &serde_json::Value) -> Child {
    use std::io::Write;
    let mut cmd = node.command(skein_cni()).unwrap();
    configure(&mut cmd, call);
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

#[test]
fn fifty_concurrent_adds_get_distinct_addresses_and_dels_leave_nothing() {
    const N: usize = 50;
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = flannel_conf(node, "1.0.0");
    let pods: Vec<Pod> = (0..N).map(|i| Pod::new(&bed, &format!("c{i}"))).collect();

    let children: Vec<Child> = pods
        .iter()
        .map(|p| spawn(node, &p.call("ADD"), &conf))
        .collect();
    let mut ips = HashSet::new();
    for (p, c) in pods.iter().zip(children) {
        let r = answer(c.wait_with_output().unwrap()).ok();
        assert!(
            ips.insert(pod_ip(&r)),
            "duplicate address {} for {}",
            pod_ip(&r),
            p.id
        );
    }
    assert_eq!(ips.len(), N);
    let files = ipam_files(node, "cbr0");
    assert_eq!(
        files.iter().filter(|f| f.starts_with("10.244.1.")).count(),
        N
    );
    // Every pod has its address on eth0 (the first and last one checked by TCP).
    pod_to_pod(
        &pods[0],
        &pods[N - 1],
        std::net::SocketAddr::new(
            *ips.iter()
                .find(|ip| {
                    std::fs::read_to_string(
                        node.dirs.ipam_data_dir.join("cbr0").join(ip.to_string()),
                    )
                    .unwrap()
                    .starts_with(&pods[N - 1].id)
                })
                .unwrap(),
            7100,
        ),
    );

    let children: Vec<Child> = pods
        .iter()
        .map(|p| spawn(node, &p.call("DEL"), &conf))
        .collect();
    for c in children {
        answer(c.wait_with_output().unwrap()).ok();
    }
    let left = ipam_files(node, "cbr0");
    assert_eq!(left, vec!["last_reserved_ip.0", "lock"]);
    assert_no_veths(node);
}
