//! The scheduler's loop: reflect Pods and Nodes, and on every change (or a periodic retry)
//! bind what can be bound.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::filter::{NodeState, select_node};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pods whose spec.schedulerName is this (or empty) are ours.
    pub scheduler_name: String,
    /// Retry unschedulable pods at least this often, even without a change.
    pub retry: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler_name: "default-scheduler".into(),
            retry: Duration::from_secs(5),
        }
    }
}

/// Runs until the watch streams end (they do not, unless the client is dropped).
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let (pod_store, pod_writer) = reflector::store();
    let (node_store, node_writer) = reflector::store();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);

    let tx_pods = tx.clone();
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(pods.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(move |ev| {
        if let Err(e) = &ev {
            tracing::warn!(error = %e, "pod watch");
        }
        let _ = tx_pods.try_send(());
        async {}
    });
    let node_stream = reflector::reflector(node_writer, watcher(nodes, watcher::Config::default()))
        .default_backoff()
        .for_each(move |ev| {
            if let Err(e) = &ev {
                tracing::warn!(error = %e, "node watch");
            }
            let _ = tx.try_send(());
            async {}
        });
    tokio::spawn(pod_stream);
    tokio::spawn(node_stream);
    pod_store.wait_until_ready().await?;
    node_store.wait_until_ready().await?;
    tracing::info!("scheduler caches synced");

    let mut state = Assumed::default();
    let mut retry = tokio::time::interval(opts.retry);
    loop {
        tokio::select! {
            _ = rx.recv() => {}
            _ = retry.tick() => {}
        }
        schedule_pass(&pods, &pod_store, &node_store, &opts, &mut state).await;
    }
}

/// Bindings made but not yet seen in the pod cache: pod uid → node.
#[derive(Debug, Default)]
struct Assumed {
    bound: HashMap<String, String>,
    /// Last unschedulable message written per pod uid (to avoid rewriting it).
    reported: HashMap<String, String>,
}

async fn schedule_pass(
    api: &Api<Pod>,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    opts: &Options,
    st: &mut Assumed,
) {
    let all_pods = pods.state();
    let all_nodes = nodes.state();
    let mut by_name: BTreeMap<String, NodeState<'_>> = all_nodes
        .iter()
        .map(|n| (n.name_any(), NodeState::new(n)))
        .collect();

    // Forget assumptions the cache has caught up with (or whose pod is gone).
    st.bound.retain(|uid, _| {
        all_pods.iter().any(|p| {
            p.uid().as_deref() == Some(uid)
                && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()
        })
    });
    let mut unbound = Vec::new();
    for p in &all_pods {
        let finished = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let uid = p.uid().unwrap_or_default();
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .or_else(|| st.bound.get(&uid).cloned());
        match node {
            Some(n) if !finished => {
                if let Some(ns) = by_name.get_mut(&n) {
                    ns.add_pod(p);
                }
            }
            Some(_) => {}
            None => {
                let ours = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.scheduler_name.as_deref())
                    .is_none_or(|n| n.is_empty() || n == opts.scheduler_name);
                if ours && p.metadata.deletion_timestamp.is_none() && !finished {
                    unbound.push(p.clone());
                }
            }
        }
    }
    unbound.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });

    for pod in unbound {
        let names: Vec<String> = by_name.keys().cloned().collect();
        let states: Vec<NodeState<'_>> = by_name.values().cloned().collect();
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        match select_node(&pod, &states) {
            Ok(i) => {
                let node = names[i].clone();
                match bind(api, &ns, &name, &node).await {
                    Ok(()) => {
                        tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "bound");
                        if let Some(s) = by_name.get_mut(&node) {
                            s.add_pod(&pod);
                        }
                        st.bound.insert(uid.clone(), node);
                        st.reported.remove(&uid);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), node = %node, error = %e, "bind failed")
                    }
                }
            }
            Err(message) => {
                if st.reported.get(&uid) == Some(&message) {
                    continue;
                }
                tracing::info!(pod = %format!("{ns}/{name}"), %message, "unschedulable");
                match report_unschedulable(
                    &Api::namespaced(api.clone().into_client(), &ns),
                    &pod,
                    &message,
                )
                .await
                {
                    Ok(()) => {
                        st.reported.insert(uid, message);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "report unschedulable")
                    }
                }
            }
        }
    }
}

async fn bind(api: &Api<Pod>, ns: &str, name: &str, node: &str) -> kube::Result<()> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    };
    let pods: Api<Pod> = Api::namespaced(api.clone().into_client(), ns);
    let _: serde_json::Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

async fn report_unschedulable(pods: &Api<Pod>, pod: &Pod, message: &str) -> kube::Result<()> {
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_owned()),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    });
    let patch = json!({"status": {"conditions": conditions, "phase": "Pending"}});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
