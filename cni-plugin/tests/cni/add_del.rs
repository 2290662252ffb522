//! ADD, DEL, VERSION; reachability; every config version; the on-disk layout.

use std::net::SocketAddr;

use serde_json::json;

use crate::driver::*;

#[test]
fn add_gives_pods_addresses_that_reach_the_gateway_and_each_other() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = flannel_conf(node, "1.1.0");
    let p1 = Pod::new(&bed, "a");
    let p2 = Pod::new(&bed, "b");

    let r1 = cni(node, &p1.call("ADD"), &conf).ok();
    let r2 = cni(node, &p2.call("ADD"), &conf).ok();

    // The result, as the spec writes it.
    assert_eq!(r1["cniVersion"], "1.1.0");
    assert_eq!(r1["interfaces"][0]["name"], "cni0");
    // The bridge's MAC is fixed (derived from the gateway), not its lowest port's.
    assert_eq!(r1["interfaces"][0]["mac"], "0a:58:0a:f4:01:01");
    assert_eq!(r1["interfaces"][2]["name"], "eth0");
    assert_eq!(
        r1["interfaces"][2]["sandbox"],
        p1.path.display().to_string()
    );
    assert_eq!(r1["interfaces"][2]["mtu"], 1450);
    assert_eq!(r1["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(r1["ips"][0]["gateway"], GATEWAY);
    assert_eq!(r1["ips"][0]["interface"], 2);
    assert!(r1["ips"][0].get("version").is_none());
    let routes = r1["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({"dst": "0.0.0.0/0", "gw": GATEWAY})),
        "{routes:?}"
    );
    assert!(routes.contains(&json!({"dst": CLUSTER_NET})), "{routes:?}");
    assert_eq!(r2["ips"][0]["address"], "10.244.1.3/24");
    assert_eq!(r2["interfaces"][0]["mac"], "0a:58:0a:f4:01:01");

    // The pod's view: lo and eth0 with its address.
    let mut links = p1.links();
    links.sort();
    assert_eq!(links, vec!["eth0", "lo"]);

    // The gateway (the bridge, in the node) answers TCP from the pod.
    let gw: SocketAddr = format!("{GATEWAY}:7001").parse().unwrap();
    let l = node.listen_tcp(gw).unwrap();
    let server = serve_once(l);
    ping_pong(p1.connect(gw).expect("pod 1 reaches its gateway"));
    assert_eq!(server.join().unwrap().unwrap().ip(), pod_ip(&r1));

    // Pod to pod across the bridge.
    pod_to_pod(&p1, &p2, SocketAddr::new(pod_ip(&r2), 7002));

    // host-local's files.
    let dir = node.dirs.ipam_data_dir.join("cbr0");
    assert_eq!(
        std::fs::read(dir.join("10.244.1.2")).unwrap(),
        format!("{}\r\neth0", p1.id).into_bytes()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "10.244.1.3"
    );

    // DEL twice: both succeed, and nothing is left.
    for _ in 0..2 {
        assert_eq!(
            cni(node, &p1.call("DEL"), &conf).ok(),
            serde_json::Value::Null
        );
        cni(node, &p2.call("DEL"), &conf).ok();
    }
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
    assert_eq!(p1.links(), vec!["lo"]);
}

#[test]
fn every_config_version_gets_its_result_shape() {
    let bed = bed(1, false);
    let node = bed.node(1);
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let conf = flannel_conf(node, v);
        let pod = Pod::new(&bed, &format!("v{i}"));
        let r = cni(node, &pod.call("ADD"), &conf).ok();
        assert_eq!(r["cniVersion"], *v);
        let legacy = v.starts_with("0.");
        assert_eq!(r["ips"][0].get("version").is_some(), legacy, "{v}: {r}");
        if legacy {
            assert_eq!(r["ips"][0]["version"], "4");
        }
        assert_eq!(
            r["interfaces"][2].get("mtu").is_some(),
            *v == "1.1.0",
            "{v}: {r}"
        );
        if *v != "0.3.0" && *v != "0.3.1" {
            let mut check = conf.clone();
            check["prevResult"] = r.clone();
            cni(node, &pod.call("CHECK"), &check).ok();
        }
        let mut del = conf.clone();
        del["prevResult"] = r;
        cni(node, &pod.call("DEL"), &del).ok();
    }
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
}

#[test]
fn version_lists_every_supported_version() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let call = Call {
        command: "VERSION",
        ..Default::default()
    };
    let v = cni(node, &call, &json!({"cniVersion": "0.4.0"})).ok();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    // Without a config, the newest.
    let a = exec(node, &skein_cni(), &call, b"");
    assert_eq!(a.ok()["cniVersion"], "1.1.0");
}

#[test]
fn del_succeeds_after_the_netns_is_gone() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = flannel_conf(node, "1.0.0");
    let mut pod = Pod::new(&bed, "gone");
    cni(node, &pod.call("ADD"), &conf).ok();
    pod.delete();
    cni(node, &pod.call("DEL"), &conf).ok();
    // And with CNI_NETNS not set at all, again.
    let call = Call {
        netns: None,
        ..pod.call("DEL")
    };
    cni(node, &call, &conf).ok();
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
}

#[test]
fn del_of_something_never_added_succeeds() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let pod = Pod::new(&bed, "never");
    cni(node, &pod.call("DEL"), &flannel_conf(node, "1.1.0")).ok();
    // Even when the subnet file is gone (flanneld stopped).
    std::fs::remove_file(&node.dirs.subnet_file).unwrap();
    cni(node, &pod.call("DEL"), &flannel_conf(node, "1.1.0")).ok();
}

#[test]
fn on_disk_layout_is_the_same_as_reference_host_local() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let ours = node.dirs.root.join("ours");
    let theirs = node.dirs.root.join("theirs");
    let ipam = |dir: &std::path::Path| json!({ "type": "host-local", "subnet": "10.244.1.0/24", "dataDir": dir });
    let pods: Vec<Pod> = (0..3).map(|i| Pod::new(&bed, &format!("l{i}"))).collect();
    for p in &pods {
        let conf =
            json!({"cniVersion": "1.0.0", "name": "net", "type": "skein-cni", "ipam": ipam(&ours)});
        cni(node, &p.call("ADD"), &conf).ok();
        let hl = json!({"cniVersion": "1.0.0", "name": "net", "type": "host-local", "ipam": ipam(&theirs)});
        let a = exec(
            node,
            std::path::Path::new("/usr/lib/cni/host-local"),
            &p.call("ADD"),
            hl.to_string().as_bytes(),
        );
        a.ok();
    }
    // Free the middle one in both, so last_reserved and holes are compared too.
    let conf =
        json!({"cniVersion": "1.0.0", "name": "net", "type": "skein-cni", "ipam": ipam(&ours)});
    cni(node, &pods[1].call("DEL"), &conf).ok();
    let hl =
        json!({"cniVersion": "1.0.0", "name": "net", "type": "host-local", "ipam": ipam(&theirs)});
    exec(
        node,
        std::path::Path::new("/usr/lib/cni/host-local"),
        &pods[1].call("DEL"),
        hl.to_string().as_bytes(),
    )
    .ok();

    let listing = |d: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        let mut v: Vec<(String, Vec<u8>, u32)> = std::fs::read_dir(d.join("net"))
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let content = if name == "lock" {
                    Vec::new()
                } else {
                    std::fs::read(e.path()).unwrap()
                };
                (
                    name,
                    content,
                    e.metadata().unwrap().permissions().mode() & 0o777,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(&ours), listing(&theirs));
    // Reference host-local reads our store: it sees pod 0's address as taken.
    let again = exec(
        node,
        std::path::Path::new("/usr/lib/cni/host-local"),
        &pods[0].call("ADD"),
        json!({"cniVersion": "1.0.0", "name": "net", "type": "host-local", "ipam": ipam(&ours)})
            .to_string()
            .as_bytes(),
    );
    assert_ne!(
        again.status, 0,
        "host-local must refuse a duplicate in our store: {}",
        again.stdout
    );
    for p in [&pods[0], &pods[2]] {
        cni(node, &p.call("DEL"), &conf).ok();
    }
    assert_no_veths(node);
}

#[test]
fn netns_given_as_a_process_path_like_a_pause_container() {
    // Runtimes often pass /proc/<pid>/ns/net of the sandbox's pause process.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let bed = bed(1, false);
    let node = bed.node(1);
    // `unshare` without --fork execs sleep in place: the child's pid is sleep's.
    let pause = Kill(
        std::process::Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .spawn()
            .expect("start a pause process in its own netns"),
    );
    let path = std::path::PathBuf::from(format!("/proc/{}/ns/net", pause.0.id()));
    // Wait until unshare has exec'ed (its netns differs from ours).
    let ours = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    for _ in 0..100 {
        let ino = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        if ino != ours {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let id = format!("{}pause", bed.prefix());
    let call = Call {
        command: "ADD",
        container_id: &id,
        netns: Some(&path),
        ifname: "eth0",
        path: None,
    };
    let conf = flannel_conf(node, "1.0.0");
    let r = cni(node, &call, &conf).ok();
    assert_eq!(r["interfaces"][2]["sandbox"], path.display().to_string());
    // The pause process's namespace holds the pod's address.
    let ns = skein_netns::NetNs::open(&path).unwrap();
    let addrs = skein_netns::netlink::Netlink::open_in(&ns)
        .unwrap()
        .addresses(None)
        .unwrap();
    assert!(addrs.iter().any(|a| a.addr == pod_ip(&r)), "{addrs:?}");
    drop(ns);
    cni(
        node,
        &Call {
            command: "DEL",
            ..call
        },
        &conf,
    )
    .ok();
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
}
