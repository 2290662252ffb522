//! `skein-scheduler`: binds unbound pods to nodes (see `skein_control_plane::scheduler`).

use std::time::Duration;

use clap::Parser;
use skein_control_plane::kubeclient::{ClientArgs, init_logging};
use skein_control_plane::scheduler;

#[derive(Debug, Parser)]
#[command(
    name = "skein-scheduler",
    version,
    about = "Binds unbound pods to nodes"
)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Schedule pods whose spec.schedulerName is this (or unset).
    #[arg(long, default_value = "default-scheduler")]
    scheduler_name: String,
    /// Retry unschedulable pods at least this often (seconds).
    #[arg(long, default_value_t = 5)]
    retry_seconds: u64,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let client = args.client.client().await?;
    scheduler::run(
        client,
        scheduler::Options {
            scheduler_name: args.scheduler_name,
            retry: Duration::from_secs(args.retry_seconds),
        },
    )
    .await
}
