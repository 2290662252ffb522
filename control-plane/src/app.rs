//! The server's shared state and its configuration.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use crate::auth::Tokens;
use crate::registry::RESOURCES;
use crate::services::Ranges;
use crate::store::Store;
use crate::watch::Hub;

/// The server's configuration (the flags of `skein-apiserver`).
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd client URLs.
    pub etcd_servers: Vec<String>,
    /// Key prefix in etcd.
    pub etcd_prefix: String,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// TLS certificate chain (PEM); with the key, the server speaks HTTPS.
    pub tls_cert_file: Option<PathBuf>,
    /// TLS key (PEM).
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) whose client certificates authenticate their CommonName.
    pub client_ca_file: Option<PathBuf>,
    /// Static bearer tokens (CSV: token,user,uid,"group1,group2").
    pub token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as `system:anonymous`.
    pub anonymous_auth: bool,
    /// ClusterIP range.
    pub service_cluster_ip_range: Ipv4Network,
    /// NodePort range (inclusive).
    pub service_node_port_range: (u16, u16),
    /// Longest a watch may last, in seconds (a client's timeoutSeconds is capped here).
    pub max_watch_seconds: u64,
    /// Seconds between etcd compactions (0: never); each compacts to the revision seen
    /// at the previous one, as kube-apiserver does.
    pub etcd_compaction_interval: u64,
}

/// Shared state of the running server.
#[derive(Debug)]
pub struct App {
    /// Configuration.
    pub config: Config,
    /// etcd.
    pub store: Store,
    /// One watch hub per resource plural.
    pub hubs: HashMap<&'static str, Arc<Hub>>,
    /// Service allocation ranges.
    pub ranges: Ranges,
    /// Bearer tokens.
    pub tokens: Tokens,
}

impl App {
    /// Builds the state and starts one etcd watch per resource.
    pub fn new(config: Config, store: Store, tokens: Tokens) -> App {
        let mut hubs = HashMap::new();
        for r in RESOURCES {
            let prefix = format!("{}/", r.collection(&store.prefix));
            hubs.insert(r.plural, Hub::start(r.plural, store.clone(), prefix));
        }
        let ranges = Ranges::new(
            config.service_cluster_ip_range,
            config.service_node_port_range,
        );
        App {
            config,
            store,
            hubs,
            ranges,
            tokens,
        }
    }

    /// The hub of a resource.
    pub fn hub(&self, plural: &str) -> &Arc<Hub> {
        &self.hubs[plural]
    }
}
