//! `flanneld`: flannel's flags (each also read from `FLANNELD_<FLAG>`, like flannel),
//! mapped onto [`skein_flanneld::daemon::Options`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use skein_flanneld::daemon::{self, Options};
use skein_flanneld::registry::EtcdSettings;

#[derive(Debug, Parser)]
#[command(
    name = "flanneld",
    version,
    about = "flannel-compatible flanneld: subnet leases in etcd, VXLAN or host-gw routes"
)]
struct Args {
    /// Comma-separated etcd client URLs.
    #[arg(
        long,
        env = "FLANNELD_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:4001,http://127.0.0.1:2379"
    )]
    etcd_endpoints: String,
    /// etcd key prefix holding `config` and `subnets/`.
    #[arg(
        long,
        env = "FLANNELD_ETCD_PREFIX",
        default_value = "/coreos.com/network"
    )]
    etcd_prefix: String,
    /// CA bundle that signs etcd's certificate.
    #[arg(long, env = "FLANNELD_ETCD_CAFILE")]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE")]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE")]
    etcd_keyfile: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, env = "FLANNELD_ETCD_USERNAME")]
    etcd_username: Option<String>,
    /// etcd password.
    #[arg(long, env = "FLANNELD_ETCD_PASSWORD")]
    etcd_password: Option<String>,
    /// Interface (name or IPv4 address) for node-to-node traffic; default: the one of
    /// the default route. Given more than once, the first that exists is used.
    #[arg(long, env = "FLANNELD_IFACE")]
    iface: Vec<String>,
    /// Regular expression matched against interface addresses, then names, when no
    /// `--iface` is given or none exists; given more than once, the first that matches.
    #[arg(long, env = "FLANNELD_IFACE_REGEX", value_parser = parse_regex)]
    iface_regex: Vec<regex::Regex>,
    /// Address announced to other nodes (default: the interface's address).
    #[arg(long, env = "FLANNELD_PUBLIC_IP")]
    public_ip: Option<Ipv4Addr>,
    /// Where to write FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ.
    #[arg(
        long,
        env = "FLANNELD_SUBNET_FILE",
        default_value = "/run/flannel/subnet.env"
    )]
    subnet_file: PathBuf,
    /// Masquerade traffic from pods to outside the cluster network.
    #[arg(long, env = "FLANNELD_IP_MASQ", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", action = clap::ArgAction::Set)]
    ip_masq: bool,
    /// Renew the subnet lease this many minutes before it expires.
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN", default_value_t = 60)]
    subnet_lease_renew_margin: u64,
    /// TTL in seconds of the etcd lease behind a subnet key (flannel: 24 h).
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_TTL", default_value_t = 86400)]
    subnet_lease_ttl: u64,
    /// Address for /healthz and /metrics.
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "0.0.0.0")]
    healthz_ip: IpAddr,
    /// Port for /healthz and /metrics; 0 turns them off.
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    healthz_port: u16,
    /// Seconds between full kernel resyncs (repairs routes removed by hand).
    #[arg(long, env = "FLANNELD_RESYNC_INTERVAL", default_value_t = 30)]
    resync_interval: u64,
    /// Log format: text or json.
    #[arg(long, env = "FLANNELD_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("not a regular expression: {e}"))
}

/// Flags that take no value (Go's bool flags never consume the next argument).
const BOOL_FLAGS: &[&str] = &["ip-masq", "help", "version", "h"];

/// Accepts flannel's Go-style flags as well: `-iface eth0`, `-ip-masq`, `-etcd-prefix=/x`
/// become `--iface eth0`, ... A value after a flag is left as it is (even one starting
/// with `-`), and nothing after a bare `--` is touched, as with Go's flag package.
fn go_style(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut value_next = false;
    let mut done = false;
    for (i, a) in args.into_iter().enumerate() {
        let text = a.to_string_lossy().into_owned();
        if i == 0 || done || value_next {
            value_next = false;
            out.push(a);
            continue;
        }
        if text == "--" {
            done = true;
            out.push(a);
            continue;
        }
        let body = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-'))
            .filter(|b| b.starts_with(|c: char| c.is_ascii_alphabetic()));
        match body {
            Some(b) => {
                let name = b.split('=').next().unwrap_or(b);
                value_next = !b.contains('=') && !BOOL_FLAGS.contains(&name);
                if name.len() > 1 && !text.starts_with("--") {
                    out.push(format!("-{text}").into());
                } else {
                    out.push(a);
                }
            }
            None => out.push(a),
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(go_style(std::env::args_os()));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format.as_str() {
        "json" => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        "text" => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        other => bail!("--log-format {other:?}: use text or json"),
    }
    match (&args.etcd_certfile, &args.etcd_keyfile) {
        (Some(_), None) | (None, Some(_)) => {
            bail!("--etcd-certfile and --etcd-keyfile must be given together")
        }
        _ => {}
    }
    for path in [&args.etcd_cafile, &args.etcd_certfile, &args.etcd_keyfile]
        .into_iter()
        .flatten()
    {
        std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    }
    if args.subnet_lease_ttl < 2 {
        bail!("--subnet-lease-ttl must be at least 2 seconds");
    }
    let endpoints: Vec<String> = args
        .etcd_endpoints
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        bail!("--etcd-endpoints is empty");
    }
    let opts = Options {
        etcd: EtcdSettings {
            endpoints,
            ca_file: args.etcd_cafile,
            cert_file: args.etcd_certfile,
            key_file: args.etcd_keyfile,
            username: args.etcd_username,
            password: args.etcd_password,
        },
        prefix: args.etcd_prefix,
        iface: args.iface,
        iface_regex: args.iface_regex,
        public_ip: args.public_ip,
        subnet_file: args.subnet_file,
        ip_masq: args.ip_masq,
        renew_margin: Duration::from_secs(args.subnet_lease_renew_margin * 60),
        lease_ttl: Duration::from_secs(args.subnet_lease_ttl),
        healthz: (args.healthz_port != 0)
            .then(|| SocketAddr::new(args.healthz_ip, args.healthz_port)),
        config_poll: Duration::from_secs(1),
        resync: Duration::from_secs(args.resync_interval.max(1)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                std::future::pending::<()>().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: exiting"),
                _ = int.recv() => tracing::info!("SIGINT: exiting"),
            }
        };
        daemon::run(opts, shutdown).await.context("flanneld")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(args: &[&str]) -> Vec<String> {
        go_style(args.iter().map(std::ffi::OsString::from))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        assert_eq!(
            conv(&[
                "flanneld",
                "-iface",
                "eth0",
                "-ip-masq",
                "-etcd-prefix=/x",
                "--public-ip",
                "1.2.3.4"
            ]),
            [
                "flanneld",
                "--iface",
                "eth0",
                "--ip-masq",
                "--etcd-prefix=/x",
                "--public-ip",
                "1.2.3.4"
            ]
        );
        // A value that starts with '-' stays a value; `-h` and what follows `--` stay.
        assert_eq!(
            conv(&[
                "flanneld",
                "-etcd-password",
                "-secret",
                "-h",
                "--",
                "-iface"
            ]),
            [
                "flanneld",
                "--etcd-password",
                "-secret",
                "-h",
                "--",
                "-iface"
            ]
        );
        let args = Args::try_parse_from(go_style(
            [
                "flanneld",
                "-iface",
                "eth1",
                "-ip-masq",
                "-subnet-lease-renew-margin=30",
            ]
            .map(std::ffi::OsString::from),
        ))
        .unwrap();
        assert_eq!(args.iface, ["eth1"]);
        assert!(args.ip_masq);
        assert_eq!(args.subnet_lease_renew_margin, 30);
        // Unknown flags are still refused, whichever style.
        assert!(
            Args::try_parse_from(go_style(
                ["flanneld", "-kube-subnet-mgr"].map(std::ffi::OsString::from)
            ))
            .is_err()
        );
    }
}
