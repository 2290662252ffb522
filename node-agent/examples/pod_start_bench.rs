//! Pod start benchmark for the pod runtime on test-bed nodes with the reference CNI
//! plugins (bridge + host-local + portmap): P pods spread over N nodes (one pod runtime
//! per node, as one agent per node), all applied at once; time from apply to Ready per
//! pod (p50/p99), throughput, and the share of that time spent in CNI ADD and in
//! starting the pause process. Baseline measured in the same run: starting the same
//! container command P times as a plain process (no sandbox, no CNI, no cgroup). Run by
//! scripts/bench-agent.sh; needs root.
//!
//! Usage: pod_start_bench [--pods P] [--nodes N]   (P 1..=200, default 100; N 1..=5, default 3)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use skein_node_agent::backoff::Backoff;
use skein_node_agent::{PodRuntime, RuntimeConfig, status};
use skein_testbed::stats::percentile;
use skein_testbed::{Config, EtcdMode, TestBed};

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), String> {
    let (pods, nodes) = skein_testbed::stats::pods_and_nodes(std::env::args().skip(1), 200)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let agent = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("skein-agent"))
        .filter(|p| p.is_file())
        .ok_or("skein-agent binary not found next to the examples dir (cargo build -p skein-node-agent --bins)")?;
    let bed = TestBed::start(Config {
        nodes,
        outside: false,
        etcd: EtcdMode::None,
        cgroups: true,
        prefix: None,
    })
    .map_err(|e| e.to_string())?;

    // Baseline: the container command as a plain process, from node1's namespace.
    let base = bed
        .node(1)
        .in_netns(|| baseline(pods))
        .map_err(|e| e.to_string())??;

    let barrier = std::sync::Barrier::new(nodes);
    let results: Vec<Result<NodeResult, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=nodes)
            .map(|i| {
                let node = bed.node(i);
                let share = pods / nodes + usize::from(i <= pods % nodes);
                let cfg = node_config(node, i, &agent)?;
                let barrier = &barrier;
                Ok(s.spawn(move || {
                    node.in_netns(|| {
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(1)
                            .enable_all()
                            .build()
                            .map_err(|e| e.to_string())?
                            .block_on(run_node(cfg, i, share, barrier))
                    })
                    .map_err(|e| e.to_string())?
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok::<_, String>(
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("node thread panicked".into()))
                })
                .collect(),
        )
    })?;
    let mut lat = Vec::new();
    let (mut cni, mut pause, mut del, mut last_ready) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    for r in results {
        let r = r?;
        lat.extend(r.latencies);
        cni += r.cni;
        pause += r.pause;
        del = del.max(r.delete);
        last_ready = last_ready.max(r.last_ready_at);
    }
    lat.sort();
    let sum: Duration = lat.iter().sum();
    let share = |d: Duration| 100.0 * d.as_secs_f64() / sum.as_secs_f64().max(1e-9);
    println!(
        "pod start: {pods} pods applied at once over {nodes} node(s), one pod runtime per node (bridge+host-local+portmap)\n\
         {:<34} {:>12} {:>12} {:>12}\n\
         {:<34} {:>12.1} {:>12} {:>12}\n\
         {:<34} {:>12.1} {:>12} {:>12}\n\
         share of apply->Ready time: CNI ADD {:.0}%, pause+netns {:.0}%\n\
         delete (SIGTERM, CNI DEL, teardown), sequential per node: {:.1} pods/s",
        "",
        "pods/s",
        "p50 ms",
        "p99 ms",
        "skein runtime (apply -> Ready)",
        pods as f64 / last_ready.as_secs_f64().max(1e-9),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        "baseline: plain fork/exec",
        pods as f64 / base.iter().sum::<Duration>().as_secs_f64().max(1e-9),
        ms(percentile(&base, 0.5)),
        ms(percentile(&base, 0.99)),
        share(cni),
        share(pause),
        pods as f64 / del.as_secs_f64().max(1e-9),
    );
    Ok(())
}

fn baseline(n: usize) -> Result<Vec<Duration>, String> {
    let mut base = Vec::new();
    let mut children = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let c = std::process::Command::new("/bin/sleep")
            .arg("600")
            .spawn()
            .map_err(|e| e.to_string())?;
        base.push(t.elapsed());
        children.push(c);
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    base.sort();
    Ok(base)
}

fn node_config(
    node: &skein_testbed::Node,
    i: usize,
    agent: &std::path::Path,
) -> Result<RuntimeConfig, String> {
    let d = &node.dirs;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.244.{i}.0/24")}]], "dataDir": d.ipam_data_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(d.cni_conf_dir.join("10-bench.conflist"), conf.to_string())
        .map_err(|e| e.to_string())?;
    Ok(RuntimeConfig {
        state_dir: d.root.join("agent"),
        cni_conf_dir: d.cni_conf_dir.clone(),
        cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        cgroup_root: d.cgroup.clone(),
        pause_exe: agent.to_owned(),
        backoff: Backoff::default(),
        node_ip: Some(node.addr.into()),
        sync_period: Duration::from_millis(50),
        dns: Default::default(),
    })
}

struct NodeResult {
    latencies: Vec<Duration>,
    last_ready_at: Duration,
    cni: Duration,
    pause: Duration,
    delete: Duration,
}

async fn run_node(
    cfg: RuntimeConfig,
    node: usize,
    n: usize,
    barrier: &std::sync::Barrier,
) -> Result<NodeResult, String> {
    let rt = PodRuntime::start(cfg).await.map_err(|e| e.to_string())?;
    let mut list = Vec::new();
    for i in 0..n {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("bench-{node}-{i}"));
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("bench-uid-{node}-{i}"));
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: Some(vec!["/bin/sleep".into(), "600".into()]),
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(1),
            ..Default::default()
        });
        list.push(p);
    }
    barrier.wait();
    let start = Instant::now();
    let mut applied = Vec::new();
    for p in &list {
        applied.push(Instant::now());
        rt.apply(p.clone()).map_err(|e| e.to_string())?;
    }
    let mut ready_at: Vec<Option<Duration>> = vec![None; n];
    let deadline = Instant::now() + Duration::from_secs(300);
    while ready_at.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            return Err(format!("node{node}: pods not Ready within 300 s"));
        }
        for (i, p) in list.iter().enumerate() {
            if ready_at[i].is_some() {
                continue;
            }
            let Some(s) = rt.snapshot(p.metadata.uid.as_deref().unwrap_or_default()) else {
                continue;
            };
            let st = status::pod_status(&s, None, std::time::SystemTime::now());
            if st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                ready_at[i] = Some(applied[i].elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_ready_at = start.elapsed();
    let (mut cni, mut pause) = (Duration::ZERO, Duration::ZERO);
    for p in &list {
        if let Some(sb) = rt
            .snapshot(p.metadata.uid.as_deref().unwrap_or_default())
            .and_then(|s| s.record.sandbox)
        {
            cni += sb.setup.cni_add;
            pause += sb.setup.pause;
        }
    }
    let t_del = Instant::now();
    for p in &list {
        rt.delete(
            p.metadata.uid.as_deref().unwrap_or_default(),
            Duration::from_secs(1),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(NodeResult {
        latencies: ready_at.into_iter().flatten().collect(),
        last_ready_at,
        cni,
        pause,
        delete: t_del.elapsed(),
    })
}
