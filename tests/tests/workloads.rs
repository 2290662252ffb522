//! Workloads beyond Deployments on a 3-node local cluster: a DaemonSet runs one pod on
//! every node and replaces a deleted one on the same node; deleting a namespace removes
//! everything in it, down to the pods' network namespaces and IPAM files on the nodes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use skein_e2e::cluster::{Cluster, wait_for};

/// Files named like an IPv4 address anywhere under `dir` (host-local's leases).
fn ipam_leases(dir: &Path) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(ipam_leases(&path));
        } else if let Ok(ip) = e.file_name().to_string_lossy().parse() {
            out.insert(ip);
        }
    }
    out
}

#[test]
fn daemonset_runs_one_pod_per_node_and_replaces_a_deleted_one() {
    let c = Cluster::start(3);
    c.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: nodeinfo
spec:
  selector:
    matchLabels: {app: nodeinfo}
  template:
    metadata:
      labels: {app: nodeinfo}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: busybox
        command: ["sleep", "3600"]
"#,
    );
    let pods = c.wait_ready_pods("default", "app=nodeinfo", 3, Duration::from_secs(90));
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["node1", "node2", "node3"]),
        "one pod on every node: {pods:?}"
    );
    wait_for("DaemonSet status", Duration::from_secs(30), || {
        let ds = c.get_json(&["daemonset", "nodeinfo"]);
        let st = &ds["status"];
        if st["desiredNumberScheduled"] == 3
            && st["currentNumberScheduled"] == 3
            && st["numberReady"] == 3
        {
            Ok(())
        } else {
            Err(format!("{st}"))
        }
    });
    let out = c.kubectl_ok(&["get", "daemonset", "nodeinfo"]);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(4).eq(["nodeinfo", "3", "3", "3"])),
        "kubectl get daemonset prints DESIRED CURRENT READY: {out}"
    );

    // A deleted pod comes back on the same node, as a new pod.
    let victim = pods.iter().find(|p| p.node == "node2").unwrap().clone();
    c.kubectl_ok(&["delete", "pod", &victim.name]);
    let again = wait_for("the node2 pod replaced", Duration::from_secs(90), || {
        let pods = c.pods("default", "app=nodeinfo");
        let settled = pods.len() == 3 && pods.iter().all(|p| p.ready && !p.deleting);
        match pods.iter().find(|p| p.node == "node2") {
            Some(p) if settled && p.uid != victim.uid => Ok(pods),
            _ => Err(format!("no new pod on node2 yet: {pods:?}")),
        }
    });
    let nodes: BTreeSet<&str> = again.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "still one pod per node: {again:?}");

    // Deleting the DaemonSet removes its pods.
    c.kubectl_ok(&["delete", "daemonset", "nodeinfo"]);
    wait_for("nodeinfo pods gone", Duration::from_secs(90), || {
        let list = c.get_json(&["pods", "-l", "app=nodeinfo"]);
        match list["items"].as_array().map(Vec::len).unwrap_or(0) {
            0 => Ok(()),
            n => Err(format!("{n} pods left")),
        }
    });
}

#[test]
fn deleting_a_namespace_removes_everything_in_it_down_to_the_nodes() {
    let c = Cluster::start(3);
    c.kubectl_ok(&["create", "namespace", "team"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: team
spec:
  replicas: 4
  selector:
    matchLabels: {app: teamapp}
  template:
    metadata:
      labels: {app: teamapp}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: busybox
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: app
  namespace: team
spec:
  selector: {app: teamapp}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team
data: {mode: test}
"#,
    );
    let pods = c.wait_ready_pods("team", "app=teamapp", 4, Duration::from_secs(90));
    for p in &pods {
        let (name, node, uid, ip) = (&p.name, &p.node, &p.uid, p.ip.unwrap());
        let n = c.bed.nodes.iter().find(|n| &n.name == node).unwrap();
        assert!(
            n.dirs.root.join("agent/pods").join(uid).exists(),
            "{name}: the agent keeps its state on {node}"
        );
        assert!(
            ipam_leases(&n.dirs.ipam_data_dir).contains(&ip),
            "{name}: {ip} is leased on {node}"
        );
    }

    let out = c.kubectl_ok(&["delete", "namespace", "team", "--timeout=120s"]);
    assert!(out.contains("namespace \"team\" deleted"), "{out}");
    let gone = c.kubectl(&["get", "namespace", "team"]);
    assert!(
        !gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "the namespace is gone: {}",
        String::from_utf8_lossy(&gone.stderr)
    );
    for kind in [
        "pods",
        "deployments",
        "replicasets",
        "services",
        "configmaps",
        "endpointslices",
    ] {
        let list = c.get_json(&[kind, "-n", "team"]);
        assert_eq!(
            list["items"].as_array().map(Vec::len),
            Some(0),
            "no {kind} left in team: {list}"
        );
    }
    // On the nodes: every pod's sandbox state, network namespace and IP are released.
    for p in &pods {
        let (name, node, uid, ip) = (&p.name, &p.node, &p.uid, p.ip.unwrap());
        let n = c.bed.nodes.iter().find(|n| &n.name == node).unwrap();
        wait_for(
            &format!("{name}'s sandbox and IP released on {node}"),
            Duration::from_secs(30),
            || {
                let dir = n.dirs.root.join("agent/pods").join(uid);
                if dir.exists() {
                    return Err(format!("{} still exists", dir.display()));
                }
                if ipam_leases(&n.dirs.ipam_data_dir).contains(&ip) {
                    return Err(format!("{ip} still leased"));
                }
                Ok(())
            },
        );
    }
}
