//! The daemon: watch Services and EndpointSlices, keep the maps in step.
//!
//! ```text
//! install datapath (keeps pinned links) -> open maps -> Reconciler seeded from the pins
//! watcher(Service) ─┐
//!                   ├─> store ─ both listed? ─> full resync (removes stale entries)
//! watcher(Slice)  ──┘          afterwards   ─> update/delete of the one Service touched
//! SIGTERM/SIGINT -> stop; with --cleanup, detach and unpin everything
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service as KService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::signal::unix::{SignalKind, signal};

use crate::Error;
use crate::datapath::{self, BpfMaps, InstallConfig};
use crate::desired::{NodeContext, local_endpoint_count};
use crate::health::HealthServers;
use crate::kube_source::{convert, service_key, slice_service_key};
use crate::metrics::Metrics;
use crate::model::Service;
use crate::reconcile::{MapWriter, Op, Reconciler};

/// What the daemon needs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where and what to attach.
    pub install: InstallConfig,
    /// This node.
    pub node: NodeContext,
    /// Prometheus metrics port (0 = off).
    pub metrics_port: u16,
    /// Remove everything on shutdown.
    pub cleanup: bool,
}

enum Change {
    Svc(Box<Event<KService>>),
    Slice(Box<Event<EndpointSlice>>),
}

#[derive(Default)]
struct Store {
    services: BTreeMap<String, KService>,
    slices: HashMap<String, BTreeMap<String, EndpointSlice>>,
    slice_owner: HashMap<String, String>,
    svc_buf: Option<BTreeMap<String, KService>>,
    slice_buf: Option<Vec<EndpointSlice>>,
    svc_listed: bool,
    slices_listed: bool,
}

fn slice_key(s: &EndpointSlice) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or("")
    )
}

impl Store {
    fn put_slice(&mut self, s: EndpointSlice) -> Vec<String> {
        let key = slice_key(&s);
        let mut touched = self.remove_slice(&key);
        if let Some(owner) = slice_service_key(&s) {
            self.slices
                .entry(owner.clone())
                .or_default()
                .insert(key.clone(), s);
            self.slice_owner.insert(key, owner.clone());
            touched.push(owner);
        }
        touched
    }

    fn remove_slice(&mut self, key: &str) -> Vec<String> {
        let Some(owner) = self.slice_owner.remove(key) else {
            return Vec::new();
        };
        if let Some(m) = self.slices.get_mut(&owner) {
            m.remove(key);
            if m.is_empty() {
                self.slices.remove(&owner);
            }
        }
        vec![owner]
    }

    fn model(&self, key: &str) -> Option<Service> {
        let svc = self.services.get(key)?;
        convert(
            svc,
            self.slices.get(key).into_iter().flat_map(|m| m.values()),
        )
    }
}

struct Engine {
    node: NodeContext,
    maps: BpfMaps,
    rec: Reconciler,
    metrics: Arc<Metrics>,
    health: HealthServers,
    /// A write failed: the maps may differ from what the reconciler believes.
    dirty: bool,
}

/// How often a failed write is repaired by a full resync.
const REPAIR_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);
/// How often pod routing looks for new pods' veths (a pod not seen yet takes the
/// bridge path meanwhile).
const POD_PORTS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

impl Engine {
    fn write(&mut self, ops: &[Op], started: Instant) {
        let res = self.maps.write_all(ops);
        self.metrics
            .record_sync(started.elapsed(), ops.len(), res.is_ok());
        if let Err(e) = res {
            tracing::error!(error = %e, "map write failed; a full resync follows");
            self.dirty = true;
        }
        let groups = crate::reconcile::groups_with_backend_changes(ops);
        if !groups.is_empty() {
            let live = self.rec.live_backends(&groups);
            match self.maps.purge_udp_flows(&groups, &live) {
                Ok(0) => {}
                Ok(n) => tracing::info!(flows = n, "UDP flows to departed backends cleared"),
                Err(e) => tracing::warn!(error = %e, "clear UDP flows to departed backends"),
            }
        }
        let (s, b) = self.rec.counts();
        self.metrics.set_state(s, b);
    }

    fn health_for(&mut self, key: &str, model: Option<&Service>) {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let port = model.and_then(|m| {
            let p = m.health_check_node_port?;
            m.external_traffic_policy_local
                .then(|| (p, local_endpoint_count(m, &self.node)))
        });
        self.health.set(ns, name, port);
    }

    fn sync_one(&mut self, store: &Store, key: &str, started: Instant) {
        let model = store.model(key);
        let ops = match &model {
            Some(m) => match self.rec.update(m) {
                Ok(ops) => ops,
                Err(e) => {
                    tracing::warn!(service = key, error = %e, "skipping service");
                    self.rec.delete(&m.namespace, &m.name)
                }
            },
            None => {
                let (ns, name) = key.split_once('/').unwrap_or(("default", key));
                self.rec.delete(ns, name)
            }
        };
        self.health_for(key, model.as_ref());
        tracing::debug!(service = key, writes = ops.len(), "sync");
        self.write(&ops, started);
    }

    fn resync(&mut self, store: &Store, started: Instant) {
        let mut models = Vec::new();
        for key in store.services.keys() {
            if let Some(m) = store.model(key) {
                match m.validate() {
                    Ok(()) => models.push(m),
                    Err(e) => tracing::warn!(service = key, error = %e, "skipping service"),
                }
            }
        }
        let current = match self.maps.read_state() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "read pinned maps");
                return;
            }
        };
        self.dirty = false;
        match self.rec.resync(&models, &current) {
            Ok(ops) => {
                tracing::info!(services = models.len(), writes = ops.len(), "full resync");
                self.write(&ops, started);
            }
            Err(e) => tracing::error!(error = %e, "resync"),
        }
        for m in &models {
            self.health_for(&m.key(), Some(m));
        }
    }
}

/// Logs pod routing's state when it changed since `last`: on, or what it waits for.
fn log_pod_routing(r: &datapath::PodRouter, last: &mut Option<Option<String>>) {
    let now = r.waiting_for().map(str::to_owned);
    if last.as_ref() == Some(&now) {
        return;
    }
    match &now {
        None => tracing::info!(ports = r.attached(), "pod routing on"),
        Some(why) => tracing::info!(waiting_for = %why, "pod routing not on yet"),
    }
    *last = Some(now);
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(client: kube::Client, cfg: DaemonConfig) -> Result<(), Error> {
    let report = datapath::install(&cfg.install)?;
    tracing::info!(
        attached = ?report.attached, kept = ?report.kept, replaced = ?report.replaced,
        pin_dir = %cfg.install.pin_dir.display(), "datapath installed"
    );
    let mut pod_router = datapath::setup_pod_routing(&cfg.install)?;
    // Pod routing's state as last logged: on, or what it waits for (the bridge).
    let mut pod_routing_state = None;
    if let Some(r) = &pod_router {
        log_pod_routing(r, &mut pod_routing_state);
    }
    let maps = BpfMaps::open(&cfg.install.pin_dir)?;
    let current = maps.read_state()?;
    let metrics = Arc::new(Metrics::default());
    let mut engine = Engine {
        node: cfg.node.clone(),
        rec: Reconciler::new(cfg.node.clone(), &current),
        maps,
        metrics: metrics.clone(),
        health: HealthServers::default(),
        dirty: false,
    };
    if cfg.metrics_port != 0 {
        spawn_metrics(cfg.metrics_port, metrics, cfg.install.pin_dir.clone()).await?;
    }

    let svcs = watcher::watcher(
        Api::<KService>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Svc(Box::new(e))))
    .boxed();
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Slice(Box::new(e))))
    .boxed();
    let mut events = futures::stream::select(svcs, slices);
    let mut term = signal(SignalKind::terminate()).map_err(Error::io("install SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::io("install SIGINT handler"))?;
    let mut store = Store::default();

    let mut repair = tokio::time::interval(REPAIR_PERIOD);
    let mut pod_ports = tokio::time::interval(POD_PORTS_PERIOD);
    loop {
        let ev = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = pod_ports.tick(), if pod_router.is_some() => {
                if let Some(r) = pod_router.as_mut() {
                    match r.sync() {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(new = n, ports = r.attached(), "pod routing: new pods"),
                        Err(e) => tracing::warn!(error = %e, "pod routing: attach to new pods"),
                    }
                    log_pod_routing(r, &mut pod_routing_state);
                }
                continue;
            }
            _ = repair.tick() => {
                if engine.dirty && store.svc_listed && store.slices_listed {
                    engine.resync(&store, Instant::now());
                }
                continue;
            }
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { break };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "watch error (retrying)");
                continue;
            }
        };
        let started = Instant::now();
        let listed = store.svc_listed && store.slices_listed;
        let mut touched = Vec::new();
        let mut relisted = false;
        match ev {
            Change::Svc(ev) => match *ev {
                Event::Init => store.svc_buf = Some(BTreeMap::new()),
                Event::InitApply(s) => {
                    if let (Some(buf), Some(k)) = (store.svc_buf.as_mut(), service_key(&s)) {
                        buf.insert(k, s);
                    }
                }
                Event::InitDone => {
                    store.services = store.svc_buf.take().unwrap_or_default();
                    store.svc_listed = true;
                    relisted = true;
                }
                Event::Apply(s) => {
                    if let Some(k) = service_key(&s) {
                        store.services.insert(k.clone(), s);
                        touched.push(k);
                    }
                }
                Event::Delete(s) => {
                    if let Some(k) = service_key(&s) {
                        store.services.remove(&k);
                        touched.push(k);
                    }
                }
            },
            Change::Slice(ev) => match *ev {
                Event::Init => store.slice_buf = Some(Vec::new()),
                Event::InitApply(s) => {
                    if let Some(buf) = store.slice_buf.as_mut() {
                        buf.push(s);
                    }
                }
                Event::InitDone => {
                    store.slices.clear();
                    store.slice_owner.clear();
                    for s in store.slice_buf.take().unwrap_or_default() {
                        store.put_slice(s);
                    }
                    store.slices_listed = true;
                    relisted = true;
                }
                Event::Apply(s) => touched = store.put_slice(s),
                Event::Delete(s) => touched = store.remove_slice(&slice_key(&s)),
            },
        }
        if store.svc_listed && store.slices_listed && (relisted || !listed) {
            engine.resync(&store, started);
        } else if listed {
            touched.sort();
            touched.dedup();
            for k in touched {
                engine.sync_one(&store, &k, started);
            }
        }
    }

    engine.health.stop();
    tracing::info!("shutting down");
    if cfg.cleanup {
        drop(engine);
        datapath::cleanup(&cfg.install.pin_dir)?;
        tracing::info!(pin_dir = %cfg.install.pin_dir.display(), "removed programs and maps");
    }
    Ok(())
}

async fn spawn_metrics(
    port: u16,
    metrics: Arc<Metrics>,
    pin_dir: std::path::PathBuf,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(Error::io(format!("bind metrics port {port}")))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            let pin_dir = pin_dir.clone();
            async move {
                let maps = BpfMaps::open(&pin_dir).ok();
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.render(maps.as_ref()),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}
