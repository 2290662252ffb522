//! The pod runtime: one worker task per pod, fed pod specs, asked to delete, and read
//! for status. No API server here; the agent (or a test) drives it with `Pod` values.
//!
//! ```text
//! PodRuntime::start(cfg) ── load <state>/pods/*/state.json ── re-adopt intact sandboxes
//!                        ── CNI GC with the adopted attachments as the valid set
//! apply(pod)   ── new worker (sandbox, CNI ADD, containers, probes) or spec update
//! delete(uid)  ── SIGTERM, grace, SIGKILL, CNI DEL, sandbox and state removal
//! snapshot(uid)── what the worker observed (status::pod_status turns it into PodStatus)
//! detach_all() ── stop the workers, leave the pods running (agent restart)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::cgroup::Cgroups;
use crate::cni::{self, Cni};
use crate::error::{Error, Result};
use crate::state::{PodRecord, StateDir};
use crate::worker::{self, Cmd, Worker};

/// How the runtime is set up (the agent's flags).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// `--cni-conf-dir`.
    pub cni_conf_dir: PathBuf,
    /// `--cni-bin-dir` (one or more).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// `--cgroup-root`.
    pub cgroup_root: Option<PathBuf>,
    /// The binary run as `<exe> pause` for sandboxes (the agent itself).
    pub pause_exe: PathBuf,
    /// Container restart back-off.
    pub backoff: Backoff,
    /// The node's IP (hostIP, and podIP of hostNetwork pods).
    pub node_ip: Option<IpAddr>,
    /// How often each pod worker looks at its containers.
    pub sync_period: Duration,
    /// Pods' resolv.conf and hosts: `--cluster-dns`, `--cluster-domain`, `--resolv-conf`.
    pub dns: crate::pod_dns::DnsSettings,
}

/// Why `kubectl exec` cannot run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecTargetError {
    /// No such pod on this node, or no such container in it.
    NotFound(String),
    /// The container exists but is not running (or its spec cannot run).
    NotRunning(String),
}

/// What a worker observed about a container, beyond its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerView {
    /// Ready (readiness probe passing, or none).
    pub ready: bool,
    /// Started (startup probe passed, or none).
    pub started: bool,
    /// Why it is not running now (reason, message).
    pub waiting: Option<(String, String)>,
}

/// A pod as its worker last saw it.
#[derive(Debug, Clone)]
pub struct PodSnapshot {
    /// The record (spec, sandbox, containers' lives).
    pub record: PodRecord,
    /// Per container name.
    pub containers: BTreeMap<String, ContainerView>,
    /// Why the sandbox is not ready, when it failed.
    pub sandbox_error: Option<String>,
    /// Being deleted.
    pub terminating: bool,
    /// The node's IP.
    pub node_ip: Option<IpAddr>,
}

impl PodSnapshot {
    /// The pod's uid.
    pub fn uid(&self) -> &str {
        self.record.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

pub(crate) struct Shared {
    pub cfg: RuntimeConfig,
    pub cni: Cni,
    pub state: StateDir,
    pub cgroups: Cgroups,
    pub changed: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
    snapshot: Arc<Mutex<PodSnapshot>>,
    task: tokio::task::JoinHandle<()>,
}

/// The pod runtime of one node.
#[derive(Clone)]
pub struct PodRuntime {
    shared: Arc<Shared>,
    pods: Arc<Mutex<HashMap<String, Handle>>>,
}

impl std::fmt::Debug for PodRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRuntime")
            .field("state_dir", &self.shared.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodRuntime {
    /// Starts the runtime: re-adopts the pods recorded in the state dir whose sandbox is
    /// still intact (their processes and IPs are kept), hands the others to workers that
    /// rebuild them, and garbage-collects CNI attachments that belong to no adopted
    /// sandbox.
    pub async fn start(cfg: RuntimeConfig) -> Result<PodRuntime> {
        let state = StateDir::new(&cfg.state_dir);
        std::fs::create_dir_all(state.root())
            .map_err(crate::error::io_err("create state dir", state.root()))?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            cni: Cni {
                bin_dirs: cfg.cni_bin_dirs.clone(),
                cache_dir: state.cni_cache(),
            },
            cgroups: Cgroups::new(cfg.cgroup_root.clone()),
            state,
            changed,
            cfg,
        });
        let rt = PodRuntime {
            shared: shared.clone(),
            pods: Arc::new(Mutex::new(HashMap::new())),
        };
        let mut valid: Vec<(String, String)> = Vec::new();
        let mut adopted = Vec::new();
        for (uid, rec) in shared.state.load_all() {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%uid, error = %e, "unreadable pod state; leaving it for an operator");
                    continue;
                }
            };
            if let Some(sb) = &rec.sandbox
                && crate::sandbox::intact(&sb.pause, sb.netns.as_deref())
            {
                valid.push((sb.id.clone(), "eth0".into()));
                valid.push((sb.id.clone(), "lo".into()));
                tracing::info!(%uid, pod = %worker::pod_key(&rec.pod), pause = sb.pause.pid,
                    ips = ?sb.ips, "re-adopting running pod");
            } else {
                tracing::info!(%uid, pod = %worker::pod_key(&rec.pod), "sandbox is gone; the pod will be rebuilt");
            }
            adopted.push((uid, rec));
        }
        // GC first: a worker that rebuilds a sandbox must not race the collection of
        // the attachments that are not valid.
        rt.gc(&valid).await;
        for (uid, rec) in adopted {
            rt.spawn_worker(uid, rec);
        }
        Ok(rt)
    }

    async fn gc(&self, valid: &[(String, String)]) {
        let mut nets = vec![cni::loopback_network()];
        match cni::load_dir(&self.shared.cfg.cni_conf_dir) {
            Ok(n) => nets.push(n),
            Err(e) => tracing::warn!(error = %e, "cni gc skipped for the pod network"),
        }
        for net in nets {
            if net.name == "cni-loopback" && !self.shared.cni.has_plugin("loopback") {
                continue;
            }
            match self.shared.cni.gc(&net, valid).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(network = %net.name, removed = removed.len(), "cni gc")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(network = %net.name, error = %e, "cni gc"),
            }
        }
    }

    fn spawn_worker(&self, uid: String, rec: PodRecord) {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Worker::new(self.shared.clone(), uid.clone(), rec);
        let snapshot = w.snapshot_handle();
        let task = tokio::spawn(w.run(rx));
        lock(&self.pods).insert(uid, Handle { tx, snapshot, task });
        self.shared.bump();
    }

    /// Runs `pod` on this node, or hands an updated spec to its worker.
    pub fn apply(&self, pod: Pod) -> Result<()> {
        let key = worker::pod_key(&pod);
        let invalid = |reason: &str| Error::InvalidPod {
            pod: key.clone(),
            reason: reason.to_owned(),
        };
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid("no metadata.uid"))?;
        if uid.contains('/') || uid.starts_with('.') {
            return Err(invalid("metadata.uid is not a valid file name"));
        }
        if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
            return Err(invalid("no metadata.name"));
        }
        let spec = pod.spec.as_ref().ok_or_else(|| invalid("no spec"))?;
        if spec.containers.is_empty() {
            return Err(invalid("spec.containers is empty"));
        }
        if let Some(h) = lock(&self.pods).get(&uid) {
            let _ = h.tx.send(Cmd::Update(Box::new(pod)));
            return Ok(());
        }
        let rec = PodRecord {
            pod,
            accepted_at: std::time::SystemTime::now(),
            sandbox: None,
            containers: BTreeMap::new(),
            finished: None,
            initialized: false,
        };
        self.shared.state.save(&uid, &rec)?;
        self.spawn_worker(uid, rec);
        Ok(())
    }

    /// Deletes a pod: SIGTERM to its containers, SIGKILL after `grace`, CNI DEL, sandbox
    /// and state removed. Waits until done; errors of every step are reported together.
    /// An unknown uid is not an error.
    pub async fn delete(&self, uid: &str, grace: Duration) -> Result<()> {
        let Some(tx) = lock(&self.pods).get(uid).map(|h| h.tx.clone()) else {
            return Ok(());
        };
        let (done, wait) = oneshot::channel();
        let _ = tx.send(Cmd::Stop { grace, done });
        let res = wait
            .await
            .unwrap_or_else(|_| Err("pod worker ended early".into()));
        if let Some(h) = lock(&self.pods).remove(uid) {
            h.task.abort();
        }
        self.shared.bump();
        res.map_err(|reason| Error::Sandbox {
            pod: uid.to_owned(),
            reason,
        })
    }

    /// What the pod's worker observed last.
    pub fn snapshot(&self, uid: &str) -> Option<PodSnapshot> {
        lock(&self.pods).get(uid).map(|h| lock(&h.snapshot).clone())
    }

    /// Every pod's snapshot.
    pub fn snapshots(&self) -> Vec<PodSnapshot> {
        lock(&self.pods)
            .values()
            .map(|h| lock(&h.snapshot).clone())
            .collect()
    }

    /// Uids of the pods on this node.
    pub fn uids(&self) -> Vec<String> {
        lock(&self.pods).keys().cloned().collect()
    }

    /// A counter that moves whenever some pod's snapshot changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// The log file of a container of a pod on this node: the current instance, or the
    /// one before it with `previous`.
    pub fn log_file(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        let snap = self.snapshots().into_iter().find(|s| {
            s.record
                .pod
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("default")
                == namespace
                && s.record.pod.metadata.name.as_deref() == Some(name)
        })?;
        let c = snap.record.containers.get(container)?;
        let n = if previous {
            c.restart_count.checked_sub(1)?
        } else {
            c.restart_count
        };
        let p = worker::log_path(&self.shared.state, &snap.record.pod, container, n);
        p.exists().then_some(p)
    }

    /// Where `kubectl exec` runs a command in a container of a pod on this node.
    pub fn exec_target(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
    ) -> std::result::Result<crate::probe_run::ProbeTarget, ExecTargetError> {
        let snap = self
            .snapshots()
            .into_iter()
            .find(|s| {
                s.record
                    .pod
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or("default")
                    == namespace
                    && s.record.pod.metadata.name.as_deref() == Some(name)
            })
            .ok_or_else(|| {
                ExecTargetError::NotFound(format!("pod {namespace}/{name} is not on this node"))
            })?;
        let declared = snap
            .record
            .pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
        if !declared {
            return Err(ExecTargetError::NotFound(format!(
                "container {container:?} is not valid for pod {namespace}/{name}"
            )));
        }
        worker::exec_target(&self.shared, &snap.record, container)
            .map_err(ExecTargetError::NotRunning)
    }

    /// Whether the container's current instance is running and logs to `log`.
    pub fn logging_to(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        log: &std::path::Path,
    ) -> bool {
        self.snapshots().iter().any(|s| {
            s.record
                .pod
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("default")
                == namespace
                && s.record.pod.metadata.name.as_deref() == Some(name)
                && s.record
                    .containers
                    .get(container)
                    .and_then(|c| c.running.as_ref())
                    .is_some_and(|r| r.log == log)
        })
    }

    /// Stops every worker and leaves the pods running, with their state on disk, for
    /// the next agent to re-adopt.
    pub async fn detach_all(&self) {
        let handles: Vec<Handle> = lock(&self.pods).drain().map(|(_, h)| h).collect();
        for h in handles {
            let (done, wait) = oneshot::channel();
            if h.tx.send(Cmd::Detach(done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
            }
            h.task.abort();
        }
    }

    /// The state dir.
    pub fn state(&self) -> &StateDir {
        &self.shared.state
    }
}
