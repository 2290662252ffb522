//! skein-dns: flags → config → the server (see lib.rs for the flow).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use skein_dns::{ClusterHandler, SharedZone, build_zone, objects_file, serve, watch};
use tokio::signal::unix::{SignalKind, signal};

/// Cluster DNS for skein: serves `<svc>.<ns>.svc.<domain>` (A/AAAA, SRV, CNAME) from
/// the Kubernetes API's Services and EndpointSlices. Names outside the domain get
/// NXDOMAIN unless --upstream is given; the machine's resolv.conf is never used.
#[derive(Debug, Parser)]
#[command(name = "skein-dns", version)]
struct Args {
    /// Kubeconfig to reach the API server (default: in-cluster config, then
    /// $KUBECONFIG / ~/.kube/config).
    #[arg(long, value_name = "PATH", conflicts_with = "from_file")]
    kubeconfig: Option<PathBuf>,
    /// API server URL (overrides the kubeconfig's server), e.g. http://10.0.0.1:6443.
    #[arg(long, value_name = "URL", conflicts_with = "from_file")]
    master: Option<String>,
    /// Serve from a file instead of the API: a List (JSON or YAML) of v1 Services and
    /// discovery.k8s.io/v1 EndpointSlices, as `kubectl get svc,endpointslices -A -o json`
    /// prints. SIGHUP re-reads it.
    #[arg(long, value_name = "PATH")]
    from_file: Option<PathBuf>,
    /// Address to listen on, UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
    /// Resolver for names outside the domain, ADDR:PORT (an IP alone means port 53).
    /// Without it those names get NXDOMAIN.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_upstream)]
    upstream: Option<SocketAddr>,
    /// TTL of the answers, in seconds (0 to 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    ttl: u32,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// The log filter when RUST_LOG is not set.
const DEFAULT_LOG: &str = "info,hickory_server=warn";

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not ADDR:PORT or an IP address"))
}

fn check_domain(domain: &str) -> anyhow::Result<()> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        bail!("--domain {domain:?} is not a DNS name (labels of a-z, 0-9, '-')");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // hickory logs every query at info: only when RUST_LOG asks for it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    check_domain(&args.domain)?;
    if args.upstream == Some(args.listen) {
        bail!(
            "--upstream {} is this server's own --listen address",
            args.listen
        );
    }

    let zone = SharedZone::default();
    // Load the source before serving, so a bad file fails at start, not at the first query.
    let source = match &args.from_file {
        Some(path) => {
            load_file(path, &args.domain, &zone)?;
            None
        }
        None => Some(kube_client(&args).await?),
    };
    let handler = ClusterHandler::new(zone.clone(), &args.domain, args.ttl, args.upstream);
    let mut server = serve::start(args.listen, handler).await?;
    tracing::info!(
        listen = %args.listen,
        domain = %args.domain,
        upstream = ?args.upstream,
        ttl = args.ttl,
        source = if source.is_some() { "kubernetes" } else { "file" },
        "skein-dns serving"
    );

    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    let watch = async {
        match source {
            Some(client) => watch::run(client, args.domain.clone(), zone.clone()).await,
            None => std::future::pending().await,
        }
    };
    let mut watch = std::pin::pin!(watch);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                if let Some(path) = &args.from_file
                    && let Err(error) = load_file(path, &args.domain, &zone)
                {
                    tracing::error!(error = format!("{error:#}"), "reload failed; keeping the previous zone");
                }
            }
            r = &mut watch => {
                r.context("kubernetes watch")?;
                break;
            }
            r = server.block_until_done() => {
                r.context("dns server stopped")?;
                bail!("dns server stopped");
            }
        }
    }
    tracing::info!("shutting down");
    server.shutdown_gracefully().await.context("shut down")?;
    Ok(())
}

fn load_file(path: &Path, domain: &str, zone: &SharedZone) -> anyhow::Result<()> {
    let objects = objects_file::read(path)?;
    let built = build_zone(domain, &objects.services, &objects.slices);
    for problem in &built.skipped {
        tracing::warn!(problem, "skipped");
    }
    tracing::info!(
        file = %path.display(),
        services = objects.services.len(),
        endpointslices = objects.slices.len(),
        names = built.zone.len(),
        "zone loaded"
    );
    zone.set(built.zone);
    Ok(())
}

async fn kube_client(args: &Args) -> anyhow::Result<kube::Client> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("use kubeconfig {}", path.display()))?
        }
        None => match &args.master {
            Some(url) => kube::Config::new(
                url.parse()
                    .with_context(|| format!("--master {url:?} is not a URL"))?,
            ),
            None => kube::Config::infer()
                .await
                .context("no --kubeconfig or --master, and no in-cluster or default kubeconfig")?,
        },
    };
    if let (Some(url), Some(_)) = (&args.master, &args.kubeconfig) {
        config.cluster_url = url
            .parse()
            .with_context(|| format!("--master {url:?} is not a URL"))?;
    }
    kube::Client::try_from(config).context("build the kubernetes client")
}
