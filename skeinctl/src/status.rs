//! `skeinctl status` and `skeinctl kubeconfig`: a running cluster at a glance, read from
//! its state dir (pid files, subnet files), etcd (flannel leases) and the API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use skein_netns::NetNs;
use skein_testbed::Host;

use crate::layout::{self, ClusterPaths};

/// The state dir of an existing cluster, or an error saying there is none.
pub(crate) fn existing(name: &str) -> anyhow::Result<ClusterPaths> {
    skein_testbed::validate_prefix(name)?;
    let paths = ClusterPaths::new(name);
    if !paths.state.is_dir() {
        bail!(
            "no cluster named {name:?} (no {}); start one with `skeinctl up --name {name}`",
            paths.state.display()
        );
    }
    Ok(paths)
}

/// `skeinctl kubeconfig`: the kubeconfig's path.
pub fn kubeconfig_path(name: &str) -> anyhow::Result<PathBuf> {
    let paths = existing(name)?;
    if !paths.kubeconfig.is_file() {
        bail!(
            "cluster {name:?} has no kubeconfig ({} is missing: `skeinctl up` did not finish)",
            paths.kubeconfig.display()
        );
    }
    Ok(paths.kubeconfig)
}

/// Whether `pid` is a running process (a zombie is not).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Daemons from the pid files: (name, pid, running).
pub fn daemons(paths: &ClusterPaths) -> Vec<(String, i32, bool)> {
    let mut out: Vec<(String, i32, bool)> = std::fs::read_dir(&paths.run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_owned();
            let name = file.strip_suffix(".pid")?.to_owned();
            let pid: i32 = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name, pid, running(pid)))
        })
        .collect();
    out.sort();
    out
}

/// `skeinctl status`: prints daemons, nodes and subnets, and the API's Nodes and
/// Services when the API server answers. Fails when a daemon is not running.
pub fn status(name: &str) -> anyhow::Result<std::process::ExitCode> {
    let paths = existing(name)?;
    println!("cluster {name}  (state {})", paths.state.display());
    if paths.kubeconfig.is_file() {
        println!("kubeconfig {}", paths.kubeconfig.display());
    }

    println!("\nDAEMONS");
    let ds = daemons(&paths);
    let mut down = 0;
    for (d, pid, up) in &ds {
        if !up {
            down += 1;
        }
        println!(
            "  {d:<22} pid {pid:<8} {:<8} log {}",
            if *up { "running" } else { "EXITED" },
            paths.log_file(d).display()
        );
    }
    if ds.is_empty() {
        println!("  (no pid files in {})", paths.run_dir.display());
    }

    println!("\nNODES (subnet files; flannel leases in etcd)");
    let mut nodes: Vec<(usize, String)> = std::fs::read_dir(&paths.state)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            Some((n.strip_prefix("node")?.parse().ok()?, n))
        })
        .collect();
    nodes.sort();
    for (i, node) in &nodes {
        let file = paths.state.join(node).join("flannel/subnet.env");
        let subnet = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| layout::subnet_of(&t).map(str::to_owned))
            .unwrap_or_else(|| "(no subnet file)".into());
        println!(
            "  {node:<8} netns {name}-{node:<8} eth0 198.51.100.{:<4} subnet {subnet}",
            10 + i
        );
    }

    let control = control_host(name);
    if let Ok(control) = &control {
        match leases(control) {
            Ok(ls) if ls.is_empty() => println!("  (no flannel leases in etcd)"),
            Ok(ls) => {
                for l in ls {
                    println!("  lease {l}");
                }
            }
            Err(e) => println!("  flannel leases: cannot read etcd: {e:#}"),
        }
    }

    println!("\nAPI ({})", layout::api_url());
    if !paths.pid_file("apiserver").exists() {
        println!("  not started: skein-apiserver was not usable at `skeinctl up`");
    } else {
        api_status(control);
    }
    if down > 0 {
        eprintln!("\n{down} daemon(s) not running: see their logs above");
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn api_status(control: anyhow::Result<Host>) {
    match control.and_then(|c| {
        let nodes = crate::api::get_json(&c, "/api/v1/nodes")?;
        let svcs = crate::api::get_json(&c, "/api/v1/services")?;
        Ok((nodes, svcs))
    }) {
        Ok((nodes, svcs)) => {
            println!("  Nodes:");
            for l in crate::api::node_lines(&nodes) {
                println!("    {l}");
            }
            println!("  Services:");
            for l in crate::api::service_lines(&svcs) {
                println!("    {l}");
            }
        }
        Err(e) => println!("  not reachable: {e}"),
    }
}

pub(crate) fn control_host(name: &str) -> anyhow::Result<Host> {
    let netns = NetNs::open(format!("{name}-control"))
        .with_context(|| format!("open netns {name}-control"))?;
    Ok(Host {
        name: "control".into(),
        netns,
        addr: layout::CONTROL_ADDR,
    })
}

/// `<subnet> PublicIP <ip> <backend>` for every flannel lease in etcd.
fn leases(control: &Host) -> anyhow::Result<Vec<String>> {
    let mut cmd = control.command("etcdctl")?;
    cmd.env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &format!("http://198.51.100.2:{}", skein_testbed::ETCD_CLIENT_PORT),
        ])
        .args(["--command-timeout", "3s", "get", "--prefix"])
        .arg(format!("{}/subnets/", layout::FLANNEL_PREFIX));
    let out = skein_testbed::run_checked(&mut cmd)?;
    let lines: Vec<&str> = out.lines().collect();
    Ok(lines
        .chunks(2)
        .filter_map(|kv| {
            let subnet = kv[0].rsplit('/').next()?.replacen('-', "/", 1);
            let v: serde_json::Value = serde_json::from_str(kv.get(1)?).ok()?;
            Some(format!(
                "{subnet:<16} PublicIP {:<16} {}",
                v["PublicIP"].as_str().unwrap_or("?"),
                v["BackendType"].as_str().unwrap_or("?")
            ))
        })
        .collect())
}
