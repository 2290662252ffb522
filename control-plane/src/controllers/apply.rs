//! The controller manager's loop: caches, one reconcile pass per change, and the writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::podutil::{controller_of, is_active};
use super::{daemonset, deployment, endpoints, nodelifecycle, replicaset};

/// How the controller manager runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A node without a heartbeat for this long is NotReady (Ready=Unknown) and tainted.
    pub node_monitor_grace: Duration,
    /// Pods on an unreachable node are evicted this long after it turned unreachable.
    pub pod_eviction_timeout: Duration,
    /// A full pass runs at least this often, even without a change.
    pub resync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_monitor_grace: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(300),
            resync: Duration::from_secs(10),
        }
    }
}

struct Caches {
    pods: Store<Pod>,
    rs: Store<ReplicaSet>,
    deploys: Store<Deployment>,
    ds: Store<DaemonSet>,
    svcs: Store<Service>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    nodes: Store<Node>,
    leases: Store<Lease>,
}

fn cache<K>(api: Api<K>, tx: tokio::sync::mpsc::Sender<()>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |ev| {
            if let Err(e) = &ev {
                tracing::warn!(%kind, error = %e, "watch");
            }
            let _ = tx.try_send(());
            async {}
        });
    tokio::spawn(stream);
    store
}

/// Pending creations and deletions per controller uid that the cache has not shown yet,
/// so that a pass never acts twice on the same need.
#[derive(Debug, Default)]
struct Expectations(HashMap<String, (Instant, HashSet<String>, HashSet<String>)>);

impl Expectations {
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn satisfied(&mut self, uid: &str, pods: &[&Pod], all: &[std::sync::Arc<Pod>]) -> bool {
        let Some((since, adds, dels)) = self.0.get(uid) else {
            return true;
        };
        let names: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
        let adds_seen = adds.iter().all(|n| names.contains(n));
        let dels_seen = dels.iter().all(|n| {
            !all.iter()
                .any(|p| &p.name_any() == n && p.metadata.deletion_timestamp.is_none())
        });
        if (adds_seen && dels_seen) || since.elapsed() > Self::TIMEOUT {
            self.0.remove(uid);
            true
        } else {
            false
        }
    }

    fn expect(&mut self, uid: &str, adds: HashSet<String>, dels: HashSet<String>) {
        if !adds.is_empty() || !dels.is_empty() {
            self.0.insert(uid.to_owned(), (Instant::now(), adds, dels));
        }
    }
}

/// Runs all controllers until the process is stopped.
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let c = Caches {
        pods: cache(Api::all(client.clone()), tx.clone()),
        rs: cache(Api::all(client.clone()), tx.clone()),
        deploys: cache(Api::all(client.clone()), tx.clone()),
        ds: cache(Api::all(client.clone()), tx.clone()),
        svcs: cache(Api::all(client.clone()), tx.clone()),
        slices: cache(Api::all(client.clone()), tx.clone()),
        endpoints: cache(Api::all(client.clone()), tx.clone()),
        nodes: cache(Api::all(client.clone()), tx.clone()),
        leases: cache(
            Api::namespaced(client.clone(), "kube-node-lease"),
            tx.clone(),
        ),
    };
    c.pods.wait_until_ready().await?;
    c.rs.wait_until_ready().await?;
    c.deploys.wait_until_ready().await?;
    c.ds.wait_until_ready().await?;
    c.svcs.wait_until_ready().await?;
    c.slices.wait_until_ready().await?;
    c.endpoints.wait_until_ready().await?;
    c.nodes.wait_until_ready().await?;
    c.leases.wait_until_ready().await?;
    tracing::info!("controller caches synced");

    let started = Timestamp::now();
    let mut rs_expect = Expectations::default();
    let mut evicted: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(opts.resync);
    loop {
        tokio::select! {
            _ = rx.recv() => {}
            _ = tick.tick() => {}
        }
        // Let a burst of events land before the pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while rx.try_recv().is_ok() {}
        deployments(&client, &c).await;
        replicasets(&client, &c, &mut rs_expect).await;
        daemonsets(&client, &c).await;
        services(&client, &c).await;
        node_lifecycle(&client, &c, &opts, started, &mut evicted).await;
        garbage_collect(&client, &c).await;
    }
}

fn warn<T>(what: &str, name: &str, r: kube::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(kube::Error::Api(e)) if e.code == 409 && what.starts_with("create") => None,
        Err(kube::Error::Api(e)) if e.code == 404 && what.starts_with("delete") => None,
        Err(e) => {
            tracing::warn!(object = name, error = %e, "{what}");
            None
        }
    }
}

fn owned_by<'a, K: Resource>(items: &'a [std::sync::Arc<K>], uid: &str) -> Vec<&'a K> {
    items
        .iter()
        .filter(|o| controller_of(o.meta().owner_references.as_ref()).is_some_and(|r| r.uid == uid))
        .map(|o| o.as_ref())
        .collect()
}

async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    old: Option<serde_json::Value>,
    new: serde_json::Value,
) where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if old.as_ref() == Some(&new) {
        return;
    }
    let r = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": new })),
        )
        .await;
    warn("patch status", name, r);
}

async fn deployments(client: &Client, c: &Caches) {
    let all_rs = c.rs.state();
    let all_pods = c.pods.state();
    for d in c.deploys.state() {
        if d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = d.namespace().unwrap_or_default();
        let name = d.name_any();
        let owned = owned_by(&all_rs, &d.uid().unwrap_or_default());
        let counts: BTreeMap<String, deployment::PodCounts> = owned
            .iter()
            .map(|r| {
                let uid = r.uid().unwrap_or_default();
                let live: Vec<&Pod> = owned_by(&all_pods, &uid)
                    .into_iter()
                    .filter(|p| is_active(p))
                    .collect();
                let ready = live.iter().filter(|p| super::podutil::is_ready(p)).count() as i32;
                (
                    r.name_any(),
                    deployment::PodCounts {
                        active: live.len() as i32,
                        ready,
                    },
                )
            })
            .collect();
        let plan = deployment::plan(&d, &owned, &counts);
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        if let Some(rs) = &plan.create {
            warn(
                "create replicaset",
                &rs.name_any(),
                rs_api.create(&PostParams::default(), rs).await,
            );
        }
        for (rs, replicas) in &plan.scale {
            let p = json!({"spec": {"replicas": replicas}});
            warn(
                "scale replicaset",
                rs,
                rs_api
                    .patch(rs, &PatchParams::default(), &Patch::Merge(p))
                    .await,
            );
        }
        if let Some((rs, rev)) = &plan.set_revision {
            let p = json!({"metadata": {"annotations": {deployment::REVISION_ANNOTATION: rev}}});
            warn(
                "set revision",
                rs,
                rs_api
                    .patch(rs, &PatchParams::default(), &Patch::Merge(p))
                    .await,
            );
        }
        for rs in &plan.delete {
            warn(
                "delete old replicaset",
                rs,
                rs_api.delete(rs, &DeleteParams::background()).await,
            );
        }
        let d_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        if d.annotations().get(deployment::REVISION_ANNOTATION) != Some(&plan.revision) {
            let p = json!({"metadata": {"annotations": {deployment::REVISION_ANNOTATION: plan.revision}}});
            warn(
                "annotate deployment",
                &name,
                d_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(p))
                    .await,
            );
        }
        let old = d.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        patch_status(
            &d_api,
            &name,
            old,
            serde_json::to_value(&plan.status).unwrap_or_default(),
        )
        .await;
    }
}

async fn replicasets(client: &Client, c: &Caches, expect: &mut Expectations) {
    let all_pods = c.pods.state();
    for rs in c.rs.state() {
        if rs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = rs.namespace().unwrap_or_default();
        let uid = rs.uid().unwrap_or_default();
        let owned = owned_by(&all_pods, &uid);
        if !expect.satisfied(&uid, &owned, &all_pods) {
            continue;
        }
        let plan = replicaset::plan(&rs, &owned);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let mut adds = HashSet::new();
        for _ in 0..plan.create {
            if let Some(p) = warn(
                "create pod",
                &rs.name_any(),
                pods.create(&PostParams::default(), &replicaset::pod_from_template(&rs))
                    .await,
            ) {
                adds.insert(p.name_any());
            }
        }
        let mut dels = HashSet::new();
        for p in &plan.delete {
            warn(
                "delete pod",
                p,
                pods.delete(p, &DeleteParams::default()).await,
            );
            dels.insert(p.clone());
        }
        expect.expect(&uid, adds, dels);
        let old = rs
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        patch_status(
            &Api::<ReplicaSet>::namespaced(client.clone(), &ns),
            &rs.name_any(),
            old,
            serde_json::to_value(&plan.status).unwrap_or_default(),
        )
        .await;
    }
}

async fn daemonsets(client: &Client, c: &Caches) {
    let all_pods = c.pods.state();
    let nodes = c.nodes.state();
    let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    for ds in c.ds.state() {
        if ds.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = ds.namespace().unwrap_or_default();
        let owned = owned_by(&all_pods, &ds.uid().unwrap_or_default());
        let plan = daemonset::plan(&ds, &node_refs, &owned);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for p in &plan.create {
            warn(
                "create pod",
                &p.name_any(),
                pods.create(&PostParams::default(), p).await,
            );
        }
        for p in &plan.delete {
            warn(
                "delete pod",
                p,
                pods.delete(p, &DeleteParams::default()).await,
            );
        }
        let old = ds
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        patch_status(
            &Api::<DaemonSet>::namespaced(client.clone(), &ns),
            &ds.name_any(),
            old,
            serde_json::to_value(&plan.status).unwrap_or_default(),
        )
        .await;
    }
}

async fn services(client: &Client, c: &Caches) {
    let all_pods = c.pods.state();
    let pod_refs: Vec<&Pod> = all_pods.iter().map(|p| p.as_ref()).collect();
    let slices = c.slices.state();
    let eps = c.endpoints.state();
    let svcs = c.svcs.state();
    for svc in &svcs {
        if !endpoints::has_selector(svc) {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let ours: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(&ns))
            .filter(|s| s.labels().get(endpoints::SERVICE_NAME_LABEL) == Some(&name))
            .filter(|s| {
                s.labels()
                    .get(endpoints::MANAGED_BY_LABEL)
                    .map(String::as_str)
                    == Some(endpoints::MANAGED_BY)
            })
            .map(|s| s.as_ref())
            .collect();
        let desired = endpoints::desired_slices(svc, &pod_refs);
        for want in &desired {
            let wname = want.name_any();
            match ours.iter().find(|s| s.name_any() == wname) {
                None => {
                    warn(
                        "create endpointslice",
                        &wname,
                        slice_api.create(&PostParams::default(), want).await,
                    );
                }
                Some(have) if have.endpoints != want.endpoints || have.ports != want.ports => {
                    let mut next = want.clone();
                    next.metadata.resource_version = have.resource_version();
                    warn(
                        "replace endpointslice",
                        &wname,
                        slice_api
                            .replace(&wname, &PostParams::default(), &next)
                            .await,
                    );
                }
                Some(_) => {}
            }
        }
        for stale in ours
            .iter()
            .filter(|s| !desired.iter().any(|d| d.name_any() == s.name_any()))
        {
            warn(
                "delete endpointslice",
                &stale.name_any(),
                slice_api
                    .delete(&stale.name_any(), &DeleteParams::default())
                    .await,
            );
        }
        let ep_api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        let want = endpoints::desired_endpoints(svc, &pod_refs);
        match eps
            .iter()
            .find(|e| e.namespace().as_deref() == Some(&ns) && e.name_any() == name)
        {
            None => {
                warn(
                    "create endpoints",
                    &name,
                    ep_api.create(&PostParams::default(), &want).await,
                );
            }
            Some(have) if have.subsets != want.subsets => {
                let mut next = want.clone();
                next.metadata.resource_version = have.resource_version();
                next.metadata.labels = have.metadata.labels.clone();
                warn(
                    "replace endpoints",
                    &name,
                    ep_api.replace(&name, &PostParams::default(), &next).await,
                );
            }
            Some(_) => {}
        }
    }
    // Endpoints of Services that are gone.
    for ep in &eps {
        let ns = ep.namespace().unwrap_or_default();
        if !svcs
            .iter()
            .any(|s| s.namespace().as_deref() == Some(&ns) && s.name_any() == ep.name_any())
        {
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
            warn(
                "delete endpoints",
                &ep.name_any(),
                api.delete(&ep.name_any(), &DeleteParams::default()).await,
            );
        }
    }
}

async fn node_lifecycle(
    client: &Client,
    c: &Caches,
    opts: &Options,
    started: Timestamp,
    evicted: &mut HashSet<String>,
) {
    let leases = c.leases.state();
    let now = Timestamp::now();
    let nodes_api: Api<Node> = Api::all(client.clone());
    for node in c.nodes.state() {
        let name = node.name_any();
        let lease = leases
            .iter()
            .find(|l| l.name_any() == name)
            .map(|l| l.as_ref());
        let verdict = nodelifecycle::judge(
            nodelifecycle::last_heartbeat(&node, lease),
            now,
            started,
            opts.node_monitor_grace.as_secs() as i64,
            opts.pod_eviction_timeout.as_secs() as i64,
        );
        match verdict {
            nodelifecycle::Verdict::Healthy => {
                evicted.remove(&name);
                if nodelifecycle::has_unreachable_taint(&node) {
                    let taints: Vec<_> = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t.key != nodelifecycle::UNREACHABLE_TAINT)
                        .collect();
                    let p = json!({"spec": {"taints": taints}});
                    warn(
                        "untaint node",
                        &name,
                        nodes_api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(p))
                            .await,
                    );
                }
            }
            nodelifecycle::Verdict::Unreachable | nodelifecycle::Verdict::Evict => {
                if !nodelifecycle::ready_unknown(&node) {
                    tracing::info!(node = %name, "node stopped heartbeating: Ready=Unknown, tainted unreachable");
                    let mut conditions = node
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.clone())
                        .unwrap_or_default();
                    for cnd in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                        cnd.status = "Unknown".into();
                        cnd.reason = Some("NodeStatusUnknown".into());
                        cnd.message = Some("Kubelet stopped posting node status.".into());
                        cnd.last_transition_time =
                            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                    }
                    let p = json!({"status": {"conditions": conditions}});
                    warn(
                        "mark node unknown",
                        &name,
                        nodes_api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(p))
                            .await,
                    );
                }
                if !nodelifecycle::has_unreachable_taint(&node) {
                    let mut taints = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.clone())
                        .unwrap_or_default();
                    taints.extend(nodelifecycle::unreachable_taints());
                    let p = json!({"spec": {"taints": taints}});
                    warn(
                        "taint node",
                        &name,
                        nodes_api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(p))
                            .await,
                    );
                }
                if verdict == nodelifecycle::Verdict::Evict && !evicted.contains(&name) {
                    for p in c.pods.state().iter().filter(|p| {
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name)
                    }) {
                        if p.metadata.deletion_timestamp.is_some() {
                            continue;
                        }
                        tracing::info!(node = %name, pod = %p.name_any(), "evicting pod from unreachable node");
                        let api: Api<Pod> =
                            Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
                        warn(
                            "evict pod",
                            &p.name_any(),
                            api.delete(&p.name_any(), &DeleteParams::default()).await,
                        );
                    }
                    evicted.insert(name);
                }
            }
        }
    }
}

/// Deletes dependents whose controlling owner no longer exists (checked against the API,
/// not only the cache, before deleting).
async fn garbage_collect(client: &Client, c: &Caches) {
    let mut uids: HashSet<String> = HashSet::new();
    uids.extend(c.rs.state().iter().filter_map(|o| o.uid()));
    uids.extend(c.deploys.state().iter().filter_map(|o| o.uid()));
    uids.extend(c.ds.state().iter().filter_map(|o| o.uid()));
    uids.extend(c.svcs.state().iter().filter_map(|o| o.uid()));
    let orphan =
        |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            controller_of(refs)
                .filter(|r| !uids.contains(&r.uid))
                .cloned()
        };
    for p in c.pods.state() {
        if let Some(owner) = orphan(p.metadata.owner_references.as_ref())
            && owner_gone(client, &p.namespace().unwrap_or_default(), &owner).await
        {
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            if p.metadata.deletion_timestamp.is_none() {
                tracing::info!(pod = %p.name_any(), owner = %owner.name, "garbage collecting pod");
                warn(
                    "delete orphan pod",
                    &p.name_any(),
                    api.delete(&p.name_any(), &DeleteParams::background()).await,
                );
            }
        }
    }
    for r in c.rs.state() {
        if let Some(owner) = orphan(r.metadata.owner_references.as_ref())
            && owner_gone(client, &r.namespace().unwrap_or_default(), &owner).await
        {
            let api: Api<ReplicaSet> =
                Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
            tracing::info!(replicaset = %r.name_any(), owner = %owner.name, "garbage collecting replicaset");
            warn(
                "delete orphan replicaset",
                &r.name_any(),
                api.delete(&r.name_any(), &DeleteParams::background()).await,
            );
        }
    }
    for s in c.slices.state() {
        if let Some(owner) = orphan(s.metadata.owner_references.as_ref())
            && owner_gone(client, &s.namespace().unwrap_or_default(), &owner).await
        {
            let api: Api<EndpointSlice> =
                Api::namespaced(client.clone(), &s.namespace().unwrap_or_default());
            warn(
                "delete orphan endpointslice",
                &s.name_any(),
                api.delete(&s.name_any(), &DeleteParams::background()).await,
            );
        }
    }
}

async fn owner_gone(
    client: &Client,
    ns: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> bool {
    let uid = |r: kube::Result<Option<String>>| match r {
        Ok(Some(u)) => u != owner.uid,
        Ok(None) => true,
        Err(_) => false,
    };
    match owner.kind.as_str() {
        "ReplicaSet" => uid(Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .get_opt(&owner.name)
            .await
            .map(|o| o.and_then(|o| o.uid()))),
        "Deployment" => uid(Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(&owner.name)
            .await
            .map(|o| o.and_then(|o| o.uid()))),
        "DaemonSet" => uid(Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get_opt(&owner.name)
            .await
            .map(|o| o.and_then(|o| o.uid()))),
        "Service" => uid(Api::<Service>::namespaced(client.clone(), ns)
            .get_opt(&owner.name)
            .await
            .map(|o| o.and_then(|o| o.uid()))),
        _ => false,
    }
}
