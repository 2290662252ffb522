//! Pod start through the whole cluster: `skeinctl up` a local cluster, `kubectl apply` a
//! Deployment of P replicas, and time each pod from the apply to its Ready condition as
//! kubectl's watch reports it (API server, controller manager, scheduler, skein-agent,
//! skein-cni, flannel's subnet). Prints throughput, p50/p99, and the share of each pod's
//! life before Ready (pod object seen -> Ready) that skein-agent spent in CNI ADD (from
//! its state files). Baseline in the same run: the same container command started P
//! times as plain processes in the nodes' namespaces. Run by scripts/bench-pods.sh; needs
//! root and the workspace binaries (`cargo build --workspace --bins`).
//!
//! Usage: pod_start_api [--pods P] [--nodes N]   (P 1..=300, default 100; N 1..=5, default 3)

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use skein_testbed::stats::percentile;

/// The container command of every pod (and of the baseline's processes).
const COMMAND: [&str; 2] = ["sleep", "3600"];

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The local cluster, removed with `skeinctl down` when dropped (also on error).
struct Up {
    skeinctl: PathBuf,
    name: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new(&self.skeinctl)
            .args(["down", "--name", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// CNI ADD time per pod uid, from skein-agent's state files under the cluster's dir.
fn cni_add_times(state: &Path, nodes: usize) -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    for i in 1..=nodes {
        let dir = state.join(format!("node{i}/agent/pods"));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            let Ok(rec) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let add = &rec["sandbox"]["setup"]["cni_add"];
            if let (Some(s), Some(n)) = (add["secs"].as_u64(), add["nanos"].as_u64()) {
                out.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    Duration::from_secs(s) + Duration::from_nanos(n),
                );
            }
        }
    }
    out
}

fn main() -> Result<(), String> {
    let (pods, nodes) = skein_testbed::stats::pods_and_nodes(std::env::args().skip(1), 300)?;
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (it brings up a local cluster in network namespaces)".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or("no target dir")?
        .to_owned();
    let skeinctl = bin.join("skeinctl");
    if !skeinctl.is_file() {
        return Err(format!(
            "{} is not built (cargo build --workspace --bins)",
            skeinctl.display()
        ));
    }

    let name = format!("pb{}", std::process::id());
    let up = Up {
        skeinctl: skeinctl.clone(),
        name: name.clone(),
    };
    eprintln!("bringing up cluster {name} with {nodes} nodes ...");
    run(Command::new(&skeinctl).args(["up", "--name", &name, "--nodes", &nodes.to_string()]))?;
    let kubeconfig = run(Command::new(&skeinctl).args(["kubeconfig", "--name", &name]))?
        .trim()
        .to_owned();
    let state = PathBuf::from(format!("/run/skein/{name}"));
    let kubectl = || {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&kubeconfig);
        c
    };

    // Baseline: the same command as plain processes in the node namespaces, all at once.
    let t = Instant::now();
    let mut plain = Vec::new();
    for i in 0..pods {
        let ns = format!("/run/netns/{name}-node{}", i % nodes + 1);
        let child = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .arg("--")
            .args(COMMAND)
            .spawn()
            .map_err(|e| format!("nsenter: {e}"))?;
        plain.push(Reaped(child));
    }
    let baseline = t.elapsed();
    drop(plain);

    // Watch every pod; each object is stamped when kubectl prints it.
    let mut watch = kubectl();
    watch
        .args(["get", "pods", "-l", "app=podstart", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watcher = Reaped(watch.spawn().map_err(|e| format!("kubectl get -w: {e}"))?);
    let stdout = watcher.0.stdout.take().ok_or("no kubectl stdout")?;
    let (tx, rx) = mpsc::channel::<(Instant, Value)>();
    std::thread::spawn(move || {
        for v in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
            let Ok(v) = v else { break };
            if tx.send((Instant::now(), v)).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: podstart}}\nspec:\n  replicas: {pods}\n  selector: {{matchLabels: {{app: podstart}}}}\n  template:\n    metadata: {{labels: {{app: podstart}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: busybox\n        command: [{}]\n",
        COMMAND.map(|c| format!("\"{c}\"")).join(", ")
    );
    let mut apply = kubectl();
    apply
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let t0 = Instant::now();
    let mut child = apply.spawn().map_err(|e| format!("kubectl apply: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(manifest.as_bytes())
        .map_err(|e| e.to_string())?;
    if !child.wait().map_err(|e| e.to_string())?.success() {
        return Err("kubectl apply failed".into());
    }

    // uid -> (first seen, ready at, node)
    let mut seen: BTreeMap<String, (Instant, Option<Instant>, String)> = BTreeMap::new();
    let deadline = t0 + Duration::from_secs(60 + pods as u64);
    while seen.values().filter(|s| s.1.is_some()).count() < pods {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, pod) = rx.recv_timeout(left).map_err(|_| {
            format!(
                "only {} of {pods} pods became Ready within {:?} (logs under {}/log)",
                seen.values().filter(|s| s.1.is_some()).count(),
                deadline - t0,
                state.display()
            )
        })?;
        let Some(uid) = pod["metadata"]["uid"].as_str() else {
            continue;
        };
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
        let e = seen
            .entry(uid.to_owned())
            .or_insert((at, None, String::new()));
        if !node.is_empty() {
            e.2 = node;
        }
        if e.1.is_none() && is_ready(&pod) {
            e.1 = Some(at);
        }
    }
    drop(watcher);
    let last = seen.values().filter_map(|s| s.1).max().ok_or("no pod")?;

    let mut from_apply: Vec<Duration> = seen.values().filter_map(|s| s.1).map(|r| r - t0).collect();
    from_apply.sort();
    let mut pod_life: Vec<Duration> = seen.values().filter_map(|s| s.1.map(|r| r - s.0)).collect();
    pod_life.sort();
    let cni = cni_add_times(&state, nodes);
    let (mut cni_total, mut life_total) = (Duration::ZERO, Duration::ZERO);
    let mut cni_sorted = Vec::new();
    for (uid, (first, ready, _)) in &seen {
        if let (Some(add), Some(r)) = (cni.get(uid), ready) {
            cni_total += *add;
            life_total += *r - *first;
            cni_sorted.push(*add);
        }
    }
    cni_sorted.sort();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for s in seen.values() {
        *per_node.entry(s.2.as_str()).or_default() += 1;
    }
    let wall = last - t0;

    // Teardown through the API too: delete and wait for every pod object to go.
    let t1 = Instant::now();
    run(kubectl().args(["delete", "deployment", "podstart", "--wait=false"]))?;
    let gone_deadline = t1 + Duration::from_secs(60 + pods as u64);
    loop {
        let out = run(kubectl().args(["get", "pods", "-l", "app=podstart", "-o", "name"]))?;
        if out.trim().is_empty() {
            break;
        }
        if Instant::now() > gone_deadline {
            return Err(format!(
                "{} pods still there after {:?}",
                out.lines().count(),
                gone_deadline - t1
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let teardown = t1.elapsed();
    drop(up);

    println!(
        "pod start through the API: {pods} pods on {nodes} nodes (skeinctl up, kubectl apply of one Deployment)"
    );
    println!("  pods per node: {per_node:?}");
    println!(
        "  {:<44} {:>10} {:>10} {:>10}",
        "", "pods/s", "p50 ms", "p99 ms"
    );
    println!(
        "  {:<44} {:>10.1} {:>10} {:>10}",
        "apply -> Ready (whole cluster)",
        pods as f64 / wall.as_secs_f64(),
        ms(percentile(&from_apply, 0.5)),
        ms(percentile(&from_apply, 0.99))
    );
    println!(
        "  {:<44} {:>10} {:>10} {:>10}",
        "pod object seen -> Ready",
        "",
        ms(percentile(&pod_life, 0.5)),
        ms(percentile(&pod_life, 0.99))
    );
    println!(
        "  {:<44} {:>10} {:>10} {:>10}",
        "  of which CNI ADD (skein-cni via skein-agent)",
        "",
        ms(percentile(&cni_sorted, 0.5)),
        ms(percentile(&cni_sorted, 0.99))
    );
    println!(
        "  {:<44} {:>10.1} {:>10} {:>10}",
        "baseline: same command as plain processes",
        pods as f64 / baseline.as_secs_f64(),
        "",
        ""
    );
    println!(
        "  share of pod start (seen -> Ready) in CNI ADD: {:.1}% ({} of {pods} pods with a state record)",
        if life_total.is_zero() {
            0.0
        } else {
            cni_total.as_secs_f64() * 100.0 / life_total.as_secs_f64()
        },
        cni_sorted.len()
    );
    println!("  delete -> every pod object gone: {} ms", ms(teardown));
    Ok(())
}
