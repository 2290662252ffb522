//! `skein-proxy`: Service load balancing in eBPF. Without a subcommand it runs the
//! daemon (watch Services and EndpointSlices, program the maps); `apply` programs the
//! maps once from a JSON file, `list` prints them, `cleanup` removes everything.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use skein_proxy::datapath::{self, BpfMaps, InstallConfig};
use skein_proxy::desired::NodeContext;
use skein_proxy::model::ServiceSet;

#[derive(Debug, Parser)]
#[command(
    name = "skein-proxy",
    version,
    about = "Kubernetes Service load balancing in eBPF"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Program the maps once from a JSON file of Services (see the README for the format).
    Apply(ApplyArgs),
    /// Print the frontends and backends in the pinned maps as JSON.
    List {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Detach every program and remove every pin of this node.
    Cleanup {
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Flags every mode shares.
#[derive(Debug, Args, Clone)]
struct NodeArgs {
    /// This node's name, as in the Node object and EndpointSlice nodeName.
    #[arg(long, env = "SKEIN_NODE_NAME")]
    node_name: Option<String>,
    /// Where programs and maps are pinned [default: /sys/fs/bpf/skein/<node-name>].
    #[arg(long)]
    pin_dir: Option<PathBuf>,
}

impl NodeArgs {
    fn pin_dir(&self) -> Result<PathBuf> {
        match (&self.pin_dir, &self.node_name) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(n)) => Ok(PathBuf::from("/sys/fs/bpf/skein").join(n)),
            (None, None) => anyhow::bail!("--pin-dir or --node-name is required"),
        }
    }
    fn node_name(&self) -> Result<String> {
        self.node_name.clone().context("--node-name is required")
    }
}

/// Flags of the datapath (daemon and apply).
#[derive(Debug, Args, Clone)]
struct DatapathArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The pods' cgroup v2 subtree the socket hooks attach to (never the root cgroup).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// The uplink interface for NodePort/externalIPs/LoadBalancer at tc ("" = none).
    #[arg(long, default_value = "eth0")]
    uplink: String,
    /// This node's address (NodePort frontends, SNAT) [default: the uplink's first IPv4].
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// Route pod-to-pod traffic between nodes in eBPF, past the pods' bridge and the
    /// node's forwarding (needs --cluster-cidr; off = the kernel path).
    #[arg(long, requires = "cluster_cidr")]
    pod_routing: bool,
    /// The pods' bridge for --pod-routing.
    #[arg(long, default_value = "cni0")]
    pod_bridge: String,
    /// The cluster's pod network for --pod-routing (flannel's Network), e.g. 10.244.0.0/16.
    #[arg(long)]
    cluster_cidr: Option<ipnetwork::Ipv4Network>,
}

impl DatapathArgs {
    fn install_config(&self) -> Result<(InstallConfig, NodeContext)> {
        let uplink = (!self.uplink.is_empty()).then(|| self.uplink.clone());
        let node_ip = match (self.node_ip, &uplink) {
            (Some(ip), _) => Some(ip),
            (None, Some(u)) => Some(uplink_ipv4(u)?),
            (None, None) => None,
        };
        Ok((
            InstallConfig {
                pin_dir: self.node.pin_dir()?,
                cgroup: self.cgroup_root.clone(),
                uplink,
                node_ip,
                pod_routing: match (self.pod_routing, self.cluster_cidr) {
                    (true, Some(cluster)) => Some(datapath::PodRouting {
                        bridge: self.pod_bridge.clone(),
                        cluster: (cluster.ip(), cluster.prefix()),
                    }),
                    _ => None,
                },
            },
            NodeContext {
                node_name: self.node.node_name()?,
                node_ip,
            },
        ))
    }
}

#[derive(Debug, Args)]
struct ApplyArgs {
    #[command(flatten)]
    datapath: DatapathArgs,
    /// The JSON file with every Service of the cluster ("-" = stdin).
    #[arg(long)]
    from_file: PathBuf,
}

#[derive(Debug, Args)]
struct DaemonArgs {
    #[command(flatten)]
    datapath: DatapathArgs,
    /// kubeconfig file [default: $KUBECONFIG, ~/.kube/config, in-cluster].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// API server URL (overrides the kubeconfig's server).
    #[arg(long)]
    api_server: Option<String>,
    /// Prometheus metrics on this port (0 = off).
    #[arg(long, default_value_t = 10249)]
    metrics_port: u16,
    /// Detach and remove everything on shutdown (SIGTERM/SIGINT).
    #[arg(long)]
    cleanup: bool,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
}

fn uplink_ipv4(ifname: &str) -> Result<Ipv4Addr> {
    for ifa in nix::ifaddrs::getifaddrs().context("list interface addresses")? {
        if ifa.interface_name != ifname {
            continue;
        }
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    anyhow::bail!("uplink {ifname} has no IPv4 address (give --node-ip, or --uplink \"\")")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let json = cli.command.is_none() && cli.daemon.log_json;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        sub.json().init();
    } else {
        sub.init();
    }
    match cli.command {
        Some(Command::Apply(a)) => apply(a),
        Some(Command::List { node }) => list(&node),
        Some(Command::Cleanup { node }) => {
            let dir = node.pin_dir()?;
            datapath::cleanup(&dir).with_context(|| format!("clean up {}", dir.display()))
        }
        None => daemon(cli.daemon),
    }
}

fn apply(a: ApplyArgs) -> Result<()> {
    let text = if a.from_file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("read services from stdin")?
    } else {
        std::fs::read_to_string(&a.from_file)
            .with_context(|| format!("read {}", a.from_file.display()))?
    };
    let set = ServiceSet::from_json(&text).with_context(|| format!("{}", a.from_file.display()))?;
    let (cfg, node) = a.datapath.install_config()?;
    let s = skein_proxy::apply::apply_set(&cfg, node, &set).context("apply services")?;
    println!(
        "{}",
        serde_json::json!({
            "attached": s.install.attached,
            "kept": s.install.kept,
            "replaced": s.install.replaced,
            "writes": s.writes,
            "services": s.services,
            "backends": s.backends,
            "write_micros": s.write_micros,
            "pod_ports": s.pod_ports,
        })
    );
    Ok(())
}

fn list(node: &NodeArgs) -> Result<()> {
    let dir = node.pin_dir()?;
    let maps = BpfMaps::open(&dir).with_context(|| format!("open maps in {}", dir.display()))?;
    let st = maps.read_state()?;
    let mut frontends = Vec::new();
    for (k, v) in &st.svc {
        let backends: Vec<String> = (0..u32::from(v.count))
            .filter_map(|slot| {
                st.be
                    .get(&skein_proxy::maps::BeKey {
                        group: v.group,
                        slot,
                    })
                    .map(|b| format!("{}:{}", b.ip(), b.port()))
            })
            .collect();
        frontends.push(serde_json::json!({
            "frontend": format!("{}:{}", k.ip(), k.port()),
            "protocol": if k.proto == skein_proxy::maps::PROTO_TCP { "TCP" } else { "UDP" },
            "scope": if k.scope == skein_proxy::maps::SCOPE_CLUSTER { "cluster" } else { "external" },
            "group": st.names.get(&v.group).map(|n| n.as_str()),
            "flags": v.flags,
            "backends": backends,
            "connections": maps.connections(v.group).unwrap_or(0),
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "pin_dir": dir,
            "attached": datapath::installed(&dir),
            "frontends": frontends,
            "conntrack_entries": maps.conntrack_entries(),
        }))?
    );
    Ok(())
}

fn daemon(d: DaemonArgs) -> Result<()> {
    let (install, node) = d.datapath.install_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    rt.block_on(async {
        let client = kube_client(&d).await?;
        let cfg = skein_proxy::daemon::DaemonConfig {
            install,
            node,
            metrics_port: d.metrics_port,
            cleanup: d.cleanup,
        };
        skein_proxy::daemon::run(client, cfg)
            .await
            .context("skein-proxy")
    })
}

async fn kube_client(d: &DaemonArgs) -> Result<kube::Client> {
    let mut config = match (&d.kubeconfig, &d.api_server) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("use kubeconfig {}", path.display()))?
        }
        (None, Some(url)) => {
            kube::Config::new(url.parse().with_context(|| format!("--api-server {url}"))?)
        }
        (None, None) => kube::Config::infer()
            .await
            .context("find a kubeconfig (give --kubeconfig or --api-server)")?,
    };
    if let Some(url) = &d.api_server {
        config.cluster_url = url.parse().with_context(|| format!("--api-server {url}"))?;
    }
    kube::Client::try_from(config).context("build API client")
}
