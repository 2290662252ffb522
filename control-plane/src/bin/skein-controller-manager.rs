//! `skein-controller-manager`: Deployments, ReplicaSets, DaemonSets, EndpointSlices and
//! Endpoints, node lifecycle and garbage collection (see `skein_control_plane::controllers`).

use std::time::Duration;

use clap::Parser;
use skein_control_plane::controllers;
use skein_control_plane::kubeclient::{ClientArgs, init_logging};

#[derive(Debug, Parser)]
#[command(
    name = "skein-controller-manager",
    version,
    about = "Runs skein's controllers"
)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Seconds without a node heartbeat before the node is NotReady and tainted unreachable.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds a node stays unreachable before its pods are evicted.
    #[arg(long, default_value_t = 300)]
    pod_eviction_timeout: u64,
    /// Seconds between full passes when nothing changes.
    #[arg(long, default_value_t = 10)]
    resync_period: u64,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let client = args.client.client().await?;
    controllers::run(
        client,
        controllers::Options {
            node_monitor_grace: Duration::from_secs(args.node_monitor_grace_period),
            pod_eviction_timeout: Duration::from_secs(args.pod_eviction_timeout),
            resync: Duration::from_secs(args.resync_period),
        },
    )
    .await
}
