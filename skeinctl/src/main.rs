//! `skeinctl`: the operator's CLI for a local skein cluster.

use clap::{Parser, Subcommand};

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
    /// Build a throwaway test bed (fabric, nodes, outside, etcd), prove node-to-node
    /// reachability and etcd health from every node, and tear it down.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
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
    /// Bring up a local cluster (not implemented yet: skein issue #8).
    Up,
    /// Show a local cluster at a glance (not implemented yet: skein issue #8).
    Status,
    /// Print the path of a kubeconfig for the local cluster (not implemented yet: skein issue #8).
    Kubeconfig,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo { nodes } => skeinctl::demo::run(nodes),
        Cmd::Down { name, all } => skeinctl::down(if all { None } else { Some(&name) }),
        Cmd::Up | Cmd::Status | Cmd::Kubeconfig => {
            eprintln!("skeinctl: this command is not implemented yet (skein issue #8)");
            Ok(std::process::ExitCode::from(2))
        }
    }
}
