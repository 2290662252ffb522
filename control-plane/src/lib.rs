//! skein's Kubernetes-compatible control plane: the API server (skein-apiserver), the
//! scheduler ([`scheduler`], skein-scheduler) and the controllers ([`controllers`],
//! skein-controller-manager). The scheduler and the controllers are kube-rs clients of
//! the API, so they would run unchanged against a real kube-apiserver.
//!
//! The API server:
//!
//! ```text
//! kubectl / kube-rs ──HTTP(S)──> server (auth, routing by path)
//!                               ├─ discovery, /openapi/v3, /version, /healthz
//!                               └─ resource requests ──> registry (one entry per resource)
//!                                    ├─ objects: admit → defaults → services (ClusterIP,
//!                                    │  NodePort) → etcd txn  (/registry/<res>/<ns>/<name>)
//!                                    ├─ list: selectors, RV semantics, limit/continue, Table
//!                                    └─ watch: one etcd watch per resource → Hub →
//!                                       broadcast to every client (history, bookmarks, 410)
//!                               pods/log, pods/exec ──> the pod's node agent (logs, exec:
//!                                    a WebSocket upgrade spliced through)
//! lifecycle: cascading deletion by ownerReferences, namespace termination, bootstrap
//! ```

pub mod app;
pub mod apply;
pub mod auth;
pub mod client_cert;
pub mod controllers;
pub mod discovery;
pub mod error;
pub mod exec;
pub mod kubeclient;
pub mod lifecycle;
pub mod list;
pub mod logs;
pub mod objects;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod request;
pub mod scheduler;
pub mod selectors;
pub mod server;
pub mod services;
pub mod store;
pub mod table;
pub mod tls;
pub mod validate;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

pub use app::{App, Config};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// etcd unreachable or failing.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
}

/// Connects to etcd, bootstraps, and serves until the process ends.
pub async fn run(config: Config) -> Result<(), StartError> {
    let tls = tls::server_config(
        config.tls_cert_file.as_deref(),
        config.tls_private_key_file.as_deref(),
        config.client_ca_file.as_deref(),
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let tokens = match &config.token_auth_file {
        Some(p) => auth::Tokens::load(p).map_err(|e| StartError::Config(e.to_string()))?,
        None => auth::Tokens::default(),
    };
    if !config.anonymous_auth && tokens.is_empty() {
        tracing::warn!("--anonymous-auth=false and no tokens: every request will get 401");
    }
    let store = store::Store::connect(&config.etcd_servers, &config.etcd_prefix)
        .await
        .map_err(|e| StartError::Etcd(e.to_string()))?;
    let addr = SocketAddr::new(config.bind_address, config.port);
    let app = Arc::new(App::new(config, store, tokens));
    let mut last = None;
    for _ in 0..50 {
        match lifecycle::bootstrap(&app).await {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e.to_string());
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    if let Some(e) = last {
        return Err(StartError::Etcd(format!("bootstrap: {e}")));
    }
    if app.config.etcd_compaction_interval > 0 {
        tokio::spawn(compactor(app.clone()));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let served = match tls {
        Some(tls) => {
            tracing::info!(%addr, "serving HTTPS");
            let listener = tls::TlsListener::new(listener, tls)
                .map_err(|source| StartError::Listen { addr, source })?;
            server::serve_tls_on(app, listener).await
        }
        None => {
            tracing::info!(%addr, "serving plain HTTP");
            server::serve_on(app, listener).await
        }
    };
    served.map_err(|source| StartError::Listen { addr, source })
}

/// Compacts etcd every interval to the revision seen at the previous tick, so history
/// stays bounded while watchers have one interval to catch up.
async fn compactor(app: Arc<App>) {
    let every = std::time::Duration::from_secs(app.config.etcd_compaction_interval);
    let mut previous = 0;
    loop {
        tokio::time::sleep(every).await;
        if previous > 0 {
            match app.store.compact(previous).await {
                Ok(()) => tracing::info!(revision = previous, "compacted etcd"),
                Err(e) => tracing::debug!(error = %e, "compaction skipped"),
            }
        }
        if let Ok(rev) = app.store.revision().await {
            previous = rev;
        }
    }
}
