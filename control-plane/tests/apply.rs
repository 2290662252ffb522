//! kubectl apply (client-side and server-side), scale, selectors, wide output, cascading
//! and namespace deletion against a real skein-apiserver.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::Api;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn seed_manifests_apply_cleanly_and_print_the_usual_columns() {
    let api = Api::start();
    let out = api.kubectl(&["apply", "-f", &Api::fixture("nginx.yaml")]);
    assert!(
        out.contains("deployment.apps/nginx created") && out.contains("service/nginx created"),
        "{out}"
    );
    // Applying again changes nothing.
    let out = api.kubectl(&["apply", "-f", &Api::fixture("nginx.yaml")]);
    assert!(
        out.contains("deployment.apps/nginx unchanged") && out.contains("service/nginx unchanged"),
        "{out}"
    );
    let d = api.get_json(&["deployment", "nginx"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 1);
    let svc = api.get_json(&["service", "nginx"]);
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.") && ip != "10.96.0.1", "{ip}");
    let wide = api.kubectl(&["get", "deployments", "-o", "wide"]);
    let header = wide.lines().next().unwrap();
    for col in [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(header.contains(col), "{col} missing: {wide}");
    }
    assert!(
        wide.contains("nginx:1.27") && wide.contains("app=nginx"),
        "{wide}"
    );
    let svcs = api.kubectl(&["get", "svc", "-o", "wide"]);
    assert!(
        svcs.contains("80:30080/TCP") && svcs.contains("NodePort") && svcs.contains(ip),
        "{svcs}"
    );
    // A second Service asking for the same node port is refused.
    let clash = "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  type: NodePort\n  ports:\n  - port: 81\n    nodePort: 30080\n";
    let err = api.kubectl_fails(&["apply", "-f", "-"], Some(clash));
    assert!(err.contains("provided port is already allocated"), "{err}");
    // Scale through the scale subresource.
    api.kubectl(&["scale", "deployment", "nginx", "--replicas=5"]);
    assert_eq!(
        api.get_json(&["deployment", "nginx"])["spec"]["replicas"],
        5
    );
    // Deleting the Service frees its node port for the next one.
    api.kubectl(&["delete", "service", "nginx"]);
    api.kubectl_in(&["apply", "-f", "-"], &clash.replace("clash", "reuse"));
    assert_eq!(
        api.get_json(&["service", "reuse"])["spec"]["ports"][0]["nodePort"],
        30080
    );
}

#[test]
fn reapply_with_a_changed_image_keeps_both_containers_and_ports() {
    let api = Api::start();
    let manifest = std::fs::read_to_string(Api::fixture("two-containers.yaml")).unwrap();
    api.kubectl_in(&["apply", "-f", "-"], &manifest);
    let out = api.kubectl_in(
        &["apply", "-f", "-"],
        &manifest.replace("nginx:1.25", "nginx:1.27"),
    );
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let d = api.get_json(&["deployment", "web"]);
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2, "{cs:?}");
    assert_eq!(cs[0]["name"], "web");
    assert_eq!(cs[0]["image"], "nginx:1.27");
    assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
    assert_eq!(cs[1]["name"], "metrics");
    assert_eq!(cs[1]["ports"][0]["containerPort"], 9102);
    assert_eq!(d["metadata"]["generation"], 2);
    // Server-side apply of another change by a second manager.
    let ssa = manifest
        .replace("replicas: 2", "replicas: 4")
        .replace("nginx:1.25", "nginx:1.27");
    let out = api.kubectl_in(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &ssa,
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let d = api.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Server-side apply creates what is absent.
    let out = api.kubectl_in(
        &["apply", "--server-side", "-f", "-"],
        &manifest.replace("name: web\nspec", "name: web2\nspec"),
    );
    assert!(
        out.contains("deployment.apps/web2 serverside-applied"),
        "{out}"
    );
    assert_eq!(api.get_json(&["deployment", "web2"])["spec"]["replicas"], 2);
}

fn pod(name: &str, labels: &str, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!("  nodeName: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n{node}  containers:\n  - name: c\n    image: busybox\n"
    )
}

#[test]
fn label_and_field_selectors_and_wide_pod_columns() {
    let api = Api::start();
    api.kubectl_in(
        &["apply", "-f", "-"],
        &pod("a", "{app: web, tier: front}", Some("node1")),
    );
    api.kubectl_in(
        &["apply", "-f", "-"],
        &pod("b", "{app: web, tier: back}", None),
    );
    api.kubectl_in(&["apply", "-f", "-"], &pod("c", "{app: db}", None));
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["get", "pods", "-o", "name"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = api.kubectl(&a).lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["-l", "app=web"]), ["pod/a", "pod/b"]);
    assert_eq!(names(&["-l", "app!=web"]), ["pod/c"]);
    assert_eq!(names(&["-l", "tier in (front,side)"]), ["pod/a"]);
    assert_eq!(names(&["-l", "tier notin (front)"]), ["pod/b", "pod/c"]);
    assert_eq!(names(&["-l", "!tier"]), ["pod/c"]);
    assert_eq!(names(&["-l", "tier"]), ["pod/a", "pod/b"]);
    assert_eq!(
        names(&["--field-selector", "spec.nodeName=node1"]),
        ["pod/a"]
    );
    assert_eq!(
        names(&["--field-selector", "status.phase=Pending,metadata.name!=a"]),
        ["pod/b", "pod/c"]
    );
    let err = api.kubectl_fails(&["get", "pods", "--field-selector", "spec.bogus=1"], None);
    assert!(err.contains("field label not supported"), "{err}");
    let wide = api.kubectl(&["get", "pods", "-o", "wide"]);
    let header = wide.lines().next().unwrap();
    assert!(
        header.contains("IP") && header.contains("NODE") && header.contains("STATUS"),
        "{wide}"
    );
    let a = wide.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(
        a.contains("node1") && a.contains("0/1") && a.contains("Pending"),
        "{a}"
    );
    // Nodes print INTERNAL-IP with -o wide.
    api.kubectl_in(&["apply", "-f", "-"], "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\nstatus:\n  addresses:\n  - {type: InternalIP, address: 198.51.100.11}\n  conditions:\n  - {type: Ready, status: \"True\"}\n");
    let nodes = api.kubectl(&["get", "nodes", "-o", "wide"]);
    assert!(
        nodes.lines().next().unwrap().contains("INTERNAL-IP"),
        "{nodes}"
    );
    let n1 = nodes.lines().find(|l| l.starts_with("node1")).unwrap();
    assert!(
        n1.contains("198.51.100.11") && n1.contains("Ready"),
        "{nodes}"
    );
    // Paging: limit/continue through kubectl's chunking.
    let all = api.kubectl(&["get", "pods", "--chunk-size=1", "-o", "name"]);
    assert_eq!(all.lines().count(), 3, "{all}");
}

#[test]
fn deletion_cascades_and_namespaces_empty_before_they_go() {
    let api = Api::start();
    api.kubectl(&["apply", "-f", &Api::fixture("nginx.yaml")]);
    let uid = api.get_json(&["deployment", "nginx"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    // A ReplicaSet owned by the Deployment, and a Pod owned by the ReplicaSet (the
    // controller manager makes these; here the test does).
    let rs_of = |uid: &str| {
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: nginx-abc\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: Deployment, name: nginx, uid: {uid}, controller: true}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: nginx}}}}\n  template:\n    metadata: {{labels: {{app: nginx}}}}\n    spec: {{containers: [{{name: main, image: nginx}}]}}\n"
        )
    };
    api.kubectl_in(&["apply", "-f", "-"], &rs_of(&uid));
    let rs_uid = api.get_json(&["rs", "nginx-abc"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx-abc-1\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: ReplicaSet, name: nginx-abc, uid: {rs_uid}}}\nspec:\n  containers: [{{name: main, image: nginx}}]\n"
    );
    api.kubectl_in(&["apply", "-f", "-"], &p);
    api.kubectl(&["delete", "deployment", "nginx"]);
    wait_until("the ReplicaSet and its Pod to go", || {
        api.kubectl(&["get", "rs,pods", "-o", "name"])
            .trim()
            .is_empty()
    });
    // Orphan keeps the dependents and drops the reference.
    api.kubectl(&["apply", "-f", &Api::fixture("nginx.yaml")]);
    let uid = api.get_json(&["deployment", "nginx"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    api.kubectl_in(&["apply", "-f", "-"], &rs_of(&uid));
    let owned = api.get_json(&["rs", "nginx-abc"]);
    assert_eq!(owned["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    api.kubectl(&["delete", "deployment", "nginx", "--cascade=orphan"]);
    let left = api.get_json(&["rs", "nginx-abc"]);
    assert!(
        left["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{left}"
    );

    // Namespace deletion removes everything in it, then the namespace.
    api.kubectl_in(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scratch\n",
    );
    api.kubectl_in(
        &["apply", "-n", "scratch", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {a: b}\n",
    );
    api.kubectl_in(
        &["apply", "-n", "scratch", "-f", "-"],
        &pod("p", "{app: x}", None),
    );
    api.kubectl(&["delete", "namespace", "scratch"]);
    let err = api.kubectl_fails(&["get", "namespace", "scratch"], None);
    assert!(err.contains("not found"), "{err}");
    let err = api.kubectl_fails(
        &["create", "-n", "scratch", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\n"),
    );
    assert!(err.contains("not found"), "{err}");
    let left = api.kubectl(&["get", "configmaps,pods", "-n", "scratch", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn server_side_apply_records_managed_fields_and_prunes_what_the_manager_dropped() {
    let api = Api::start();
    let first = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n  labels:\n    tier: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: ssa}\n  template:\n    metadata:\n      labels: {app: ssa}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n        ports:\n        - containerPort: 80\n        - containerPort: 81\n      - name: side\n        image: busybox\n";
    let out = api.kubectl_in(&["apply", "--server-side", "-f", "-"], first);
    assert!(out.contains("serverside-applied"), "{out}");
    let yaml = api.kubectl(&[
        "get",
        "deployment",
        "ssa",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    for want in [
        "managedFields:",
        "manager: kubectl",
        "operation: Apply",
        "fieldsType: FieldsV1",
        "f:replicas: {}",
        "k:{\"name\":\"side\"}:",
    ] {
        assert!(yaml.contains(want), "{want} missing from:\n{yaml}");
    }
    // Without --show-managed-fields kubectl hides them, as with kube-apiserver.
    let plain = api.kubectl(&["get", "deployment", "ssa", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");

    // Another writer (a merge patch, not an apply) adds an annotation.
    api.kubectl(&["annotate", "deployment", "ssa", "note=kept"]);

    // The second configuration drops the label, replicas, the side container and port 81.
    let second = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\nspec:\n  selector:\n    matchLabels: {app: ssa}\n  template:\n    metadata:\n      labels: {app: ssa}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n        ports:\n        - containerPort: 80\n";
    api.kubectl_in(&["apply", "--server-side", "-f", "-"], second);
    let d = api.get_json(&["deployment", "ssa"]);
    assert!(d["metadata"]["labels"].get("tier").is_none(), "{d}");
    assert_eq!(d["metadata"]["annotations"]["note"], "kept");
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1, "{d}");
    assert_eq!(cs[0]["image"], "nginx:1.27");
    let ports: Vec<&Value> = cs[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["containerPort"])
        .collect();
    assert_eq!(ports, [&serde_json::json!(80)], "{d}");
    // replicas was dropped by its only owner: gone (controllers read a missing count as 1).
    assert!(d["spec"].get("replicas").is_none(), "{d}");
    let yaml = api.kubectl(&[
        "get",
        "deployment",
        "ssa",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(!yaml.contains("k:{\"name\":\"side\"}"), "{yaml}");
    assert!(!yaml.contains("f:replicas"), "{yaml}");
    // Another manager applying a different image conflicts with kubectl's ownership...
    let rival = second.replace("nginx:1.27", "nginx:1.29");
    let err = api.kubectl_fails(
        &["apply", "--server-side", "--field-manager=rival", "-f", "-"],
        Some(&rival),
    );
    assert!(
        err.contains("conflict with \"kubectl\"")
            && err.contains(".spec.template.spec.containers[name=\"web\"].image"),
        "{err}"
    );
    let image = |api: &Api| {
        api.get_json(&["deployment", "ssa"])["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone()
    };
    assert_eq!(image(&api), "nginx:1.27");
    // ...and takes it over with --force-conflicts.
    api.kubectl_in(
        &[
            "apply",
            "--server-side",
            "--field-manager=rival",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &rival,
    );
    assert_eq!(image(&api), "nginx:1.29");

    // The apply entry survives a later client-side update.
    api.kubectl(&["label", "deployment", "ssa", "extra=1"]);
    let d = api.get_json(&["deployment", "ssa", "--show-managed-fields"]);
    let entries = d["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["manager"] == "kubectl" && e["operation"] == "Apply"),
        "{entries:?}"
    );
}
