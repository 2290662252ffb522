//! The `skein-agent` binary against a small in-test API server that speaks the parts of
//! the Kubernetes REST API the agent uses (nodes, node status, leases, pod list + watch
//! with a field selector, pod status merge patches, pod delete). It is a stand-in until
//! the end-to-end tests against skein-apiserver; it checks the agent's requests, not a
//! real server's semantics. Needs root.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skein_testbed::{Config, Daemon, EtcdMode, TestBed};
use tokio::sync::mpsc;

#[derive(Default)]
struct Store {
    rv: u64,
    nodes: BTreeMap<String, Value>,
    leases: BTreeMap<String, Value>,
    pods: BTreeMap<String, Value>, // "ns/name"
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    deletes: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Store>>;

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn json_resp(code: StatusCode, v: Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

fn not_found(what: &str) -> Response {
    json_resp(
        StatusCode::NOT_FOUND,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message": format!("{what} not found"),"reason":"NotFound","code":404}),
    )
}

impl Store {
    fn bump(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
    }

    fn event(&mut self, kind: &str, pod: &Value) {
        let line = format!("{}\n", json!({"type": kind, "object": pod}));
        self.watchers
            .retain(|w| w.send(Bytes::from(line.clone())).is_ok());
    }

    fn put_pod(&mut self, mut pod: Value, kind: &str) {
        self.bump(&mut pod);
        let key = format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap(),
            pod["metadata"]["name"].as_str().unwrap()
        );
        self.pods.insert(key, pod.clone());
        self.event(kind, &pod);
    }
}

async fn api(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let path: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let query = uri.query().unwrap_or("");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = s.lock().unwrap();
    match (method.as_str(), p.as_slice()) {
        ("GET", ["api", "v1", "nodes", name]) => match st.nodes.get(*name) {
            Some(n) => json_resp(StatusCode::OK, n.clone()),
            None => not_found("node"),
        },
        ("POST", ["api", "v1", "nodes"]) => {
            let mut n = body;
            n["metadata"]["uid"] = json!("node-uid-1");
            st.bump(&mut n);
            st.nodes.insert(
                n["metadata"]["name"].as_str().unwrap().to_owned(),
                n.clone(),
            );
            json_resp(StatusCode::CREATED, n)
        }
        ("PATCH", ["api", "v1", "nodes", name, ..]) => {
            let Some(mut n) = st.nodes.get(*name).cloned() else {
                return not_found("node");
            };
            merge(&mut n, &body);
            st.bump(&mut n);
            st.nodes.insert((*name).to_owned(), n.clone());
            json_resp(StatusCode::OK, n)
        }
        (
            "GET",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                "kube-node-lease",
                "leases",
                name,
            ],
        ) => match st.leases.get(*name) {
            Some(l) => json_resp(StatusCode::OK, l.clone()),
            None => not_found("lease"),
        },
        (
            "POST",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                "kube-node-lease",
                "leases",
            ],
        ) => {
            let mut l = body;
            st.bump(&mut l);
            st.leases.insert(
                l["metadata"]["name"].as_str().unwrap().to_owned(),
                l.clone(),
            );
            json_resp(StatusCode::CREATED, l)
        }
        (
            "PATCH",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                "kube-node-lease",
                "leases",
                name,
            ],
        ) => {
            let Some(mut l) = st.leases.get(*name).cloned() else {
                return not_found("lease");
            };
            merge(&mut l, &body);
            st.bump(&mut l);
            st.leases.insert((*name).to_owned(), l.clone());
            json_resp(StatusCode::OK, l)
        }
        ("GET", ["api", "v1", "pods"]) => {
            assert!(
                query.contains("fieldSelector=spec.nodeName%3Dnode1")
                    || query.contains("fieldSelector=spec.nodeName=node1"),
                "{query}"
            );
            if query.contains("watch=true") || query.contains("watch=1") {
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                st.watchers.push(tx);
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
                });
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from_stream(stream))
                    .unwrap();
            }
            let items: Vec<Value> = st.pods.values().cloned().collect();
            json_resp(
                StatusCode::OK,
                json!({"kind":"PodList","apiVersion":"v1",
                "metadata":{"resourceVersion": st.rv.to_string()},"items": items}),
            )
        }
        ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"]) => {
            let key = format!("{ns}/{name}");
            let Some(mut pod) = st.pods.get(&key).cloned() else {
                return not_found("pod");
            };
            merge(&mut pod, &body);
            st.put_pod(pod.clone(), "MODIFIED");
            json_resp(StatusCode::OK, st.pods[&key].clone())
        }
        ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
            let key = format!("{ns}/{name}");
            st.deletes.push((key.clone(), body));
            let Some(pod) = st.pods.remove(&key) else {
                return not_found("pod");
            };
            st.event("DELETED", &pod);
            json_resp(StatusCode::OK, pod)
        }
        (m, _) => json_resp(
            StatusCode::NOT_FOUND,
            json!({"kind":"Status","code":404,"message": format!("fake api: {m} {uri} not handled")}),
        ),
    }
}

fn pod_json(name: &str, uid: &str, www: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "nodeName": "node1",
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "web", "image": "python:3",
                "command": ["/usr/bin/python3", "-m", "http.server", "8080"],
                "workingDir": www,
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
            }]
        },
        "status": {"phase": "Pending"}
    })
}

struct Fixture {
    bed: TestBed,
    store: Shared,
    api_addr: SocketAddr,
    log_port: u16,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn write_cni_conf(&self) {
        let d = &self.bed.node(1).dirs;
        let conf = json!({"cniVersion":"1.0.0","name":"agent-test","plugins":[
            {"type":"bridge","bridge":"cni0","isGateway":true,
             "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"dataDir": d.ipam_data_dir}}]});
        std::fs::write(
            d.cni_conf_dir.join("10-agent-test.conflist"),
            conf.to_string(),
        )
        .unwrap();
    }

    fn start_agent(&self) -> Daemon {
        let d = &self.bed.node(1).dirs;
        let mut cmd = self
            .bed
            .node(1)
            .command(env!("CARGO_BIN_EXE_skein-agent"))
            .unwrap();
        cmd.args(["--api-server", &format!("http://{}", self.api_addr)])
            .args(["--node-name", "node1", "--node-ip", "198.51.100.11"])
            .args(["--node-labels", "zone=test"])
            .arg("--cni-conf-dir")
            .arg(&d.cni_conf_dir)
            .args(["--cni-bin-dir", "/usr/lib/cni"])
            .arg("--state-dir")
            .arg(d.root.join("agent"))
            .arg("--cgroup-root")
            .arg(d.cgroup.clone().unwrap())
            .arg("--subnet-file")
            .arg(&d.subnet_file)
            .args(["--log-port", &self.log_port.to_string()])
            .args([
                "--heartbeat-period",
                "1s",
                "--sync-period",
                "100ms",
                "--restart-backoff",
                "1s",
            ])
            .env("RUST_LOG", "info");
        Daemon::spawn("skein-agent", cmd, &d.log_dir.join("agent.log")).unwrap()
    }

    fn wait<T>(&self, what: &str, agent: &Daemon, mut f: impl FnMut(&mut Store) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = f(&mut self.store.lock().unwrap()) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; agent log:\n{}",
                agent.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn fixture() -> Fixture {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let bed = TestBed::start(Config {
        nodes: 1,
        outside: false,
        etcd: EtcdMode::None,
        cgroups: true,
        prefix: None,
    })
    .unwrap();
    let d = &bed.node(1).dirs;
    std::fs::write(d.subnet_file.clone(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store: Shared = Arc::default();
    // The API server listens inside node1's namespace (the socket stays there).
    let std_listener = bed
        .node(1)
        .listen_tcp("198.51.100.11:0".parse().unwrap())
        .unwrap();
    let api_addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let app = axum::Router::new().fallback(api).with_state(store.clone());
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
        axum::serve(l, app).await.unwrap();
    });
    let log_port = 20000 + (std::process::id() % 20000) as u16;
    Fixture {
        bed,
        store,
        api_addr,
        log_port,
        _rt: rt,
    }
}

fn http_get(bed: &TestBed, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = bed
        .node(1)
        .connect_tcp(
            SocketAddr::from(([198, 51, 100, 11], port)),
            Duration::from_secs(3),
        )
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn cond(pod: &Value, ty: &str) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .map(|c| c["status"].as_str().unwrap_or("").to_owned())
}

#[test]
fn agent_registers_runs_reports_restarts_and_deletes_through_the_api() {
    let fx = fixture();
    let www = tempfile::tempdir().unwrap();
    let www_s = www.path().display().to_string();
    let mut agent = fx.start_agent();

    // Registration; NotReady until the pod network has a CNI config.
    let msg = fx.wait("node registered NotReady", &agent, |s| {
        let n = s.nodes.get("node1")?;
        let c = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?;
        (c["status"] == "False").then(|| c["message"].as_str().unwrap_or("").to_owned())
    });
    assert!(msg.contains("NetworkPluginNotReady"), "{msg}");
    fx.write_cni_conf();
    let node = fx.wait("node Ready", &agent, |s| {
        s.nodes
            .get("node1")
            .filter(|n| cond(n, "Ready").as_deref() == Some("True"))
            .cloned()
    });
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24");
    assert_eq!(node["metadata"]["labels"]["zone"], "test");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "node1"
    );
    assert_eq!(
        node["status"]["addresses"][0],
        json!({"type":"InternalIP","address":"198.51.100.11"})
    );
    assert_eq!(
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        json!(fx.log_port)
    );
    let first = fx.wait("lease", &agent, |s| s.leases.get("node1").cloned());
    assert_eq!(first["spec"]["holderIdentity"], "node1");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    fx.wait("lease renewed", &agent, |s| {
        (s.leases["node1"]["spec"]["renewTime"] != first["spec"]["renewTime"]).then_some(())
    });
    // A deleted Node object is registered again.
    fx.store.lock().unwrap().nodes.remove("node1");
    fx.wait("node registered again", &agent, |s| {
        s.nodes
            .get("node1")
            .filter(|n| n["spec"]["podCIDR"] == "10.244.1.0/24")
            .map(|_| ())
    });

    // A pod bound to the node runs, and its status comes back.
    fx.store
        .lock()
        .unwrap()
        .put_pod(pod_json("web", "uid-web-1", &www_s), "ADDED");
    let pod = fx.wait("pod Running and Ready", &agent, |s| {
        let p = s.pods.get("default/web")?;
        (p["status"]["phase"] == "Running" && cond(p, "Ready").as_deref() == Some("True"))
            .then(|| p.clone())
    });
    let ip = pod["status"]["podIP"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.244.1."), "{ip}");
    assert_eq!(pod["status"]["hostIP"], "198.51.100.11");
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);

    // Its logs through the log endpoint (the readiness probe's requests are in them).
    let logs = http_get(&fx.bed, fx.log_port, "/containerLogs/default/web/web");
    assert!(
        logs.starts_with("HTTP/1.0 200") || logs.starts_with("HTTP/1.1 200"),
        "{logs}"
    );
    assert!(logs.contains("GET / HTTP/1.1"), "{logs}");

    // Agent restart: the pod keeps its IP and process.
    let state = fx
        .bed
        .node(1)
        .dirs
        .root
        .join("agent/pods/uid-web-1/state.json");
    let pid_of = || -> i64 {
        let v: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        v["containers"]["web"]["running"]["proc"]["pid"]
            .as_i64()
            .unwrap()
    };
    let pid = pid_of();
    agent.stop();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pod survives the agent"
    );
    let mut agent = fx.start_agent();
    std::thread::sleep(Duration::from_secs(2));
    fx.wait("pod still Ready after restart", &agent, |s| {
        let p = s.pods.get("default/web")?;
        (cond(p, "Ready").as_deref() == Some("True")).then_some(())
    });
    assert_eq!(pid_of(), pid, "same container process");
    assert_eq!(
        fx.store.lock().unwrap().pods["default/web"]["status"]["podIP"],
        ip.as_str()
    );

    // Graceful deletion: deletionTimestamp set → stop → DELETE gracePeriodSeconds=0.
    {
        let mut s = fx.store.lock().unwrap();
        let mut p = s.pods["default/web"].clone();
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(1);
        s.put_pod(p, "MODIFIED");
    }
    let (key, opts) = fx.wait("pod deletion completed", &agent, |s| {
        s.deletes.first().cloned()
    });
    assert_eq!(key, "default/web");
    assert_eq!(opts["gracePeriodSeconds"], 0);
    assert_eq!(opts["preconditions"]["uid"], "uid-web-1");
    assert!(!state.exists(), "pod state removed");
    let ipam = fx.bed.node(1).dirs.ipam_data_dir.join("agent-test");
    let left: Vec<_> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "IPAM released: {left:?}");
    assert!(
        agent.is_running(),
        "agent still running; log:\n{}",
        agent.log_tail(30)
    );

    // A pod removed from the API while the agent was down is stopped at the next start.
    fx.store
        .lock()
        .unwrap()
        .put_pod(pod_json("orphan", "uid-orphan", &www_s), "ADDED");
    let orphan_state = fx
        .bed
        .node(1)
        .dirs
        .root
        .join("agent/pods/uid-orphan/state.json");
    fx.wait("orphan running", &agent, |s| {
        (s.pods.get("default/orphan")?["status"]["phase"] == "Running").then_some(())
    });
    agent.stop();
    assert!(orphan_state.exists());
    fx.store.lock().unwrap().pods.remove("default/orphan");
    let mut agent = fx.start_agent();
    fx.wait("orphan stopped and removed", &agent, |_| {
        (!orphan_state.exists()).then_some(())
    });
    agent.stop();
}

#[test]
fn bad_flags_are_rejected_with_the_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skein-agent"))
        .args([
            "--api-server",
            "http://198.51.100.250:1",
            "--node-ip",
            "198.51.100.11",
        ])
        .args(["--node-labels", "zone", "--node-name", "n"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--node-labels: \"zone\" is not key=value"),
        "{err}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skein-agent"))
        .args(["--node-ip", "not-an-ip"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-ip"));
}
