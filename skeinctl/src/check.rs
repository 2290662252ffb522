//! `skeinctl check`: proves, with real requests, that a running cluster networks the
//! demo's pods (examples/: the `hello` Deployment, Services `hello` and
//! `hello-nodeport`). Applies nothing; prints a pass/fail table.
//!
//! ```text
//! API (pods app=hello, Services) ─► pick a client pod, one on its node, one elsewhere
//!   ─► from inside the client pod (its net + mount namespaces, its cgroup, as
//!      `kubectl exec` would): curl pod IPs, the ClusterIP, and http://hello/ resolved
//!      through the pod's own /etc/resolv.conf
//!   ─► from <name>-outside: curl <node IP>:<nodePort> on every node
//! ```
//!
//! Each row is one request, never retried: a flaky path shows as FAIL.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;
use skein_netns::NetNs;

use crate::layout::ClusterPaths;

/// The demo's Deployment label, Services and container port.
pub const APP_LABEL: &str = "app=hello";
/// The ClusterIP Service.
pub const SERVICE: &str = "hello";
/// The NodePort Service.
pub const NODEPORT_SERVICE: &str = "hello-nodeport";
/// The pods' HTTP port.
pub const POD_PORT: u16 = 8080;

/// A running pod of the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its IP.
    pub ip: String,
    /// Its uid (names its state dir on the node).
    pub uid: String,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What was proven, e.g. `pod to pod, same node (node1 -> 10.244.1.3)`.
    pub name: String,
    /// Whether the request got HTTP 200.
    pub pass: bool,
    /// What happened (`200`, or curl's exit and output).
    pub detail: String,
}

/// Running pods with an IP, not being deleted, in name order.
pub fn running_pods(list: &Value) -> Vec<PodInfo> {
    let mut out: Vec<PodInfo> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| {
            Some(PodInfo {
                name: p["metadata"]["name"].as_str()?.to_owned(),
                node: p["spec"]["nodeName"].as_str()?.to_owned(),
                ip: p["status"]["podIP"]
                    .as_str()
                    .filter(|s| !s.is_empty())?
                    .to_owned(),
                uid: p["metadata"]["uid"].as_str()?.to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The client pod, a pod on the client's node, and a pod on another node. The client
/// is the first pod (by name) that shares its node with another, so that both pod to
/// pod paths can be shown when the pods allow it.
pub fn pick(pods: &[PodInfo]) -> Option<(&PodInfo, Option<&PodInfo>, Option<&PodInfo>)> {
    let with_peer = pods
        .iter()
        .find(|c| pods.iter().any(|p| p.name != c.name && p.node == c.node));
    let client = with_peer.or(pods.first())?;
    let same = pods
        .iter()
        .find(|p| p.name != client.name && p.node == client.node);
    let other = pods.iter().find(|p| p.node != client.node);
    Some((client, same, other))
}

/// The pass/fail table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let verdict = if r.pass { "PASS" } else { "FAIL" };
        if r.pass {
            out.push_str(&format!("  {verdict}  {}\n", r.name));
        } else {
            out.push_str(&format!("  {verdict}  {} (got: {})\n", r.name, r.detail));
        }
    }
    out
}

/// `skeinctl check`: runs the checks, prints the table; fails when any row fails.
pub fn check(name: &str) -> anyhow::Result<ExitCode> {
    let rows = run(name)?;
    println!("{}", table(&rows));
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed == 0 {
        println!("all {} checks passed", rows.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} of {} checks FAILED", rows.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Runs every check against cluster `name` (which must have examples/ applied and
/// its pods running); an error means the checks could not run at all.
pub fn run(name: &str) -> anyhow::Result<Vec<Row>> {
    let paths = crate::status::existing(name)?;
    let control = crate::status::control_host(name)?;
    let list = crate::api::get_json(
        &control,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello",
    )?;
    let pods = running_pods(&list);
    let Some((client, same, other)) = pick(&pods) else {
        bail!(
            "no running pod with label {APP_LABEL} in namespace default: apply examples/ first (kubectl apply -f examples/)"
        );
    };
    let svc = crate::api::get_json(&control, "/api/v1/namespaces/default/services/hello")?;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .context("Service hello has no clusterIP")?
        .to_owned();
    let np = crate::api::get_json(
        &control,
        &format!("/api/v1/namespaces/default/services/{NODEPORT_SERVICE}"),
    )?;
    let node_port = np["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .with_context(|| format!("Service {NODEPORT_SERVICE} has no nodePort"))?;
    let nodes = crate::api::get_json(&control, "/api/v1/nodes")?;
    let mut node_addrs: Vec<(String, String)> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let ip = n["status"]["addresses"]
                .as_array()?
                .iter()
                .find(|a| a["type"] == "InternalIP")?["address"]
                .as_str()?
                .to_owned();
            Some((n["metadata"]["name"].as_str()?.to_owned(), ip))
        })
        .collect();
    node_addrs.sort();

    let pod = PodExec::new(&paths, client)?;
    let mut rows = Vec::new();
    let url = |ip: &str| format!("http://{ip}:{POD_PORT}/");
    match same {
        Some(p) => rows.push(pod.curl(
            format!(
                "pod to pod, same node ({} -> {} {})",
                client.node, p.name, p.ip
            ),
            &url(&p.ip),
        )),
        None => rows.push(Row {
            name: "pod to pod, same node".into(),
            pass: false,
            detail: format!("no two running pods share a node ({pods:?})"),
        }),
    }
    match other {
        Some(p) => rows.push(pod.curl(
            format!(
                "pod to pod, across nodes ({} -> {} {} on {})",
                client.node, p.name, p.ip, p.node
            ),
            &url(&p.ip),
        )),
        None => rows.push(Row {
            name: "pod to pod, across nodes".into(),
            pass: false,
            detail: "every running pod is on one node".into(),
        }),
    }
    rows.push(pod.curl(
        format!("pod to Service ClusterIP http://{cluster_ip}/ (skein-proxy, at connect)"),
        &format!("http://{cluster_ip}/"),
    ));
    rows.push(pod.curl(
        format!(
            "pod to Service by DNS name http://{SERVICE}/ (the pod's resolv.conf, kube-dns {})",
            crate::layout::CLUSTER_DNS_IP
        ),
        &format!("http://{SERVICE}/"),
    ));
    let outside = NetNs::open(format!("{name}-outside"))
        .with_context(|| format!("open netns {name}-outside"))?;
    for (node, ip) in &node_addrs {
        let target = format!("http://{ip}:{node_port}/");
        let mut cmd = outside.command("curl")?;
        curl_args(&mut cmd, &target);
        rows.push(curl_row(
            format!("outside to NodePort {ip}:{node_port} ({node})"),
            cmd,
        ));
    }
    Ok(rows)
}

fn curl_args(cmd: &mut Command, url: &str) {
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{remote_ip}",
        "--max-time",
        "5",
        url,
    ]);
}

fn curl_row(name: String, mut cmd: Command) -> Row {
    cmd.stdin(Stdio::null());
    match cmd.output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let pass = out.status.success() && text.starts_with("200");
            let mut detail = text;
            if !out.status.success() {
                detail = format!(
                    "{detail} (curl {}{})",
                    out.status,
                    curl_error(out.status.code())
                );
                let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                if !err.is_empty() {
                    detail = format!("{detail}: {err}");
                }
            }
            Row { name, pass, detail }
        }
        Err(e) => Row {
            name,
            pass: false,
            detail: format!("cannot run curl: {e}"),
        },
    }
}

fn curl_error(code: Option<i32>) -> &'static str {
    match code {
        Some(6) => ": could not resolve the host",
        Some(7) => ": could not connect",
        Some(28) => ": timed out",
        Some(52) => ": empty reply",
        Some(56) => ": connection reset while receiving",
        _ => "",
    }
}

/// Runs commands inside a pod as `kubectl exec` would: in its sandbox's network, mount,
/// UTS and IPC namespaces (so its own /etc/resolv.conf), and in its sandbox's cgroup
/// (where skein-proxy's socket hooks apply).
struct PodExec {
    pause: i32,
    cgroup: Option<PathBuf>,
}

impl PodExec {
    fn new(paths: &ClusterPaths, pod: &PodInfo) -> anyhow::Result<PodExec> {
        let state = paths
            .state
            .join(&pod.node)
            .join("agent/pods")
            .join(&pod.uid)
            .join("state.json");
        let rec: Value = serde_json::from_slice(
            &std::fs::read(&state).with_context(|| format!("read {}", state.display()))?,
        )
        .with_context(|| format!("parse {}", state.display()))?;
        let pause = rec["sandbox"]["pause"]["pid"]
            .as_i64()
            .with_context(|| format!("pod {} has no sandbox in {}", pod.name, state.display()))?
            as i32;
        let cgroup = cgroup_of(pause)?;
        Ok(PodExec { pause, cgroup })
    }

    fn curl(&self, name: String, url: &str) -> Row {
        let mut cmd = Command::new("sh");
        // The shell moves itself into the cgroup, then nsenter execs in place: one pid.
        cmd.arg("-c")
            .arg(r#"[ -z "$0" ] || echo $$ > "$0/cgroup.procs" || exit 99; shift; exec "$@""#)
            .arg(
                self.cgroup
                    .as_deref()
                    .map(Path::as_os_str)
                    .unwrap_or_default(),
            )
            .arg("--")
            .args(["nsenter", "--target", &self.pause.to_string()])
            .args(["--net", "--mount", "--uts", "--ipc", "--", "curl"]);
        curl_args(&mut cmd, url);
        curl_row(name, cmd)
    }
}

/// The cgroup v2 directory of `pid`.
fn cgroup_of(pid: i32) -> anyhow::Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup (is the pod's sandbox running?)"))?;
    let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Ok(None);
    };
    let base = skein_testbed::cgroup2_mount()?;
    Ok(Some(base.join(rel.trim_start_matches('/'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, node: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            node: node.into(),
            ip: format!("10.244.0.{}", name.len()),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn only_running_pods_with_an_ip_count() {
        let list = serde_json::json!({"items": [
            {"metadata": {"name": "b", "uid": "u2"}, "spec": {"nodeName": "node2"},
             "status": {"phase": "Running", "podIP": "10.244.2.2"}},
            {"metadata": {"name": "a", "uid": "u1"}, "spec": {"nodeName": "node1"},
             "status": {"phase": "Running", "podIP": "10.244.1.2"}},
            {"metadata": {"name": "c", "uid": "u3"}, "spec": {"nodeName": "node1"},
             "status": {"phase": "Pending"}},
            {"metadata": {"name": "d", "uid": "u4", "deletionTimestamp": "2026-01-01T00:00:00Z"},
             "spec": {"nodeName": "node1"}, "status": {"phase": "Running", "podIP": "10.244.1.9"}}
        ]});
        let pods = running_pods(&list);
        assert_eq!(
            pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(pods[0].ip, "10.244.1.2");
        assert_eq!(pods[0].uid, "u1");
    }

    #[test]
    fn the_client_has_a_neighbour_when_one_exists() {
        let pods = [p("a", "node1"), p("b", "node2"), p("c", "node2")];
        let (client, same, other) = pick(&pods).unwrap();
        assert_eq!(client.name, "b");
        assert_eq!(same.unwrap().name, "c");
        assert_eq!(other.unwrap().node, "node1");
    }

    #[test]
    fn missing_paths_are_none_not_made_up() {
        let pods = [p("a", "node1"), p("b", "node2")];
        let (client, same, other) = pick(&pods).unwrap();
        assert_eq!(client.name, "a");
        assert!(same.is_none());
        assert_eq!(other.unwrap().name, "b");
        assert!(pick(&[]).is_none());
    }

    #[test]
    fn the_table_shows_why_a_row_failed() {
        let t = table(&[
            Row {
                name: "one".into(),
                pass: true,
                detail: "200 10.244.1.2".into(),
            },
            Row {
                name: "two".into(),
                pass: false,
                detail: "000 (curl exit status: 28: timed out)".into(),
            },
        ]);
        assert_eq!(
            t,
            "  PASS  one\n  FAIL  two (got: 000 (curl exit status: 28: timed out))\n"
        );
    }
}
