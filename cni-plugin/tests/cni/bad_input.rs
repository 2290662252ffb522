//! Bad input: each case fails with the right code and a message naming the problem, and
//! leaves nothing behind (no veth, no address file, nothing in the pod).

use serde_json::{Value, json};

use crate::driver::*;

fn assert_clean(bed: &skein_testbed::TestBed, pod: &Pod) {
    let node = bed.node(1);
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
    assert_eq!(pod.links(), vec!["lo"], "pod netns must be untouched");
}

#[test]
fn bad_input_table() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let pod = Pod::new(&bed, "bad");
    let good = flannel_conf(node, "1.0.0");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let missing_file = node.dirs.root.join("no-such-subnet.env");
    let malformed_file = node.dirs.root.join("malformed.env");
    std::fs::write(
        &malformed_file,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/99\n",
    )
    .unwrap();

    let configs: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("malformed JSON", b"{\"cniVersion\": \"1.0.0\", ".to_vec(), 6, "decode"),
        ("unknown cniVersion", with(&|c| c["cniVersion"] = json!("0.9.9")).to_string().into_bytes(), 1, "0.9.9"),
        ("invalid CIDR", with(&|c| c["ipam"]["subnet"] = json!("10.244.1.0/40")).to_string().into_bytes(), 7, "10.244.1.0/40"),
        (
            "invalid range",
            with(&|c| {
                c["ipam"]["ranges"] = json!([[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.50", "rangeEnd": "10.244.1.10"}]])
            })
            .to_string()
            .into_bytes(),
            7,
            "rangeStart",
        ),
        (
            "range outside subnet",
            with(&|c| c["ipam"]["ranges"] = json!([[{"subnet": "10.244.1.0/24", "rangeEnd": "10.244.9.10"}]])).to_string().into_bytes(),
            7,
            "10.244.9.10",
        ),
        (
            "gateway outside the subnet",
            with(&|c| {
                c["ipam"]["subnet"] = json!("10.244.1.0/24");
                c["ipam"]["gateway"] = json!("10.244.2.1");
            })
            .to_string()
            .into_bytes(),
            7,
            "gateway 10.244.2.1",
        ),
        ("subnet file missing", with(&|c| c["subnetFile"] = json!(missing_file)).to_string().into_bytes(), 11, "no-such-subnet.env"),
        ("subnet file malformed", with(&|c| c["subnetFile"] = json!(malformed_file)).to_string().into_bytes(), 7, "FLANNEL_SUBNET"),
        ("mtu of the wrong type", with(&|c| c["mtu"] = json!("big")).to_string().into_bytes(), 6, "mtu"),
    ];
    for (what, stdin, code, needle) in configs {
        let a = exec(node, &skein_cni(), &pod.call("ADD"), &stdin);
        let msg = a.err(code);
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} does not name {needle:?}"
        );
        assert_clean(&bed, &pod);
    }

    // Missing environment: code 4, naming the variable.
    for var in ["CNI_NETNS", "CNI_IFNAME", "CNI_CONTAINERID"] {
        let mut call = pod.call("ADD");
        match var {
            "CNI_NETNS" => call.netns = None,
            "CNI_IFNAME" => call.ifname = "",
            _ => call.container_id = "",
        }
        let msg = cni(node, &call, &good).err(4);
        assert!(msg.contains(var), "{msg}");
        assert_clean(&bed, &pod);
    }
    let msg = cni(
        node,
        &Call {
            command: "",
            ..pod.call("ADD")
        },
        &good,
    )
    .err(4);
    assert!(msg.contains("CNI_COMMAND"), "{msg}");
    // A netns that does not exist: container unknown.
    let nowhere = node.dirs.root.join("no-such-netns");
    let msg = cni(
        node,
        &Call {
            netns: Some(&nowhere),
            ..pod.call("ADD")
        },
        &good,
    )
    .err(3);
    assert!(msg.contains("no-such-netns"), "{msg}");
    assert_clean(&bed, &pod);
    // Errors go to stdout as JSON, logs only to stderr: stdout is exactly one JSON value.
    let a = cni(
        node,
        &Call {
            netns: Some(&nowhere),
            ..pod.call("ADD")
        },
        &good,
    );
    assert!(a.stdout.trim().starts_with('{') && a.stdout.trim().ends_with('}'));
    assert!(a.stderr.contains("no-such-netns"), "stderr: {}", a.stderr);
}

#[test]
fn exhausted_range_fails_and_leaves_nothing() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "cbr0", "type": "skein-cni",
        "ipam": {"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.2", "rangeEnd": "10.244.1.2",
                 "dataDir": node.dirs.ipam_data_dir},
    });
    let p1 = Pod::new(&bed, "e1");
    let p2 = Pod::new(&bed, "e2");
    cni(node, &p1.call("ADD"), &conf).ok();
    let msg = cni(node, &p2.call("ADD"), &conf).err(101);
    assert!(msg.contains("no free address"), "{msg}");
    assert_eq!(p2.links(), vec!["lo"]);
    cni(node, &p1.call("DEL"), &conf).ok();
    assert_clean(&bed, &p2);
}

#[test]
fn failure_half_way_rolls_back_address_and_veth() {
    // The pod already has an eth0: ADD allocates an address, then fails creating the
    // veth; the address must be released and no host veth left.
    let bed = bed(1, false);
    let node = bed.node(1);
    let pod = Pod::new(&bed, "rb");
    {
        let mut nl = skein_netns::netlink::Netlink::open_in(pod.ns()).unwrap();
        nl.add_bridge("eth0", None).unwrap();
    }
    let msg = cni(node, &pod.call("ADD"), &flannel_conf(node, "1.0.0")).err(100);
    assert!(msg.contains("eth0 already exists"), "{msg}");
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
    let mut links = pod.links();
    links.sort();
    assert_eq!(
        links,
        vec!["eth0", "lo"],
        "the pod's own eth0 is left alone"
    );
    // A later ADD for a different interface name works.
    let call = Call {
        ifname: "net1",
        ..pod.call("ADD")
    };
    cni(node, &call, &flannel_conf(node, "1.0.0")).ok();
    cni(
        node,
        &Call {
            command: "DEL",
            ..call
        },
        &flannel_conf(node, "1.0.0"),
    )
    .ok();
    assert_no_veths(node);
}

#[test]
fn failure_at_the_last_step_rolls_back_everything() {
    // The pod is fully wired when masquerading fails (a conflicting nftables map of the
    // same name exists in the node): ADD must undo the veth, the pod's addresses and
    // routes (they go with the veth) and the address file.
    let bed = bed(1, false);
    let node = bed.node(1);
    node.run(
        "nft",
        &["add table ip skein-cni; add map ip skein-cni pods { type ipv4_addr : ipv4_addr; }"],
    )
    .unwrap();
    let pod = Pod::new(&bed, "late");
    let mut conf = flannel_conf(node, "1.0.0");
    conf["ipMasq"] = json!(true);
    let msg = cni(node, &pod.call("ADD"), &conf).err(100);
    assert!(msg.contains("nft"), "{msg}");
    assert_clean(&bed, &pod);
}

#[test]
fn errors_are_logged_to_the_configured_log_file_not_stdout() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let log = node.dirs.log_dir.join("skein-cni.log");
    let mut conf = flannel_conf(node, "1.0.0");
    conf["logFile"] = json!(log);
    conf["subnetFile"] = json!(node.dirs.root.join("missing.env"));
    let pod = Pod::new(&bed, "log");
    let a = cni(node, &pod.call("ADD"), &conf);
    assert!(a.stderr.is_empty(), "stderr: {}", a.stderr);
    a.err(11);
    let text = std::fs::read_to_string(&log).expect("log file written");
    assert!(
        text.contains("missing.env") && text.contains(&pod.id),
        "{text}"
    );
}
