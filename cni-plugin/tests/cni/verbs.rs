//! CHECK, STATUS and GC.

use serde_json::json;
use skein_netns::netlink::{Address, Netlink};

use crate::driver::*;

#[test]
fn check_passes_on_a_healthy_pod_and_names_what_changed() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = flannel_conf(node, "1.0.0");
    let pod = Pod::new(&bed, "chk");
    let r = cni(node, &pod.call("ADD"), &conf).ok();
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    cni(node, &pod.call("CHECK"), &check).ok();

    // CHECK without prevResult: invalid config.
    let msg = cni(node, &pod.call("CHECK"), &conf).err(7);
    assert!(msg.contains("prevResult"), "{msg}");
    // CHECK is not part of 0.3.x.
    let mut old = check.clone();
    old["cniVersion"] = json!("0.3.1");
    cni(node, &pod.call("CHECK"), &old).err(1);

    // Remove the pod's address behind the plugin's back: CHECK says so.
    {
        let mut nl = Netlink::open_in(pod.ns()).unwrap();
        let eth0 = nl.link("eth0").unwrap().unwrap();
        nl.del_address(&Address {
            index: eth0.index,
            addr: pod_ip(&r),
            prefix_len: 24,
        })
        .unwrap();
    }
    let msg = cni(node, &pod.call("CHECK"), &check).err(103);
    assert!(msg.contains(&pod_ip(&r).to_string()), "{msg}");

    cni(node, &pod.call("DEL"), &check).ok();
    // After DEL, CHECK fails (the allocation is gone).
    cni(node, &pod.call("CHECK"), &check).err(103);
    assert_no_veths(node);
}

#[test]
fn status_is_ready_only_with_a_usable_subnet_and_data_dir() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let call = Call {
        command: "STATUS",
        ..Default::default()
    };
    let conf = flannel_conf(node, "1.1.0");
    assert_eq!(cni(node, &call, &conf).ok(), serde_json::Value::Null);

    std::fs::remove_file(&node.dirs.subnet_file).unwrap();
    let msg = cni(node, &call, &conf).err(50);
    assert!(msg.contains("subnet"), "{msg}");
    write_subnet_file(node, true);

    // A data dir that cannot be written (a regular file where the dir should be).
    let blocked = node.dirs.root.join("blocked");
    std::fs::write(&blocked, "").unwrap();
    let mut c = conf.clone();
    c["ipam"]["dataDir"] = json!(blocked);
    let msg = cni(node, &call, &c).err(50);
    assert!(msg.contains("blocked"), "{msg}");

    // STATUS exists only from 1.1.0.
    cni(node, &call, &flannel_conf(node, "1.0.0")).err(1);
}

#[test]
fn gc_releases_what_is_not_valid_and_removes_leftover_veths() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = flannel_conf(node, "1.1.0");
    let keep = Pod::new(&bed, "keep");
    let lost = Pod::new(&bed, "lost");
    let rk = cni(node, &keep.call("ADD"), &conf).ok();
    cni(node, &lost.call("ADD"), &conf).ok();
    // An allocation whose container is long gone (no veth at all).
    std::fs::write(
        node.dirs.ipam_data_dir.join("cbr0/10.244.1.200"),
        "stale\r\neth0",
    )
    .unwrap();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
    let call = Call {
        command: "GC",
        ..Default::default()
    };
    cni(node, &call, &gc).ok();

    let files = ipam_files(node, "cbr0");
    let ips: Vec<&String> = files.iter().filter(|f| f.starts_with("10.")).collect();
    assert_eq!(
        ips,
        vec![&pod_ip(&rk).to_string()],
        "only the valid attachment keeps its address"
    );
    let links = node_links(node);
    let veths: Vec<&String> = links.iter().filter(|l| l.starts_with("veth")).collect();
    assert_eq!(veths.len(), 1, "{links:?}");
    assert_eq!(
        lost.links(),
        vec!["lo"],
        "the lost pod's interface went with its veth"
    );
    // The kept pod still works.
    let mut check = conf.clone();
    check["prevResult"] = rk;
    cni(node, &keep.call("CHECK"), &check).ok();

    // GC exists only from 1.1.0.
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    cni(node, &call, &old).err(1);

    cni(node, &keep.call("DEL"), &conf).ok();
    assert_no_veths(node);
    assert_no_allocations(node, "cbr0");
}

#[test]
fn status_and_gc_are_passed_to_a_delegated_ipam_plugin() {
    use std::os::unix::fs::PermissionsExt;
    let bed = bed(1, false);
    let node = bed.node(1);
    // A stand-in IPAM plugin that is not ready and records GC calls.
    let dir = node.dirs.root.join("fake-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = node.dirs.root.join("gc-called");
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\ncase \"$CNI_COMMAND\" in\n\
         STATUS) echo '{{\"cniVersion\":\"1.1.0\",\"code\":50,\"msg\":\"fake ipam pool offline\"}}'; exit 1;;\n\
         GC) touch {};;\n\
         esac\n",
        marker.display()
    );
    let bin = dir.join("fake-ipam");
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        skein_cni().parent().unwrap().display(),
        dir.display()
    );
    let conf = json!({"cniVersion": "1.1.0", "name": "fake", "type": "skein-cni", "ipam": {"type": "fake-ipam"}});

    let call = Call {
        command: "STATUS",
        path: Some(&path),
        ..Default::default()
    };
    let msg = cni(node, &call, &conf).err(50);
    assert!(msg.contains("fake ipam pool offline"), "{msg}");

    let call = Call {
        command: "GC",
        path: Some(&path),
        ..Default::default()
    };
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    cni(node, &call, &gc).ok();
    assert!(marker.exists(), "GC reached the delegated IPAM plugin");
}
