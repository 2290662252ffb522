//! The CNI protocol as the agent speaks it, checked with recording plugins (small shell
//! scripts that log their environment and stdin): env vars, config on stdin, prevResult
//! chaining, DEL in reverse order with the cached result, CHECK, GC of stale
//! attachments and the GC command with cni.dev/valid-attachments (CNI 1.1.0). No root
//! needed: nothing touches the network.

use std::path::Path;

use serde_json::{Map, Value, json};
use skein_node_agent::cni::{Attachment, Cni, NetworkList};

/// A plugin that appends `{"cmd","env","conf"}` to calls.log and, for ADD, returns its
/// prevResult with one more IP (10.0.0.<n>/24) or a fresh result.
const RECORDER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
conf=$(cat)
printf '{"cmd":"%s","plugin":"%s","id":"%s","netns":"%s","ifname":"%s","args":"%s","path":"%s","conf":%s}\n' \
  "$CNI_COMMAND" "$(basename "$0")" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$conf" >> "$dir/calls.log"
if [ "$CNI_COMMAND" = ADD ]; then
  if [ "$(basename "$0")" = failing ]; then
    echo '{"cniVersion":"1.1.0","code":11,"msg":"try again later"}'; exit 1
  fi
  n=$(wc -l < "$dir/calls.log")
  echo "{\"cniVersion\":\"1.1.0\",\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"$CNI_NETNS\"}],\"ips\":[{\"address\":\"10.0.0.$n/24\",\"interface\":0}]}"
fi
"#;

fn setup() -> (tempfile::TempDir, Cni) {
    let d = tempfile::tempdir().unwrap();
    for name in ["first", "second", "failing"] {
        let p = d.path().join(name);
        std::fs::write(&p, RECORDER).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cni = Cni {
        bin_dirs: vec![d.path().to_owned()],
        cache_dir: d.path().join("cache"),
    };
    (d, cni)
}

fn calls(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn net(plugins: &[&str]) -> NetworkList {
    let ps: Vec<Value> = plugins
        .iter()
        .map(|p| json!({"type": p, "capabilities": {"portMappings": *p == "second"}}))
        .collect();
    NetworkList::from_value(
        json!({"cniVersion": "1.1.0", "name": "testnet", "plugins": ps}),
        None,
    )
    .unwrap()
}

fn att(id: &str) -> Attachment {
    let mut caps = Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    Attachment {
        container_id: id.into(),
        netns: format!("/run/x/{id}").into(),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAME".into(), "p".into()),
        ],
        capability_args: caps,
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn add_chains_prev_result_and_caches_then_check_and_del_reverse() {
    let (d, cni) = setup();
    let n = net(&["first", "second"]);
    run(async {
        let res = cni.add(&n, &att("abc")).await.unwrap();
        assert_eq!(
            res.ips,
            vec!["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        let c = calls(d.path());
        assert_eq!(c.len(), 2);
        for call in &c {
            assert_eq!(call["cmd"], "ADD");
            assert_eq!(call["id"], "abc");
            assert_eq!(call["netns"], "/run/x/abc");
            assert_eq!(call["ifname"], "eth0");
            assert_eq!(call["args"], "IgnoreUnknown=1;K8S_POD_NAME=p");
            assert_eq!(call["path"], d.path().display().to_string());
            assert_eq!(call["conf"]["name"], "testnet");
            assert_eq!(call["conf"]["cniVersion"], "1.1.0");
        }
        assert!(c[0]["conf"].get("prevResult").is_none());
        assert!(
            c[0]["conf"].get("runtimeConfig").is_none(),
            "first does not declare portMappings"
        );
        assert_eq!(
            c[1]["conf"]["prevResult"]["ips"][0]["address"],
            "10.0.0.1/24"
        );
        assert_eq!(
            c[1]["conf"]["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        let cached = d.path().join("cache/results/testnet-abc-eth0");
        let v: Value = serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
        assert_eq!(v["kind"], "cniCacheV1");
        assert_eq!(v["result"]["ips"][0]["address"], "10.0.0.2/24");

        cni.check(&n, &att("abc")).await.unwrap();
        let c = calls(d.path());
        assert_eq!(
            (c[2]["cmd"].as_str(), c[3]["cmd"].as_str()),
            (Some("CHECK"), Some("CHECK"))
        );
        assert_eq!(
            c[2]["conf"]["prevResult"]["ips"][0]["address"],
            "10.0.0.2/24"
        );

        cni.del(&n, &att("abc")).await.unwrap();
        let c = calls(d.path());
        assert_eq!(c[4]["cmd"], "DEL");
        assert_eq!(c[4]["plugin"], "second", "DEL runs in reverse order");
        assert_eq!(c[5]["plugin"], "first");
        assert_eq!(
            c[5]["conf"]["prevResult"]["ips"][0]["address"],
            "10.0.0.2/24"
        );
        assert!(!cached.exists(), "cache entry dropped");
        // DEL again (no cache) still calls the plugins and succeeds.
        cni.del(&n, &att("abc")).await.unwrap();
        assert!(
            calls(d.path())[6]
                .get("conf")
                .unwrap()
                .get("prevResult")
                .is_none()
        );
        // CHECK without a cached result is an error that says so.
        let e = cni.check(&n, &att("abc")).await.unwrap_err().to_string();
        assert!(e.contains("no cached result"), "{e}");
    });
}

#[test]
fn failed_add_is_rolled_back_with_del_and_reports_the_plugin_error() {
    let (d, cni) = setup();
    let n = net(&["first", "failing"]);
    run(async {
        let e = cni.add(&n, &att("xyz")).await.unwrap_err().to_string();
        assert!(
            e.contains("failing") && e.contains("error code 11: try again later"),
            "{e}"
        );
        let c = calls(d.path());
        let cmds: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c["cmd"].as_str().unwrap(), c["plugin"].as_str().unwrap()))
            .collect();
        assert_eq!(
            cmds,
            [
                ("ADD", "first"),
                ("ADD", "failing"),
                ("DEL", "failing"),
                ("DEL", "first")
            ]
        );
        assert!(!d.path().join("cache/results/testnet-xyz-eth0").exists());
    });
}

#[test]
fn gc_deletes_stale_attachments_and_sends_valid_attachments() {
    let (d, cni) = setup();
    let n = net(&["first", "second"]);
    run(async {
        cni.add(&n, &att("keep")).await.unwrap();
        cni.add(&n, &att("stale")).await.unwrap();
        let before = calls(d.path()).len();
        let removed = cni.gc(&n, &[("keep".into(), "eth0".into())]).await.unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].container_id, "stale");
        let c = &calls(d.path())[before..];
        let cmds: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c["cmd"].as_str().unwrap(), c["id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            cmds,
            [("DEL", "stale"), ("DEL", "stale"), ("GC", ""), ("GC", "")]
        );
        assert_eq!(
            c[2]["conf"]["cni.dev/valid-attachments"],
            json!([{"containerID": "keep", "ifname": "eth0"}])
        );
        assert!(d.path().join("cache/results/testnet-keep-eth0").exists());
        assert!(!d.path().join("cache/results/testnet-stale-eth0").exists());
    });
}

#[test]
fn missing_plugin_is_named() {
    let (_d, cni) = setup();
    let n = net(&["nosuchplugin"]);
    let e = run(cni.add(&n, &att("a"))).unwrap_err().to_string();
    assert!(e.contains("failed to find plugin \"nosuchplugin\""), "{e}");
}
