//! A whole local cluster for end-to-end tests, brought up by skeinctl's own
//! [`skeinctl::up::Cluster::start`] (the code behind `skeinctl up`) with a unique name
//! and test tunings (short periods and back-offs):
//!
//! ```text
//!   <p>-etcd     etcd                                        198.51.100.2:2379
//!   <p>-control  skein-apiserver :6443, skein-scheduler, skein-controller-manager,
//!                skein-dns :53 (Service kube-system/kube-dns 10.96.0.10) 198.51.100.3
//!   <p>-nodeN    flanneld, skein-agent (+ skein-cni), skein-proxy  198.51.100.(10+N)
//!   <p>-outside  an external client                          198.51.100.200
//! ```
//!
//! kubectl runs inside the control namespace with the cluster's `kubeconfig-control`;
//! nothing talks to the root namespace. Dropping the cluster stops every daemon and
//! removes the bed.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::binary;

/// The API server's address.
pub const API_ADDR: std::net::Ipv4Addr = skeinctl::layout::CONTROL_ADDR;
/// The pod network (flannel's `Network`).
pub const POD_NETWORK: &str = skeinctl::layout::CLUSTER_NETWORK;
/// The CNI network name (IPAM files are under `<ipam data dir>/<CNI_NETWORK>/`).
pub const CNI_NETWORK: &str = skeinctl::layout::CNI_NETWORK;

/// A running local cluster; derefs to skeinctl's [`skeinctl::up::Cluster`] (`bed`,
/// `control`, `paths`).
#[derive(Debug)]
pub struct Cluster {
    inner: skeinctl::up::Cluster,
    /// kubectl's kubeconfig (for use inside the control namespace).
    pub kubeconfig: PathBuf,
}

impl Deref for Cluster {
    type Target = skeinctl::up::Cluster;
    fn deref(&self) -> &skeinctl::up::Cluster {
        &self.inner
    }
}

/// Waits for `check` to return `Some`, polling; panics with `what` and the last state
/// after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Cluster {
    /// Brings up etcd, the control plane, cluster DNS and `nodes` nodes with flanneld,
    /// skein-agent and skein-proxy, exactly as `skeinctl up` does, and waits until every
    /// node is Ready.
    pub fn start(nodes: usize) -> Cluster {
        Cluster::start_with(nodes, skeinctl::layout::Backend::Vxlan, false)
    }

    /// As [`Cluster::start`], with flanneld's `backend` and skein-proxy's pod routing
    /// on or off (`skeinctl up --backend ... [--pod-routing]`).
    pub fn start_with(
        nodes: usize,
        backend: skeinctl::layout::Backend,
        pod_routing: bool,
    ) -> Cluster {
        crate::require_root();
        let skeinctl = binary("skeinctl");
        let opts = skeinctl::up::UpOptions {
            name: skein_testbed::unique_prefix(),
            nodes,
            backend,
            pod_routing,
            bin_dir: skeinctl.parent().unwrap().to_owned(),
            skeinctl,
            tuning: skeinctl::up::Tuning {
                scheduler: strings(&["--retry-seconds", "2"]),
                controller_manager: strings(&[
                    "--node-monitor-grace-period",
                    "10",
                    "--pod-eviction-timeout",
                    "5",
                    "--resync-period",
                    "2",
                ]),
                agent: strings(&["--heartbeat-period", "2", "--restart-backoff", "1"]),
            },
        };
        let inner = skeinctl::up::Cluster::start(&opts)
            .unwrap_or_else(|e| panic!("bring up cluster {}: {e:#}", opts.name));
        let kubeconfig = inner.paths.control_kubeconfig.clone();
        Cluster { inner, kubeconfig }
    }

    /// Starts skein-agent on node `i` (again, after [`Cluster::stop_agent`]).
    pub fn start_agent(&mut self, i: usize) {
        self.inner
            .start_agent(i)
            .unwrap_or_else(|e| panic!("start the agent on node{i}: {e:#}"));
    }

    /// Stops skein-agent on node `i` (SIGTERM: its pods keep running, as a kubelet's do).
    pub fn stop_agent(&mut self, i: usize) {
        self.inner
            .stop_agent(i)
            .unwrap_or_else(|e| panic!("stop the agent on node{i}: {e:#}"));
    }

    /// Restarts skein-proxy on node `i` (SIGTERM, then a new one over the same pins).
    pub fn restart_proxy(&mut self, i: usize) {
        self.inner
            .stop_proxy(i)
            .and_then(|()| self.inner.start_proxy(i))
            .unwrap_or_else(|e| panic!("restart the proxy on node{i}: {e:#}"));
    }

    /// The log tails of every daemon, for a failing test's message.
    pub fn logs(&self) -> String {
        self.inner
            .daemons()
            .iter()
            .map(|d| {
                format!(
                    "--- {} ({})\n{}\n",
                    d.name(),
                    d.log().display(),
                    d.log_tail(15)
                )
            })
            .collect()
    }

    /// Runs kubectl inside the control namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = self.control.command("kubectl").unwrap();
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "20s"])
            .args(args);
        cmd.output().expect("run kubectl")
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` with `manifest` on stdin.
    pub fn apply(&self, manifest: &str) -> String {
        use std::io::Write;
        let mut cmd = self.control.command("kubectl").unwrap();
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl apply");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Objects of a kind as JSON (`kubectl get <kind> -o json`).
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl JSON")
    }

    /// The pods in `namespace` matching the label `selector`, as kubectl lists them.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<PodView> {
        let list = self.get_json(&["pods", "-n", namespace, "-l", selector]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(PodView::from_json)
            .collect()
    }

    /// Waits until exactly `n` pods match `selector` in `namespace`, every one Ready
    /// with an IP and none being deleted; panics with what it saw after `timeout`.
    pub fn wait_ready_pods(
        &self,
        namespace: &str,
        selector: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<PodView> {
        wait_for(
            &format!("{n} ready pods {selector} in {namespace}"),
            timeout,
            || {
                let pods = self.pods(namespace, selector);
                let ready = pods
                    .iter()
                    .filter(|p| p.ready && p.ip.is_some() && !p.deleting)
                    .count();
                if ready == n && pods.len() == n {
                    Ok(pods)
                } else {
                    Err(format!("{ready} of {n} ready: {pods:?}\n{}", self.logs()))
                }
            },
        )
    }
}

/// A pod as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// metadata.name.
    pub name: String,
    /// spec.nodeName ("" while unscheduled).
    pub node: String,
    /// metadata.uid.
    pub uid: String,
    /// status.podIP.
    pub ip: Option<std::net::Ipv4Addr>,
    /// The Ready condition is True.
    pub ready: bool,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
}

impl PodView {
    fn from_json(p: &serde_json::Value) -> PodView {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        PodView {
            name: text(&p["metadata"]["name"]),
            node: text(&p["spec"]["nodeName"]),
            uid: text(&p["metadata"]["uid"]),
            ip: p["status"]["podIP"].as_str().and_then(|s| s.parse().ok()),
            ready: p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            deleting: !p["metadata"]["deletionTimestamp"].is_null(),
        }
    }
}
