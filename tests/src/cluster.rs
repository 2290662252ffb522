//! A whole local cluster for end-to-end tests, on one [`TestBed`]:
//!
//! ```text
//!   <p>-etcd     etcd                        198.51.100.2:2379
//!   <p>-control  skein-apiserver :6443, skein-scheduler, skein-controller-manager
//!                                            198.51.100.3
//!   <p>-nodeN    flanneld, skein-agent (+ skein-cni from the conflist)
//!                                            198.51.100.(10+N)
//! ```
//!
//! kubectl runs inside the control namespace with a kubeconfig in the bed's state dir;
//! nothing talks to the root namespace. Dropping the cluster stops every daemon and
//! removes the bed.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use skein_testbed::{Config, Daemon, Host, TestBed};

use crate::binary;

/// The API server's address.
pub const API_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The pod network (flannel's `Network`).
pub const POD_NETWORK: &str = "10.244.0.0/16";

/// A running local cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Daemons, stopped in reverse order before the bed goes.
    daemons: Vec<Daemon>,
    /// The control-plane host.
    pub control: Host,
    /// kubectl's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The bed (dropped last).
    pub bed: TestBed,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for mut d in self.daemons.drain(..).rev() {
            d.stop();
        }
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

impl Cluster {
    /// Brings up etcd, the control plane and `nodes` nodes with flanneld and skein-agent,
    /// and waits until every node is Ready.
    pub fn start(nodes: usize) -> Cluster {
        crate::require_root();
        let bed = TestBed::start(Config {
            nodes,
            ..Config::default()
        })
        .expect("test bed");
        let control = bed.add_host("control", API_ADDR).expect("control host");
        let url = format!("http://{API_ADDR}:6443");
        let kubeconfig = bed.state_dir().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {url}\nusers:\n- name: admin\n  user: {{}}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\n    namespace: default\ncurrent-context: local\n"
            ),
        )
        .expect("write kubeconfig");
        let mut c = Cluster {
            daemons: Vec::new(),
            control,
            kubeconfig,
            bed,
        };
        let etcd = c.bed.etcd().endpoints();
        let log_dir = c.bed.state_dir().join("control");

        // The control plane.
        let mut api = c.control.command(binary("skein-apiserver")).unwrap();
        api.args([
            "--etcd-servers",
            &etcd,
            "--bind-address",
            &API_ADDR.to_string(),
            "--port",
            "6443",
        ]);
        c.spawn(&c.control.name.clone(), "skein-apiserver", api, &log_dir);
        wait_for("the API server's /readyz", Duration::from_secs(30), || {
            match skein_testbed::http_get(&c.control, (API_ADDR, 6443).into(), "/readyz") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        for (bin, extra) in [
            ("skein-scheduler", vec!["--retry-seconds", "2"]),
            (
                "skein-controller-manager",
                vec![
                    "--node-monitor-grace-period",
                    "10",
                    "--pod-eviction-timeout",
                    "5",
                    "--resync-period",
                    "2",
                ],
            ),
        ] {
            let mut cmd = c.control.command(binary(bin)).unwrap();
            cmd.args(["--master", &url]).args(extra);
            c.spawn("control", bin, cmd, &log_dir);
        }

        // The network: flannel's config, then flanneld on every node.
        let config = format!(r#"{{"Network":"{POD_NETWORK}","Backend":{{"Type":"vxlan"}}}}"#);
        let node1 = c.bed.node(1);
        skein_testbed::run_checked(c.bed.etcd().etcdctl(node1).unwrap().args([
            "put",
            "/coreos.com/network/config",
            &config,
        ]))
        .expect("put the flannel config");
        for i in 1..=nodes {
            let node = c.bed.node(i);
            let (name, dirs) = (node.name.clone(), node.dirs.clone());
            let mut f = node.command(binary("flanneld")).unwrap();
            f.args(["--etcd-endpoints", &etcd, "--iface", "eth0", "--ip-masq"])
                .arg("--subnet-file")
                .arg(&dirs.subnet_file);
            c.spawn(&name, "flanneld", f, &dirs.log_dir);
            let conflist = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "skein",
                "plugins": [{
                    "type": "skein-cni",
                    "subnetFile": dirs.subnet_file,
                    "ipam": {"type": "host-local", "dataDir": dirs.ipam_data_dir},
                }],
            });
            std::fs::write(
                dirs.cni_conf_dir.join("10-skein.conflist"),
                conflist.to_string(),
            )
            .unwrap();
            c.start_agent(i);
            let node = c.bed.node(i);
            let (name, addr, dirs) = (node.name.clone(), node.addr, node.dirs.clone());
            let mut p = node.command(binary("skein-proxy")).unwrap();
            p.args([
                "--node-name",
                &name,
                "--api-server",
                &url,
                "--uplink",
                "eth0",
                "--node-ip",
                &addr.to_string(),
            ])
            .arg("--pin-dir")
            .arg(&dirs.bpf_pin_dir)
            .arg("--cgroup-root")
            .arg(dirs.cgroup.as_ref().unwrap());
            c.spawn(&name, "skein-proxy", p, &dirs.log_dir);
        }
        let want = nodes;
        wait_for("every node Ready", Duration::from_secs(60), || {
            let out = c.kubectl(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let ready = text
                .split_whitespace()
                .filter(|s| s.ends_with("=True"))
                .count();
            if ready == want {
                Ok(())
            } else {
                Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
            }
        });
        c
    }

    /// Starts skein-agent on node `i` (again, after [`Cluster::stop_agent`]).
    pub fn start_agent(&mut self, i: usize) {
        let url = format!("http://{API_ADDR}:6443");
        let bin_dir = binary("skein-cni").parent().unwrap().to_owned();
        let node = self.bed.node(i);
        let (name, addr, dirs) = (node.name.clone(), node.addr, node.dirs.clone());
        let mut a = node.command(binary("skein-agent")).unwrap();
        a.args([
            "--node-name",
            &name,
            "--api-server",
            &url,
            "--node-ip",
            &addr.to_string(),
        ])
        .arg("--cni-conf-dir")
        .arg(&dirs.cni_conf_dir)
        .arg("--cni-bin-dir")
        .arg(&bin_dir)
        .arg("--state-dir")
        .arg(dirs.root.join("agent"))
        .arg("--cgroup-root")
        .arg(dirs.cgroup.as_ref().expect("bed made cgroups"))
        .arg("--subnet-file")
        .arg(&dirs.subnet_file)
        .args(["--heartbeat-period", "2", "--restart-backoff", "1"]);
        self.spawn(&name, "skein-agent", a, &dirs.log_dir);
    }

    /// Stops skein-agent on node `i` (SIGTERM: its pods keep running, as a kubelet's do).
    pub fn stop_agent(&mut self, i: usize) {
        let name = format!("skein-agent on node{i}");
        let pos = self
            .daemons
            .iter()
            .position(|d| d.name() == name)
            .expect("agent running");
        self.daemons.remove(pos).stop();
    }

    fn spawn(
        &mut self,
        host: &str,
        name: &str,
        cmd: std::process::Command,
        log_dir: &std::path::Path,
    ) {
        let log = log_dir.join(format!("{name}.log"));
        let d = Daemon::spawn(&format!("{name} on {host}"), cmd, &log)
            .unwrap_or_else(|e| panic!("start {name} on {host}: {e}"));
        self.daemons.push(d);
    }

    /// The log tails of every daemon, for a failing test's message.
    pub fn logs(&self) -> String {
        self.daemons
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
}
