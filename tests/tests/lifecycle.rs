//! Pod and node lifecycle on a local cluster: rolling updates and undo, container
//! restarts, readiness driving EndpointSlices, a lost node's pods replaced, and an agent
//! restart that disturbs nothing.

use std::time::Duration;

use skein_e2e::cluster::{Cluster, wait_for};

fn deployment(replicas: u32, version: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["python3", "-m", "http.server", "8080"]
        env:
        - {{name: VERSION, value: "{version}"}}
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
"#
    )
}

/// (name, node, version env, ready, uid) of live web pods.
fn pods(c: &Cluster) -> Vec<(String, String, String, bool, String)> {
    let list = c.get_json(&["pods", "-l", "app=web"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let version = p["spec"]["containers"][0]["env"][0]["value"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
                version,
                ready,
                p["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn wait_version(c: &Cluster, n: usize, version: &str) {
    wait_for(
        &format!("{n} ready pods at {version}"),
        Duration::from_secs(120),
        || {
            let p = pods(c);
            let ok = p.iter().filter(|p| p.3 && p.2 == version).count();
            if ok == n && p.len() == n {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    );
}

#[test]
fn rolling_update_keeps_enough_ready_pods_and_undo_returns() {
    let c = Cluster::start(3);
    c.apply(&deployment(4, "v1"));
    wait_version(&c, 4, "v1");

    // Watch readiness while the template changes: never fewer than 4 - maxUnavailable.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let min_ready = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut min = usize::MAX;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ready = pods(&c).iter().filter(|p| p.3).count();
                min = min.min(ready);
                std::thread::sleep(Duration::from_millis(100));
            }
            min
        });
        c.apply(&deployment(4, "v2"));
        c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap()
    });
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} during the rollout (maxUnavailable 1 of 4)"
    );
    wait_version(&c, 4, "v2");

    let history = c.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    c.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    wait_version(&c, 4, "v1");
}

#[test]
fn killed_container_restarts_and_readiness_drives_the_endpoint_slice() {
    let c = Cluster::start(1);
    let flag = c.bed.state_dir().join("ready-flag");
    std::fs::write(&flag, "").unwrap();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: flip
  labels: {{app: flip}}
spec:
  containers:
  - name: web
    image: python:3
    command: ["python3", "-m", "http.server", "8081"]
    readinessProbe:
      exec: {{command: ["test", "-e", "{}"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: flip}}
spec:
  selector: {{app: flip}}
  ports:
  - {{port: 80, targetPort: 8081}}
"#,
        flag.display()
    ));
    let slice_ready = |want: bool| {
        wait_for(
            &format!("the flip EndpointSlice endpoint ready={want}"),
            Duration::from_secs(60),
            || {
                let s = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=flip"]);
                let eps: Vec<serde_json::Value> = s["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|i| i["endpoints"].as_array().cloned().unwrap_or_default())
                    .collect();
                match eps.as_slice() {
                    [e] if e["conditions"]["ready"] == want && e["targetRef"]["name"] == "flip" => {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
    };
    slice_ready(true);
    std::fs::remove_file(&flag).unwrap();
    slice_ready(false);
    std::fs::write(&flag, "").unwrap();
    slice_ready(true);

    // Kill the container's process: the agent restarts it and counts.
    let before = c.get_json(&["pod", "flip"]);
    assert_eq!(before["status"]["containerStatuses"][0]["restartCount"], 0);
    let pid = find_pid(&c, "http.server 8081").expect("the container's process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("restartCount 1", Duration::from_secs(60), || {
        let p = c.get_json(&["pod", "flip"]);
        let n = p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0);
        if n >= 1 {
            Ok(())
        } else {
            Err(format!("{}", p["status"]))
        }
    });
    let new_pid = wait_for(
        "the container running again",
        Duration::from_secs(30),
        || find_pid(&c, "http.server 8081").ok_or_else(|| "no process".to_owned()),
    );
    assert_ne!(new_pid, pid);
}

#[test]
fn a_lost_node_is_marked_not_ready_and_its_pods_replaced() {
    let mut c = Cluster::start(3);
    c.apply(&deployment(3, "v1"));
    wait_version(&c, 3, "v1");
    c.stop_agent(3);
    wait_for(
        "node3 Ready=Unknown with the unreachable taint",
        Duration::from_secs(60),
        || {
            let n = c.get_json(&["node", "node3"]);
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .cloned();
            let tainted = n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable");
            match ready {
                Some(r) if r["status"] == "Unknown" && tainted => Ok(()),
                other => Err(format!("{other:?} tainted={tainted}")),
            }
        },
    );
    wait_for(
        "3 ready pods, none on node3",
        Duration::from_secs(90),
        || {
            let p = pods(&c);
            let ok = p.iter().filter(|p| p.3 && p.1 != "node3").count();
            if ok == 3 {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    );
}

#[test]
fn an_agent_restart_keeps_pod_ips_and_processes() {
    let mut c = Cluster::start(1);
    c.apply(&deployment(2, "v1"));
    wait_version(&c, 2, "v1");
    let ips = |c: &Cluster| {
        let list = c.get_json(&["pods", "-l", "app=web"]);
        let mut v: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"]["podIP"].as_str().unwrap_or("").to_owned())
            .collect();
        v.sort();
        v
    };
    let before = ips(&c);
    let pids_before = all_pids(&c, "http.server 8080");
    assert_eq!(pids_before.len(), 2);
    c.stop_agent(1);
    c.start_agent(1);
    // The restarted agent reports the same pods as ready again.
    std::thread::sleep(Duration::from_secs(3));
    wait_version(&c, 2, "v1");
    assert_eq!(ips(&c), before);
    assert_eq!(
        all_pids(&c, "http.server 8080"),
        pids_before,
        "containers were restarted"
    );
}

/// Pids of processes of this cluster (in its cgroup subtree) whose command line holds
/// `needle`.
fn all_pids(c: &Cluster, needle: &str) -> Vec<i32> {
    let mark = format!("/skein/{}/", c.bed.prefix());
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cg| cg.contains(&mark))
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect();
    v.sort();
    v
}

fn find_pid(c: &Cluster, needle: &str) -> Option<i32> {
    all_pids(c, needle).into_iter().next()
}
