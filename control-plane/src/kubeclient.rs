//! How control-plane clients reach the API server: a kubeconfig, or a plain URL.

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Client connection flags shared by the scheduler and the controller manager.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Path of a kubeconfig file (its current context is used).
    #[arg(long, env = "KUBECONFIG", conflicts_with = "master")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL (e.g. http://198.51.100.2:6443), when no kubeconfig is given.
    #[arg(long)]
    pub master: Option<String>,
}

impl ClientArgs {
    /// Builds the client; fails naming the file or URL that is wrong.
    pub async fn client(&self) -> anyhow::Result<Client> {
        use anyhow::Context;
        let config = match (&self.kubeconfig, &self.master) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("use kubeconfig {}", path.display()))?
            }
            (None, Some(url)) => {
                let uri = url
                    .parse()
                    .with_context(|| format!("--master {url:?} is not a URL"))?;
                kube::Config::new(uri)
            }
            (None, None) => anyhow::bail!("give --kubeconfig or --master (the API server's URL)"),
        };
        Client::try_from(config).context("build the API client")
    }
}

/// Sets up logging for a control-plane daemon: `RUST_LOG` filters (default info),
/// `--log-json` style output when `json` is true.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
