//! Prometheus text metrics: Services and backends programmed, map sync latency (event
//! received -> map writes done), map writes, and per-service new-connection counts read
//! from the `skein_conns` BPF map at scrape time.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::datapath::BpfMaps;

/// Upper bounds (seconds) of the sync latency histogram buckets.
pub const SYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The daemon's counters, shared with the HTTP handler.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    services: usize,
    backends: usize,
    writes: u64,
    syncs: u64,
    sync_errors: u64,
    sync_sum: f64,
    buckets: Vec<u64>,
}

impl Metrics {
    /// Records one sync: how long it took, how many writes, whether it failed.
    pub fn record_sync(&self, took: Duration, writes: usize, ok: bool) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.buckets.is_empty() {
            m.buckets = vec![0; SYNC_BUCKETS.len()];
        }
        let s = took.as_secs_f64();
        for (i, b) in SYNC_BUCKETS.iter().enumerate() {
            if s <= *b {
                m.buckets[i] += 1;
            }
        }
        m.syncs += 1;
        m.sync_sum += s;
        m.writes += writes as u64;
        if !ok {
            m.sync_errors += 1;
        }
    }

    /// Sets the gauges after a sync.
    pub fn set_state(&self, services: usize, backends: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.services = services;
        m.backends = backends;
    }

    /// The Prometheus text exposition; `maps` adds per-service connection counts.
    pub fn render(&self, maps: Option<&BpfMaps>) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP skein_proxy_services Services with map entries on this node."
        );
        let _ = writeln!(out, "# TYPE skein_proxy_services gauge");
        let _ = writeln!(out, "skein_proxy_services {}", m.services);
        let _ = writeln!(
            out,
            "# HELP skein_proxy_backends Backend slots in the maps."
        );
        let _ = writeln!(out, "# TYPE skein_proxy_backends gauge");
        let _ = writeln!(out, "skein_proxy_backends {}", m.backends);
        let _ = writeln!(
            out,
            "# HELP skein_proxy_map_writes_total BPF map writes made."
        );
        let _ = writeln!(out, "# TYPE skein_proxy_map_writes_total counter");
        let _ = writeln!(out, "skein_proxy_map_writes_total {}", m.writes);
        let _ = writeln!(
            out,
            "# HELP skein_proxy_sync_errors_total Syncs that failed."
        );
        let _ = writeln!(out, "# TYPE skein_proxy_sync_errors_total counter");
        let _ = writeln!(out, "skein_proxy_sync_errors_total {}", m.sync_errors);
        let _ = writeln!(
            out,
            "# HELP skein_proxy_sync_duration_seconds From a watch event to its map writes done."
        );
        let _ = writeln!(out, "# TYPE skein_proxy_sync_duration_seconds histogram");
        for (i, b) in SYNC_BUCKETS.iter().enumerate() {
            let n = m.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "skein_proxy_sync_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "skein_proxy_sync_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.syncs
        );
        let _ = writeln!(out, "skein_proxy_sync_duration_seconds_sum {}", m.sync_sum);
        let _ = writeln!(out, "skein_proxy_sync_duration_seconds_count {}", m.syncs);
        if let Some(maps) = maps {
            let _ = writeln!(
                out,
                "# HELP skein_proxy_service_connections_total New connections balanced, per service port (from BPF)."
            );
            let _ = writeln!(out, "# TYPE skein_proxy_service_connections_total counter");
            // Group names come from the pinned names map at scrape time, so syncs never
            // pay for them.
            for (id, name) in maps.group_names() {
                let n = maps.connections(id).unwrap_or(0);
                let name = name.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "skein_proxy_service_connections_total{{service=\"{name}\"}} {n}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.record_sync(Duration::from_micros(700), 5, true);
        m.record_sync(Duration::from_millis(30), 2, false);
        m.set_state(3, 7);
        let t = m.render(None);
        assert!(t.contains("skein_proxy_services 3\n"), "{t}");
        assert!(t.contains("skein_proxy_backends 7\n"));
        assert!(t.contains("skein_proxy_map_writes_total 7\n"));
        assert!(t.contains("skein_proxy_sync_errors_total 1\n"));
        assert!(
            t.contains("skein_proxy_sync_duration_seconds_bucket{le=\"0.001\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("skein_proxy_sync_duration_seconds_bucket{le=\"0.05\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("skein_proxy_sync_duration_seconds_count 2\n"));
    }
}
