//! kubectl against a real skein-apiserver on real etcd, all inside test namespaces.

mod support;

use serde_json::Value;
use support::Api;

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";

#[test]
fn discovery_create_get_and_delete_with_kubectl() {
    let api = Api::start();
    let v = api.kubectl(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
    let resources = api.kubectl(&["api-resources", "--no-headers"]);
    for r in [
        "pods",
        "deployments",
        "endpointslices",
        "leases",
        "namespaces",
    ] {
        assert!(
            resources.lines().any(|l| l.starts_with(r)),
            "{r} missing from:\n{resources}"
        );
    }
    // The namespaces and the kubernetes Service exist from the start.
    let ns = api.kubectl(&["get", "namespaces", "--no-headers"]);
    assert!(ns.contains("default") && ns.contains("kube-system"), "{ns}");
    let svc = api.get_json(&["service", "kubernetes"]);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");

    // kubectl's generator subcommands send protobuf (deployments and services: see
    // tests/protobuf.rs).
    api.kubectl(&["create", "namespace", "made-by-kubectl"]);
    api.kubectl(&[
        "create",
        "configmap",
        "gen",
        "-n",
        "made-by-kubectl",
        "--from-literal=a=b",
    ]);
    let generated = api.get_json(&["configmap", "gen", "-n", "made-by-kubectl"]);
    assert_eq!(generated["data"]["a"], "b");
    api.kubectl(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=hunter2",
    ]);
    assert_eq!(
        api.get_json(&["secret", "pw"])["data"]["password"],
        "aHVudGVyMg=="
    );
    api.kubectl_in(&["create", "-f", "-"], CM);
    let cm = api.get_json(&["configmap", "settings"]);
    assert_eq!(cm["data"]["color"], "blue");
    assert!(!cm["metadata"]["uid"].as_str().unwrap().is_empty());
    assert!(
        cm["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    let err = api.kubectl_fails(&["create", "-f", "-"], Some(CM));
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
    let table = api.kubectl(&["get", "configmaps"]);
    assert!(table.lines().next().unwrap().contains("DATA"), "{table}");
    let jp = api.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.data.color}",
    ]);
    assert_eq!(jp, "blue");
    let yaml = api.kubectl(&["get", "configmap", "settings", "-o", "yaml"]);
    assert!(yaml.contains("color: blue"), "{yaml}");
    api.kubectl(&["delete", "configmap", "settings"]);
    let err = api.kubectl_fails(&["get", "configmap", "settings"], None);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}
