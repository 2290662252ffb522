//! `make demo` as a test: a 3-node cluster brought up by skeinctl's own code, the
//! manifests in examples/ applied, and every row of `skeinctl check` (the table the demo
//! prints) must pass: pod to pod on one node and across nodes, pod to the Service by
//! ClusterIP and by DNS name through the pod's resolv.conf, outside to the NodePort on
//! every node.

use std::time::Duration;

use skein_e2e::cluster::{Cluster, wait_for};

#[test]
fn the_demo_checks_pass_on_a_fresh_cluster_with_the_examples() {
    let c = Cluster::start(3);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut manifests: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    manifests.sort();
    assert!(
        !manifests.is_empty(),
        "no manifests in {}",
        examples.display()
    );
    for m in &manifests {
        c.apply(&std::fs::read_to_string(m).unwrap());
    }
    let want = c.get_json(&["deployment", "hello"])["spec"]["replicas"]
        .as_u64()
        .unwrap();
    wait_for(
        "every hello pod ready (kubectl rollout status)",
        Duration::from_secs(180),
        || {
            let d = c.get_json(&["deployment", "hello"]);
            let ready = d["status"]["readyReplicas"].as_u64().unwrap_or(0);
            if ready == want {
                Ok(())
            } else {
                Err(format!("{ready} of {want} ready"))
            }
        },
    );
    // The Services' endpoints are published once the pods are ready; wait for all of
    // them before the one-shot requests.
    wait_for("hello's endpoints", Duration::from_secs(30), || {
        let s = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=hello"]);
        let n: usize = s["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if n as u64 == want {
            Ok(())
        } else {
            Err(format!("{n} ready endpoints"))
        }
    });

    let rows = skeinctl::check::run(&c.options().name).expect("run the demo's checks");
    let table = skeinctl::check::table(&rows);
    eprintln!("{table}");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for want in [
        "pod to pod, same node",
        "pod to pod, across nodes",
        "pod to Service ClusterIP",
        "pod to Service by DNS name",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "no row {want:?}: {table}"
        );
    }
    for i in 1..=3 {
        let row = format!("outside to NodePort 198.51.100.1{i}:30080 (node{i})");
        assert!(names.contains(&row.as_str()), "no row {row:?}: {table}");
    }
    assert!(
        rows.iter().all(|r| r.pass),
        "demo checks failed:\n{table}\n{}",
        c.logs()
    );
}
