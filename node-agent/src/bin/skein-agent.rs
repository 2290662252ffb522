//! `skein-agent`: the kubelet of a skein node. Flags map onto
//! [`skein_node_agent::agent::AgentConfig`]; `skein-agent pause` is the sandbox's pause
//! process (the agent re-executes itself for it).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use skein_node_agent::agent::{self, AgentConfig};
use skein_node_agent::backoff::Backoff;
use skein_node_agent::exec_access::ExecAccess;
use skein_node_agent::pod_dns::DnsSettings;
use skein_node_agent::runtime::RuntimeConfig;

/// The skein node agent: registers the Node, runs the pods bound to it.
#[derive(Debug, Parser)]
#[command(name = "skein-agent", version)]
struct Args {
    /// This node's name (default: the hostname).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The API server URL (plain http or https), e.g. http://198.51.100.2:6443.
    #[arg(long, conflicts_with = "kubeconfig")]
    api_server: Option<String>,
    /// A kubeconfig file (instead of --api-server; default: in-cluster or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node's IP (InternalIP, hostIP of pods).
    #[arg(long)]
    node_ip: IpAddr,
    /// Extra node labels, k=v,k=v.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// CNI config dir (the first *.conflist/*.conf/*.json by name is used).
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// CNI plugin dirs (repeat or separate with ':').
    #[arg(long, default_value = "/opt/cni/bin", value_delimiter = ':')]
    cni_bin_dir: Vec<PathBuf>,
    /// Agent state: pod records, netns mounts, CNI cache, container logs.
    #[arg(long, default_value = "/var/lib/skein-agent")]
    state_dir: PathBuf,
    /// cgroup v2 directory under which pod cgroups are made (none: no cgroups).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// flanneld's subnet file; FLANNEL_SUBNET becomes spec.podCIDR.
    #[arg(long)]
    subnet_file: Option<PathBuf>,
    /// How long to wait at start for the subnet file to appear.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    subnet_wait: Duration,
    /// Capacity: CPUs (default: the machine's).
    #[arg(long)]
    cpu: Option<String>,
    /// Capacity: memory quantity, e.g. 8Gi (default: the machine's).
    #[arg(long)]
    memory: Option<String>,
    /// Capacity: most pods.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Address the log and exec endpoint listens on (default: --node-ip).
    #[arg(long)]
    log_address: Option<IpAddr>,
    /// Port of the log and exec endpoint (GET /containerLogs/<ns>/<pod>/<container>,
    /// GET /exec/<ns>/<pod>/<container> as a WebSocket).
    #[arg(long, default_value_t = 10250)]
    log_port: u16,
    /// Peers allowed to open `kubectl exec` sessions on the log port: `any`, or IPs and
    /// CIDRs, comma-separated (default: the API server's address).
    #[arg(long)]
    exec_allowed_from: Option<String>,
    /// Node lease duration.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Lease renewal and node status period.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_period: Duration,
    /// Container restart back-off: first delay.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    restart_backoff: Duration,
    /// Container restart back-off: cap.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    restart_backoff_max: Duration,
    /// How often each pod's containers and probes are looked at.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    sync_period: Duration,
    /// Cluster DNS Service IPs written as the nameservers of ClusterFirst pods (repeat or
    /// separate with ','); without it ClusterFirst falls back to Default, as the kubelet.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain: pods search <ns>.svc.<domain> svc.<domain> <domain>.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolver file, given to pods with dnsPolicy Default (and appended to
    /// ClusterFirst pods' search path).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
}

/// "500ms", "10s", "5m", or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?} (use ms, s or m)")),
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("pause") {
        skein_node_agent::sandbox::pause_main();
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let node_name = match args.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .context("read hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    let mut labels = BTreeMap::new();
    for kv in args.node_labels.iter().filter(|s| !s.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--node-labels: {kv:?} is not key=value");
        };
        labels.insert(k.to_owned(), v.to_owned());
    }
    let config = match (&args.api_server, &args.kubeconfig) {
        (Some(url), _) => kube::Config::new(
            url.parse()
                .with_context(|| format!("--api-server {url:?}"))?,
        ),
        (None, Some(path)) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        (None, None) => kube::Config::infer()
            .await
            .context("find the API server (give --api-server or --kubeconfig)")?,
    };
    let exec_access = match &args.exec_allowed_from {
        Some(s) => ExecAccess::parse(s).map_err(|e| anyhow::anyhow!("--exec-allowed-from: {e}"))?,
        None => {
            let url = &config.cluster_url;
            let port = url
                .port_u16()
                .unwrap_or(if url.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
            ExecAccess::api_server(url.host().unwrap_or(""), port)
        }
    };
    tracing::info!(allowed_from = %exec_access, "exec endpoint");
    let client = kube::Client::try_from(config).context("API client")?;
    let pause_exe = std::env::current_exe().context("find own executable for the pause process")?;
    let cfg = AgentConfig {
        node_name,
        node_ip: args.node_ip,
        labels,
        cpu: args.cpu,
        memory: args.memory,
        max_pods: args.max_pods,
        subnet_file: args.subnet_file,
        subnet_wait: args.subnet_wait,
        log_addr: SocketAddr::new(args.log_address.unwrap_or(args.node_ip), args.log_port),
        exec_access,
        lease_duration: args.lease_duration,
        heartbeat_period: args.heartbeat_period,
        runtime: RuntimeConfig {
            state_dir: args.state_dir,
            cni_conf_dir: args.cni_conf_dir,
            cni_bin_dirs: args.cni_bin_dir,
            cgroup_root: args.cgroup_root,
            pause_exe,
            backoff: Backoff {
                initial: args.restart_backoff,
                max: args.restart_backoff_max,
                reset_after: args.restart_backoff_max * 2,
            },
            node_ip: Some(args.node_ip),
            sync_period: args.sync_period,
            dns: DnsSettings {
                cluster_dns: args.cluster_dns,
                cluster_domain: args.cluster_domain,
                resolv_conf: args.resolv_conf,
                ..DnsSettings::default()
            },
        },
    };
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    };
    agent::run(client, cfg, shutdown)
        .await
        .context("skein-agent")
}
