//! The API-facing agent: registers the Node, heartbeats, watches the pods bound to this
//! node and drives the pod runtime with them, reports their status, completes graceful
//! deletions, and serves container logs.
//!
//! ```text
//! start ── PodRuntime::start (re-adopt) ── register Node (create or update)
//!   ├─ heartbeat: Lease kube-node-lease/<node> renewTime, Node status (Ready) ─ every period
//!   ├─ watch pods spec.nodeName=<node>:
//!   │     Apply ── deletionTimestamp? stop (grace) then DELETE gracePeriodSeconds=0
//!   │           └─ else runtime.apply(pod)
//!   │     InitDone ── pods the runtime runs that the API no longer has: stop them
//!   │     Delete ── stop
//!   ├─ status: on every runtime change, PATCH pods/<name>/status when it differs
//!   └─ logs: GET /containerLogs/<ns>/<pod>/<container> on --log-port
//! shutdown (SIGTERM) ── detach the workers; pods keep running for the next agent
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::error::{Error, Result, io_err};
use crate::node::{self, NodeFacts};
use crate::runtime::{PodRuntime, RuntimeConfig};
use crate::status;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The agent's settings (its flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `--node-name`.
    pub node_name: String,
    /// `--node-ip`.
    pub node_ip: IpAddr,
    /// `--node-labels`.
    pub labels: BTreeMap<String, String>,
    /// `--cpu` (default: the machine's).
    pub cpu: Option<String>,
    /// `--memory` (default: the machine's).
    pub memory: Option<String>,
    /// `--max-pods`.
    pub max_pods: u32,
    /// `--subnet-file` (flanneld's; gives spec.podCIDR).
    pub subnet_file: Option<PathBuf>,
    /// How long to wait for the subnet file at start.
    pub subnet_wait: Duration,
    /// `--log-address` and `--log-port`.
    pub log_addr: SocketAddr,
    /// `--exec-allowed-from`: the peers that may open exec sessions.
    pub exec_access: crate::exec_access::ExecAccess,
    /// `--lease-duration`.
    pub lease_duration: Duration,
    /// `--heartbeat-period` (lease renewal and node status).
    pub heartbeat_period: Duration,
    /// The pod runtime.
    pub runtime: RuntimeConfig,
}

/// Runs the agent until `shutdown` completes; then leaves the pods running.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let rt = PodRuntime::start(cfg.runtime.clone()).await?;
    let facts = node_facts(&cfg).await?;
    register(&client, &facts, &cfg.runtime.cni_conf_dir).await?;
    tracing::info!(node = %cfg.node_name, pod_cidr = ?facts.pod_cidr, "node registered");

    let listener = tokio::net::TcpListener::bind(cfg.log_addr)
        .await
        .map_err(io_err(
            "listen for log requests on",
            cfg.log_addr.to_string(),
        ))?;
    let logs = tokio::spawn({
        let app = crate::logs::router_with_exec(rt.clone(), cfg.exec_access.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "log endpoint stopped");
            }
        }
    });
    let heartbeat = tokio::spawn(heartbeat(client.clone(), facts.clone(), cfg.clone()));
    let reporter = tokio::spawn(report_status(client.clone(), rt.clone()));
    let watch = watch_pods(client, rt.clone(), cfg.node_name.clone());
    tokio::select! {
        _ = watch => tracing::error!("pod watch ended"),
        _ = shutdown => tracing::info!("shutting down; pods keep running"),
    }
    for t in [logs, heartbeat, reporter] {
        t.abort();
    }
    rt.detach_all().await;
    Ok(())
}

async fn node_facts(cfg: &AgentConfig) -> Result<NodeFacts> {
    let (cpu, memory) = node::machine_capacity();
    let pod_cidr = match &cfg.subnet_file {
        None => None,
        Some(path) => {
            let deadline = tokio::time::Instant::now() + cfg.subnet_wait;
            loop {
                match node::pod_cidr_from_subnet_file(path) {
                    Ok(c) => break Some(c),
                    Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                    Err(e) => {
                        tracing::info!(error = %e, "waiting for flanneld's subnet file");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    };
    Ok(NodeFacts {
        name: cfg.node_name.clone(),
        ip: cfg.node_ip,
        labels: cfg.labels.clone(),
        cpu: cfg.cpu.clone().unwrap_or(cpu),
        memory: cfg.memory.clone().unwrap_or(memory),
        max_pods: cfg.max_pods,
        pod_cidr,
        log_port: cfg.log_addr.port(),
    })
}

/// Creates the Node, or updates labels, podCIDR (when unset) and status of an existing one.
async fn register(
    client: &kube::Client,
    f: &NodeFacts,
    cni_conf_dir: &std::path::Path,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = SystemTime::now();
    match nodes.get_opt(&f.name).await? {
        None => {
            nodes
                .create(
                    &PostParams::default(),
                    &node::node_object(
                        f,
                        &node::Readiness {
                            network_error: crate::cni::load_dir(cni_conf_dir)
                                .err()
                                .map(|e| e.to_string()),
                            since: now,
                        },
                        now,
                    ),
                )
                .await?;
        }
        Some(existing) => {
            let mut patch = json!({"metadata": {"labels": node::labels(f)}});
            let has_cidr = existing
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .is_some();
            if !has_cidr && let Some(c) = &f.pod_cidr {
                patch["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
            }
            nodes
                .patch(&f.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    // The heartbeat posts the status (with the network's readiness) right after.
    Ok(())
}

async fn heartbeat(client: kube::Client, f: NodeFacts, cfg: AgentConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut ready: Option<node::Readiness> = None;
    loop {
        if let Err(e) = renew_lease(&leases, &nodes, &f.name, cfg.lease_duration).await {
            tracing::warn!(error = %e, "renew node lease");
        }
        let network_error = crate::cni::load_dir(&cfg.runtime.cni_conf_dir)
            .err()
            .map(|e| e.to_string());
        let changed = ready
            .as_ref()
            .is_none_or(|r| r.network_error.is_some() != network_error.is_some());
        if changed {
            match &network_error {
                None => tracing::info!("pod network configured; node is Ready"),
                Some(e) => tracing::warn!(error = %e, "pod network not ready; node is NotReady"),
            }
        }
        let since = match &ready {
            Some(r) if !changed => r.since,
            _ => SystemTime::now(),
        };
        let r = ready.insert(node::Readiness {
            network_error,
            since,
        });
        let st = json!({"status": node::node_status(&f, r, SystemTime::now())});
        match nodes
            .patch_status(&f.name, &PatchParams::default(), &Patch::Merge(&st))
            .await
        {
            Ok(_) => {}
            // Someone deleted the Node: register it again, as the kubelet does.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::warn!(node = %f.name, "node object is gone; registering again");
                if let Err(e) =
                    register(&nodes.clone().into_client(), &f, &cfg.runtime.cni_conf_dir).await
                {
                    tracing::warn!(error = %e, "register node");
                }
            }
            Err(e) => tracing::warn!(error = %e, "update node status"),
        }
        tokio::time::sleep(cfg.heartbeat_period).await;
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    nodes: &Api<Node>,
    name: &str,
    duration: Duration,
) -> Result<()> {
    let now =
        MicroTime(k8s_openapi::jiff::Timestamp::try_from(SystemTime::now()).unwrap_or_default());
    let spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": duration.as_secs(),
        "renewTime": now,
    });
    if leases.get_opt(name).await?.is_some() {
        leases
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await?;
        return Ok(());
    }
    let node = nodes.get(name).await?;
    let mut lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": spec,
    }))
    .map_err(|e| Error::State {
        path: PathBuf::from("lease"),
        reason: e.to_string(),
    })?;
    lease.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.into(),
        uid: node.metadata.uid.unwrap_or_default(),
        ..Default::default()
    }]);
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

type Stopping = Arc<Mutex<HashSet<String>>>;

async fn watch_pods(client: kube::Client, rt: PodRuntime, node: String) {
    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, wc).default_backoff().boxed();
    let stopping: Stopping = Arc::default();
    let mut seen = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(p)) | Ok(watcher::Event::Apply(p)) => {
                if let Some(uid) = &p.metadata.uid {
                    seen.insert(uid.clone());
                }
                on_pod(&client, &rt, &stopping, p);
            }
            Ok(watcher::Event::InitDone) => {
                for uid in rt.uids() {
                    if !seen.contains(&uid) {
                        tracing::info!(%uid, "pod no longer exists in the API; stopping it");
                        stop(&client, &rt, &stopping, uid, None, Duration::ZERO);
                    }
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid.clone() {
                    stop(&client, &rt, &stopping, uid, None, Duration::ZERO);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch"),
        }
    }
}

/// The grace period a deletion asks for.
pub fn deletion_grace(p: &Pod) -> Duration {
    let s = p
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            p.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(s as u64)
}

fn on_pod(client: &kube::Client, rt: &PodRuntime, stopping: &Stopping, p: Pod) {
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    if p.metadata.deletion_timestamp.is_some() {
        let grace = deletion_grace(&p);
        stop(client, rt, stopping, uid, Some(p), grace);
        return;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) && rt.snapshot(&uid).is_none() {
        return; // finished before; nothing to run
    }
    if let Err(e) = rt.apply(p) {
        tracing::warn!(error = %e, "cannot run pod");
    }
}

/// Stops a pod (once), then, when it still exists in the API, completes its deletion.
fn stop(
    client: &kube::Client,
    rt: &PodRuntime,
    stopping: &Stopping,
    uid: String,
    pod: Option<Pod>,
    grace: Duration,
) {
    if !stopping
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid.clone())
    {
        return;
    }
    let (client, rt, stopping) = (client.clone(), rt.clone(), stopping.clone());
    tokio::spawn(async move {
        if let Err(e) = rt.delete(&uid, grace).await {
            tracing::warn!(%uid, error = %e, "pod teardown had errors");
        }
        if let Some(p) = pod {
            let ns = p.metadata.namespace.clone().unwrap_or("default".into());
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "deletion completed"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "complete deletion")
                }
            }
        }
        stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
    });
}

async fn report_status(client: kube::Client, rt: PodRuntime) {
    let mut changes = rt.subscribe();
    let mut sent: HashMap<String, PodStatus> = HashMap::new();
    loop {
        let uids: HashSet<String> = rt.uids().into_iter().collect();
        sent.retain(|u, _| uids.contains(u));
        for snap in rt.snapshots() {
            let uid = snap.uid().to_owned();
            let prev = sent.get(&uid);
            let st = status::pod_status(&snap, prev, SystemTime::now());
            if prev.is_some_and(|p| same_status(p, &st)) {
                continue;
            }
            let m = &snap.record.pod.metadata;
            let ns = m.namespace.clone().unwrap_or("default".into());
            let name = m.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let patch = json!({"status": st});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    sent.insert(uid, st);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    sent.insert(uid, st);
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "patch pod status")
                }
            }
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Let a burst of changes settle into one patch.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether two statuses say the same (condition transition times are kept stable by
/// `pod_status`, so plain equality works).
pub fn same_status(a: &PodStatus, b: &PodStatus) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_grace_prefers_the_deletion_request() {
        let mut p = Pod::default();
        assert_eq!(deletion_grace(&p), Duration::from_secs(30));
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        });
        assert_eq!(deletion_grace(&p), Duration::from_secs(5));
        p.metadata.deletion_grace_period_seconds = Some(1);
        assert_eq!(deletion_grace(&p), Duration::from_secs(1));
    }
}
