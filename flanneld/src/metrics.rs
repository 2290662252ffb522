//! `/healthz` and `/metrics` (Prometheus text) on `--healthz-port`, off by default.
//!
//! A deliberately tiny HTTP/1.0 responder on tokio: two GET paths do not justify a web
//! framework in a daemon that must start fast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Error;

/// Counters and gauges the daemon updates.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Leases known (all nodes, this one included).
    pub leases: AtomicU64,
    /// Routes to remote subnets present after the last sync.
    pub routes: AtomicU64,
    /// Syncs done.
    pub syncs: AtomicU64,
    /// Syncs that failed.
    pub sync_errors: AtomicU64,
    /// Duration of the last sync, in nanoseconds.
    pub last_sync_ns: AtomicU64,
    /// Sum of sync durations, in nanoseconds.
    pub sync_ns_sum: AtomicU64,
    /// Lease renewals done.
    pub renewals: AtomicU64,
    /// 1 while the etcd watch is up.
    pub etcd_up: AtomicU64,
    /// 1 once this node holds a lease.
    pub has_lease: AtomicU64,
}

impl Metrics {
    /// Records one sync.
    pub fn sync_done(&self, took: std::time::Duration, ok: bool, routes: usize) {
        let ns = took.as_nanos() as u64;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.sync_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.last_sync_ns.store(ns, Ordering::Relaxed);
        self.sync_ns_sum.fetch_add(ns, Ordering::Relaxed);
        self.routes.store(routes as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |ns: u64| ns as f64 / 1e9;
        format!(
            "# HELP flannel_leases Subnet leases known in etcd.\n# TYPE flannel_leases gauge\nflannel_leases {}\n\
             # HELP flannel_routes_programmed Routes to remote subnets in the kernel after the last sync.\n# TYPE flannel_routes_programmed gauge\nflannel_routes_programmed {}\n\
             # HELP flannel_syncs_total Kernel syncs.\n# TYPE flannel_syncs_total counter\nflannel_syncs_total {}\n\
             # HELP flannel_sync_errors_total Kernel syncs that failed.\n# TYPE flannel_sync_errors_total counter\nflannel_sync_errors_total {}\n\
             # HELP flannel_sync_latency_seconds Duration of the last kernel sync.\n# TYPE flannel_sync_latency_seconds gauge\nflannel_sync_latency_seconds {}\n\
             # HELP flannel_sync_seconds_total Time spent in kernel syncs.\n# TYPE flannel_sync_seconds_total counter\nflannel_sync_seconds_total {}\n\
             # HELP flannel_lease_renewals_total Lease renewals.\n# TYPE flannel_lease_renewals_total counter\nflannel_lease_renewals_total {}\n\
             # HELP flannel_etcd_up Whether the etcd watch is up.\n# TYPE flannel_etcd_up gauge\nflannel_etcd_up {}\n\
             # HELP flannel_has_lease Whether this node holds a subnet lease.\n# TYPE flannel_has_lease gauge\nflannel_has_lease {}\n",
            g(&self.leases),
            g(&self.routes),
            g(&self.syncs),
            g(&self.sync_errors),
            secs(g(&self.last_sync_ns)),
            secs(g(&self.sync_ns_sum)),
            g(&self.renewals),
            g(&self.etcd_up),
            g(&self.has_lease),
        )
    }
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
        what: format!("bind healthz/metrics on {addr}"),
        source,
    })?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the whole request head (clients may send it in pieces).
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                        Ok(Ok(0)) => break,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let n = buf.len();
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let (status, ctype, body) = match path {
                    "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                    _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(())
}
