//! Pod start benchmark for the pod runtime on one test-bed node with the reference CNI
//! plugins (bridge + host-local + portmap): N pods applied at once, time from apply to
//! Ready per pod (p50/p99), throughput, and the share of that time spent in CNI ADD and
//! in starting the pause process. Baseline measured in the same run: starting the same
//! container command N times as a plain process in the node's namespace (no sandbox, no
//! CNI, no cgroup). Run by scripts/bench-agent.sh; needs root.
//!
//! Usage: pod_start_bench [--pods N]   (1..=200, default 50)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use skein_node_agent::backoff::Backoff;
use skein_node_agent::{PodRuntime, RuntimeConfig, status};
use skein_testbed::{Config, EtcdMode, TestBed};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), String> {
    let mut pods = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pods" => {
                pods = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=200).contains(n))
                    .ok_or("--pods takes a number from 1 to 200")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let agent = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("skein-agent"))
        .filter(|p| p.is_file())
        .ok_or("skein-agent binary not found next to the examples dir (cargo build -p skein-node-agent --bins)")?;
    let bed = TestBed::start(Config {
        nodes: 1,
        outside: false,
        etcd: EtcdMode::None,
        cgroups: true,
        prefix: None,
    })
    .map_err(|e| e.to_string())?;
    let d = bed.node(1).dirs.clone();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "dataDir": d.ipam_data_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(d.cni_conf_dir.join("10-bench.conflist"), conf.to_string())
        .map_err(|e| e.to_string())?;
    let cfg = RuntimeConfig {
        state_dir: d.root.join("agent"),
        cni_conf_dir: d.cni_conf_dir.clone(),
        cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        cgroup_root: d.cgroup.clone(),
        pause_exe: agent,
        backoff: Backoff::default(),
        node_ip: Some(bed.node(1).addr.into()),
        sync_period: Duration::from_millis(50),
    };
    let report = bed
        .node(1)
        .in_netns(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(bench(cfg, pods))
        })
        .map_err(|e| e.to_string())??;
    println!("{report}");
    Ok(())
}

async fn bench(cfg: RuntimeConfig, n: usize) -> Result<String, String> {
    // Baseline: the container command as a plain process.
    let mut base = Vec::new();
    let mut children = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let c = tokio::process::Command::new("/bin/sleep")
            .arg("600")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        base.push(t.elapsed());
        children.push(c);
    }
    drop(children);
    base.sort();

    let rt = PodRuntime::start(cfg).await.map_err(|e| e.to_string())?;
    let mut list = Vec::new();
    for i in 0..n {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("bench-{i}"));
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("bench-uid-{i}"));
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
            return Err("pods not Ready within 300 s".into());
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
    let total = start.elapsed();
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
    let mut lat: Vec<Duration> = ready_at.into_iter().flatten().collect();
    lat.sort();
    let sum: Duration = lat.iter().sum();
    let t_del = Instant::now();
    for p in &list {
        rt.delete(
            p.metadata.uid.as_deref().unwrap_or_default(),
            Duration::from_secs(1),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let del = t_del.elapsed();
    let share = |d: Duration| 100.0 * d.as_secs_f64() / sum.as_secs_f64().max(1e-9);
    Ok(format!(
        "pod start, {n} pods applied at once on one node (bridge+host-local+portmap)\n\
         {:<34} {:>12} {:>12} {:>12}\n\
         {:<34} {:>12.1} {:>12} {:>12}\n\
         {:<34} {:>12.1} {:>12} {:>12}\n\
         share of apply->Ready time: CNI ADD {:.0}%, pause+netns {:.0}%\n\
         delete (SIGTERM, CNI DEL, teardown), sequential: {:.1} pods/s",
        "",
        "pods/s",
        "p50 ms",
        "p99 ms",
        "skein runtime (apply -> Ready)",
        n as f64 / total.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        "baseline: plain fork/exec",
        n as f64 / base.iter().sum::<Duration>().as_secs_f64().max(1e-9),
        ms(percentile(&base, 0.5)),
        ms(percentile(&base, 0.99)),
        share(cni),
        share(pause),
        n as f64 / del.as_secs_f64(),
    ))
}
