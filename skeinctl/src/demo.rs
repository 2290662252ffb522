//! The demo at the test-bed stage: build 3 nodes, the fabric, `outside` and etcd; show a
//! TCP reachability matrix between all hosts and etcd health from every node; tear down.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use skein_testbed::{Config, Host, TestBed};

const PROBE_PORT: u16 = 7000;

/// Runs the demo; the exit code is non-zero when any check failed.
pub fn run(nodes: usize) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    println!("==> building the test bed: {nodes} nodes, fabric bridge, outside client, etcd");
    let bed = TestBed::start(Config {
        nodes,
        ..Config::default()
    })
    .context("build the test bed")?;
    println!(
        "    prefix {}  (namespaces {}-*, state {})",
        bed.prefix(),
        bed.prefix(),
        bed.state_dir().display()
    );
    for n in &bed.nodes {
        println!(
            "    {:<8} netns {:<22} eth0 {}",
            n.name,
            n.netns_name(),
            n.addr
        );
    }
    let outside = bed.outside();
    println!(
        "    {:<8} netns {:<22} eth0 {}",
        outside.name,
        outside.netns_name(),
        outside.addr
    );
    for m in &bed.etcd().members {
        println!(
            "    {:<8} netns {:<22} {}",
            m.name,
            m.host.netns_name(),
            m.client_url()
        );
    }

    let mut failures = 0;
    let mut hosts: Vec<&Host> = bed.nodes.iter().map(|n| &n.host).collect();
    hosts.push(outside);
    println!("\n==> TCP reachability over the fabric (row connects to column, port {PROBE_PORT})");
    print!("    {:<9}", "from\\to");
    for h in &hosts {
        print!("{:<9}", h.name);
    }
    println!();
    for from in &hosts {
        print!("    {:<9}", from.name);
        for to in &hosts {
            let cell = if from.name == to.name {
                "-".to_owned()
            } else {
                match TestBed::tcp_check(from, to, PROBE_PORT) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => {
                        failures += 1;
                        eprintln!("    {}", e);
                        "FAIL".to_owned()
                    }
                }
            };
            print!("{cell:<9}");
        }
        println!();
    }

    println!("\n==> etcd from every node (etcdctl endpoint health, put, get)");
    let etcd = bed.etcd();
    for n in &bed.nodes {
        let key = format!("/skein-demo/{}", n.name);
        let check = (|| -> anyhow::Result<String> {
            // etcdctl prints the health line on stderr.
            let out = etcd.etcdctl(n)?.args(["endpoint", "health"]).output()?;
            let health = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            anyhow::ensure!(
                out.status.success() && health.contains("is healthy"),
                "{health}"
            );
            skein_testbed::run_checked(etcd.etcdctl(n)?.args(["put", &key, &n.addr.to_string()]))?;
            let got = skein_testbed::run_checked(etcd.etcdctl(n)?.args([
                "get",
                &key,
                "--print-value-only",
            ]))?;
            anyhow::ensure!(
                got.trim() == n.addr.to_string(),
                "get {key} returned {:?}",
                got.trim()
            );
            Ok(health)
        })();
        match check {
            Ok(health) => println!("    {:<8} ok    {health}", n.name),
            Err(e) => {
                failures += 1;
                println!("    {:<8} FAIL  {e:#}", n.name);
            }
        }
    }

    println!("\n==> tearing down");
    let prefix = bed.prefix().to_owned();
    drop(bed);
    let left = skein_netns_left(&prefix);
    if !left.is_empty() {
        failures += 1;
        println!("    FAIL: still present after teardown: {left:?}");
    } else {
        println!("    removed every namespace, process and file of {prefix}");
    }
    println!(
        "\n{} in {:.1}s",
        if failures == 0 {
            "all checks passed".to_owned()
        } else {
            format!("{failures} checks FAILED")
        },
        started.elapsed().as_secs_f64()
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn skein_netns_left(prefix: &str) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default();
    let state = std::path::Path::new(skein_testbed::STATE_ROOT).join(prefix);
    if state.exists() {
        left.push(state.display().to_string());
    }
    left
}
