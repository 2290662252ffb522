//! `skeinctl`: the operator's CLI for a local skein cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skeinctl::layout::Backend;

#[derive(Debug, Parser)]
#[command(
    name = "skeinctl",
    version,
    about = "Bring a local skein cluster up and down, and show it working"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring up a local cluster in network namespaces and leave it running: etcd, the
    /// control plane, and on every node flanneld, skein-cni, skein-agent and skein-proxy.
    Up {
        /// The cluster's name: prefix of its namespaces, state in /run/skein/<name>.
        #[arg(long, default_value = "skein")]
        name: String,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// flanneld's backend.
        #[arg(long, value_enum, default_value_t = Backend::Vxlan)]
        backend: Backend,
        /// Run skein-proxy with --pod-routing (eBPF pod-to-pod routing between nodes;
        /// host-gw routes only, see the README).
        #[arg(long)]
        pod_routing: bool,
        /// Where the skein binaries are [default: the directory of this executable].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Show a local cluster: daemons, nodes and subnets, the API's Nodes and Services.
    Status {
        /// The cluster's name.
        #[arg(long, default_value = "skein")]
        name: String,
    },
    /// Prove with real requests that the cluster networks the demo (examples/ applied):
    /// pod to pod on one node and across nodes, pod to the Service by ClusterIP and by DNS
    /// name through the pod's own resolv.conf, outside to the NodePort on every node.
    /// Applies nothing; prints a pass/fail table and exits non-zero on any FAIL.
    Check {
        /// The cluster's name.
        #[arg(long, default_value = "skein")]
        name: String,
    },
    /// Print the path of a kubeconfig with which plain kubectl reaches the cluster.
    Kubeconfig {
        /// The cluster's name.
        #[arg(long, default_value = "skein")]
        name: String,
    },
    /// Remove a local cluster or test bed by name, or every one with --all: processes,
    /// namespaces, mounts, BPF pins, cgroups and state files.
    Down {
        /// The cluster's name (its namespace prefix).
        #[arg(long, default_value = "skein", conflicts_with = "all")]
        name: String,
        /// Remove every cluster and test bed with state under /run/skein.
        #[arg(long)]
        all: bool,
    },
    /// Build a throwaway test bed (fabric, nodes, outside, etcd), prove node-to-node
    /// reachability and etcd health from every node, and tear it down.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// (internal, started by `up`) Relay 127.0.0.1 connections to the API server inside
    /// the control namespace.
    #[command(hide = true)]
    Relay {
        /// The namespace to connect from (a path, or a name under /run/netns).
        #[arg(long)]
        netns: PathBuf,
        /// The API server's address inside that namespace.
        #[arg(long)]
        target: SocketAddr,
        /// Where to listen, in the relay's own namespace.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// File that receives the bound port.
        #[arg(long)]
        port_file: PathBuf,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up {
            name,
            nodes,
            backend,
            pod_routing,
            bin_dir,
        } => {
            let skeinctl = std::env::current_exe().context("find the skeinctl executable")?;
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => skeinctl
                    .parent()
                    .context("the skeinctl executable has no directory")?
                    .to_owned(),
            };
            skeinctl::up::up(&skeinctl::up::UpOptions {
                name,
                nodes,
                backend,
                pod_routing,
                bin_dir,
                skeinctl,
                tuning: Default::default(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { name } => skeinctl::status::status(&name),
        Cmd::Check { name } => skeinctl::check::check(&name),
        Cmd::Kubeconfig { name } => {
            println!("{}", skeinctl::status::kubeconfig_path(&name)?.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { name, all } => skeinctl::down(if all { None } else { Some(&name) }),
        Cmd::Demo { nodes } => skeinctl::demo::run(nodes),
        Cmd::Relay {
            netns,
            target,
            listen,
            port_file,
        } => {
            skeinctl::relay::run(&netns, target, listen, &port_file)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
