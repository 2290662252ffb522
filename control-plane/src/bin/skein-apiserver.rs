//! `skein-apiserver`: the Kubernetes API subset on etcd. Flags follow kube-apiserver's.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use skein_control_plane::Config;

#[derive(Debug, Parser)]
#[command(
    name = "skein-apiserver",
    version,
    about = "Kubernetes-compatible API server on etcd"
)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// Key prefix of every object in etcd.
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port to listen on (HTTPS with the TLS files, else plain HTTP).
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// TLS certificate chain (PEM, leaf first); with --tls-private-key-file serves HTTPS.
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, RSA or EC) of --tls-cert-file.
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM): client certificates it signed authenticate as their CommonName
    /// (groups: Organizations). Needs the TLS flags.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Static bearer tokens, CSV lines `token,user,uid[,"group1,group2"]`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Serve requests that carry no credentials (as system:anonymous); else 401.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// ClusterIP range of Services.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// NodePort range, `low-high`.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Longest a watch lasts, in seconds (a client's timeoutSeconds is capped here).
    #[arg(long, default_value_t = 1800)]
    max_watch_seconds: u64,
    /// Seconds between etcd compactions (0: never compact; leave it to etcd).
    #[arg(long, default_value_t = 300)]
    etcd_compaction_interval: u64,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
}

fn port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--service-node-port-range {s:?}: expected low-high"))?;
    let (lo, hi): (u16, u16) = (
        a.trim()
            .parse()
            .with_context(|| format!("--service-node-port-range: bad low port {a:?}"))?,
        b.trim()
            .parse()
            .with_context(|| format!("--service-node-port-range: bad high port {b:?}"))?,
    );
    if lo == 0 || lo > hi {
        bail!("--service-node-port-range {s:?}: low must be 1 or more and not above high");
    }
    Ok((lo, hi))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let cidr: ipnetwork::Ipv4Network =
        args.service_cluster_ip_range.parse().with_context(|| {
            format!(
                "--service-cluster-ip-range {:?} is not an IPv4 CIDR",
                args.service_cluster_ip_range
            )
        })?;
    if cidr.prefix() > 28 {
        bail!("--service-cluster-ip-range {cidr} is too small (at most /28)");
    }
    let config = Config {
        etcd_servers: args.etcd_servers,
        etcd_prefix: args.etcd_prefix,
        bind_address: args.bind_address,
        port: args.port,
        tls_cert_file: args.tls_cert_file,
        tls_private_key_file: args.tls_private_key_file,
        client_ca_file: args.client_ca_file,
        token_auth_file: args.token_auth_file,
        anonymous_auth: args.anonymous_auth,
        service_cluster_ip_range: cidr,
        service_node_port_range: port_range(&args.service_node_port_range)?,
        max_watch_seconds: args.max_watch_seconds,
        etcd_compaction_interval: args.etcd_compaction_interval,
    };
    skein_control_plane::run(config)
        .await
        .context("skein-apiserver")
}
