//! One pod's worker: builds the sandbox, keeps the containers running under the
//! restart policy and back-off, runs probes, and tears everything down on delete.
//!
//! ```text
//! loop every sync period:
//!   sandbox missing or broken ── (tear down the rest) ── pause + CNI ADD (retried)
//!   each container: exited? ── record termination ── restart when the policy and the
//!                   back-off allow ── probes due? run them ── liveness/startup failed:
//!                   SIGTERM, SIGKILL after the grace period
//!   publish a snapshot, save the record when it changed
//! Stop  ── SIGTERM all, wait grace, SIGKILL ── CNI DEL ── pause, netns, cgroups, state
//! Detach── save and return, processes keep running
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use nix::sys::signal::Signal;

use tokio::sync::{mpsc, oneshot};

use crate::container::{self, PodFields, ProcessSpec};
use crate::probe::{self, ProbeKind, ProbeTiming, ProbeTracker};
use crate::probe_run::{self, ProbeTarget};

mod setup;

use crate::runtime::{ContainerView, PodSnapshot, Shared};
use crate::sandbox;
use crate::state::{PodRecord, RunningRecord, SandboxRecord, StateDir, Termination};

/// Messages to a worker.
pub(crate) enum Cmd {
    Update(Box<Pod>),
    Stop {
        grace: Duration,
        done: oneshot::Sender<Result<(), String>>,
    },
    Detach(oneshot::Sender<()>),
}

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// `<state>/logs/<ns>_<name>_<uid>/<container>/<n>.log`.
pub(crate) fn log_path(state: &StateDir, pod: &Pod, container: &str, n: u32) -> std::path::PathBuf {
    let m = &pod.metadata;
    state
        .pod_log_dir(
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or(""),
        )
        .join(container)
        .join(format!("{n}.log"))
}

/// In-memory state of a running container instance.
struct Live {
    child: Option<tokio::process::Child>,
    since: Instant,
    probes: HashMap<ProbeKind, ProbeTracker>,
    outcome: probe::ProbeOutcome,
    /// SIGTERM sent at, with the SIGKILL deadline, when the agent is killing it.
    killing: Option<Instant>,
    spec: ProcessSpec,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    uid: String,
    key: String,
    rec: PodRecord,
    live: HashMap<String, Live>,
    waiting: HashMap<String, (String, String)>,
    sandbox_error: Option<String>,
    sandbox_attempts: u32,
    next_sandbox_try: Instant,
    terminating: bool,
    dirty: bool,
    snapshot: Arc<Mutex<PodSnapshot>>,
}

fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn ran_for(since: SystemTime) -> Duration {
    SystemTime::now().duration_since(since).unwrap_or_default()
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, uid: String, rec: PodRecord) -> Worker {
        let key = pod_key(&rec.pod);
        let mut live = HashMap::new();
        // Re-adopted containers: no child handle; their exit is seen through /proc.
        if let Some(sb) = &rec.sandbox {
            for (name, c) in &rec.containers {
                if let (Some(run), Some(spec_c)) = (&c.running, find_container(&rec.pod, name)) {
                    let spec = container::process_spec(
                        &rec.pod,
                        spec_c,
                        &hostname(&rec.pod),
                        &fields(&rec.pod, sb, &shared),
                    )
                    .unwrap_or(ProcessSpec {
                        argv: vec![],
                        env: BTreeMap::new(),
                        working_dir: None,
                        user: None,
                    });
                    let since = Instant::now()
                        .checked_sub(ran_for(run.started_at))
                        .unwrap_or_else(Instant::now);
                    live.insert(name.clone(), Live::new(None, since, spec_c, spec));
                }
            }
        }
        let snapshot = Arc::new(Mutex::new(PodSnapshot {
            record: rec.clone(),
            containers: BTreeMap::new(),
            sandbox_error: None,
            terminating: false,
            node_ip: shared.cfg.node_ip,
        }));
        Worker {
            shared,
            uid,
            key,
            rec,
            live,
            waiting: HashMap::new(),
            sandbox_error: None,
            sandbox_attempts: 0,
            next_sandbox_try: Instant::now(),
            terminating: false,
            dirty: false,
            snapshot,
        }
    }

    pub(crate) fn snapshot_handle(&self) -> Arc<Mutex<PodSnapshot>> {
        self.snapshot.clone()
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            self.sync().await;
            self.persist();
            self.publish();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Update(p)) => {
                        self.rec.pod = *p;
                        self.dirty = true;
                    }
                    Some(Cmd::Stop { grace, done }) => {
                        let r = self.terminate(grace).await;
                        self.publish();
                        let _ = done.send(r);
                        return;
                    }
                    Some(Cmd::Detach(done)) => {
                        self.dirty = true;
                        self.persist();
                        let _ = done.send(());
                        return;
                    }
                },
                _ = tokio::time::sleep(self.shared.cfg.sync_period) => {}
            }
        }
    }

    fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        match self.shared.state.save(&self.uid, &self.rec) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::error!(pod = %self.key, error = %e, "save pod state"),
        }
    }

    fn publish(&self) {
        let containers = self
            .init_containers()
            .iter()
            .chain(self.spec_containers().iter())
            .map(|c| {
                let live = self.live.get(&c.name);
                let view = ContainerView {
                    ready: live.is_some_and(|l| l.outcome.ready && l.killing.is_none()),
                    started: live.is_some_and(|l| l.outcome.started),
                    waiting: self.waiting.get(&c.name).cloned(),
                };
                (c.name.clone(), view)
            })
            .collect();
        let snap = PodSnapshot {
            record: self.rec.clone(),
            containers,
            sandbox_error: self.sandbox_error.clone(),
            terminating: self.terminating,
            node_ip: self.shared.cfg.node_ip,
        };
        let mut cur = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let changed = cur.containers != snap.containers
            || cur.sandbox_error != snap.sandbox_error
            || cur.terminating != snap.terminating
            || serde_json::to_value(&cur.record).ok() != serde_json::to_value(&snap.record).ok();
        *cur = snap;
        drop(cur);
        if changed {
            self.shared.bump();
        }
    }

    fn init_containers(&self) -> Vec<Container> {
        self.rec
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default()
    }

    /// Runs the init containers one at a time, each to a successful exit (a failed one
    /// is retried with back-off, or fails the pod under restartPolicy Never). Returns
    /// whether the pod is initialized.
    fn sync_init(&mut self, policy: Option<&str>) -> bool {
        if self.rec.initialized {
            return true;
        }
        // restartPolicy Always means OnFailure for init containers.
        let init_policy = if policy == Some("Never") {
            "Never"
        } else {
            "OnFailure"
        };
        for c in self.init_containers() {
            self.reap(&c.name);
            let r = self.rec.containers.entry(c.name.clone()).or_default();
            if r.running.is_some() {
                return false;
            }
            if r.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
                continue;
            }
            self.maybe_start(&c, Some(init_policy));
            return false;
        }
        tracing::info!(pod = %self.key, "init containers done");
        self.rec.initialized = true;
        self.dirty = true;
        true
    }

    /// An init container failed for good (restartPolicy Never).
    fn init_failed(&self, policy: Option<&str>) -> bool {
        policy == Some("Never")
            && !self.rec.initialized
            && self.init_containers().iter().any(|c| {
                self.rec.containers.get(&c.name).is_some_and(|r| {
                    r.running.is_none() && r.terminated.as_ref().is_some_and(|t| t.exit_code != 0)
                })
            })
    }

    fn spec_containers(&self) -> Vec<Container> {
        self.rec
            .pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
    }

    async fn sync(&mut self) {
        if self.terminating || self.rec.finished.is_some() {
            return;
        }
        // 1. The sandbox.
        let intact = self
            .rec
            .sandbox
            .as_ref()
            .map(|sb| sandbox::intact(&sb.pause, sb.netns.as_deref()));
        if intact == Some(false) {
            tracing::warn!(pod = %self.key, "sandbox is gone; killing containers and rebuilding it");
            self.kill_all(Duration::ZERO).await;
            let errors = self.teardown_sandbox().await;
            for e in errors {
                tracing::warn!(pod = %self.key, error = %e, "teardown of broken sandbox");
            }
            // A new sandbox runs the init containers again.
            self.rec.initialized = false;
            for c in self.init_containers() {
                if let Some(r) = self.rec.containers.get_mut(&c.name) {
                    r.terminated = None;
                }
            }
        }
        if self.rec.sandbox.is_none() {
            if Instant::now() < self.next_sandbox_try {
                return;
            }
            match self.create_sandbox().await {
                Ok(()) => {
                    self.sandbox_error = None;
                    self.sandbox_attempts = 0;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.key, error = %e, "create sandbox");
                    self.sandbox_error = Some(e.to_string());
                    let delay = self.shared.cfg.backoff.delay(self.sandbox_attempts + 1);
                    self.sandbox_attempts += 1;
                    // Retried soon: the usual cause (no CNI config yet) clears by itself.
                    self.next_sandbox_try = Instant::now()
                        + delay.clamp(Duration::from_secs(1), Duration::from_secs(5));
                    return;
                }
            }
        }
        // 2. The containers.
        let policy = self
            .rec
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone());
        if self.init_failed(policy.as_deref()) {
            self.finish().await;
            return;
        }
        if !self.sync_init(policy.as_deref()) {
            return;
        }
        let mut probe_jobs = Vec::new();
        for c in self.spec_containers() {
            self.reap(&c.name);
            if self
                .rec
                .containers
                .entry(c.name.clone())
                .or_default()
                .running
                .is_some()
            {
                self.enforce_kill(&c);
                probe_jobs.extend(self.due_probes(&c));
                continue;
            }
            self.maybe_start(&c, policy.as_deref());
        }
        if self.all_done(policy.as_deref()) {
            self.finish().await;
            return;
        }
        // 3. Probes, all at once.
        if probe_jobs.is_empty() {
            return;
        }
        let results = futures::future::join_all(probe_jobs.into_iter().map(|j| async move {
            let r = probe_run::run(&j.probe, &j.container, &j.target, j.timing.timeout).await;
            (j, r)
        }))
        .await;
        for (j, r) in results {
            let Some(l) = self.live.get_mut(&j.container.name) else {
                continue;
            };
            let Some(t) = l.probes.get_mut(&j.kind) else {
                continue;
            };
            if let Err(why) = &r {
                tracing::info!(pod = %self.key, container = %j.container.name, probe = ?j.kind, %why, "probe failed");
            }
            if let Some(v) = t.record(l.since.elapsed(), r.is_ok()) {
                tracing::info!(pod = %self.key, container = %j.container.name, probe = ?j.kind, verdict = ?v, "probe verdict changed");
            }
            l.outcome = probe::outcome(
                l.probes.get(&ProbeKind::Startup),
                l.probes.get(&ProbeKind::Liveness),
                l.probes.get(&ProbeKind::Readiness),
            );
            if let Some(kind) = l.outcome.kill
                && l.killing.is_none()
            {
                tracing::warn!(pod = %self.key, container = %j.container.name, probe = ?kind, "probe failed; killing container");
                if let Some(run) = &self
                    .rec
                    .containers
                    .get(&j.container.name)
                    .and_then(|c| c.running.clone())
                {
                    run.proc.signal_group(Signal::SIGTERM);
                }
                l.killing = Some(Instant::now());
            }
        }
    }

    /// Every container has terminated for good under the restart policy.
    fn all_done(&self, policy: Option<&str>) -> bool {
        let spec = self.spec_containers();
        !spec.is_empty()
            && spec.iter().all(|c| {
                self.rec.containers.get(&c.name).is_some_and(|r| {
                    r.running.is_none()
                        && r.terminated
                            .as_ref()
                            .is_some_and(|t| !crate::backoff::should_restart(policy, t.exit_code))
                })
            })
    }

    /// A finished pod (Succeeded/Failed) gives its sandbox and IP back, as the kubelet
    /// does; the record stays until the pod is deleted.
    async fn finish(&mut self) {
        let ips = self
            .rec
            .sandbox
            .as_ref()
            .map(|sb| sb.ips.clone())
            .unwrap_or_default();
        tracing::info!(pod = %self.key, "all containers finished; releasing the sandbox");
        for e in self.teardown_sandbox().await {
            tracing::warn!(pod = %self.key, error = %e, "release sandbox of finished pod");
        }
        self.rec.finished = Some(ips);
        self.dirty = true;
    }

    /// SIGKILL a container whose grace period after a probe kill ran out.
    fn enforce_kill(&mut self, c: &Container) {
        let grace = self.grace_period();
        let Some(l) = self.live.get(&c.name) else {
            return;
        };
        if l.killing.is_some_and(|at| at.elapsed() >= grace) {
            self.kill_container_now(&c.name);
        }
    }

    fn kill_container_now(&self, name: &str) {
        if let Some(run) = self
            .rec
            .containers
            .get(name)
            .and_then(|c| c.running.as_ref())
        {
            run.proc.signal_group(Signal::SIGKILL);
            run.proc.signal(Signal::SIGKILL);
        }
        if let Some(cg) = self.shared.cgroups.container(&self.uid, name) {
            crate::cgroup::kill_all(&cg);
        }
    }

    fn grace_period(&self) -> Duration {
        let s = self
            .rec
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(s as u64)
    }

    /// Sees whether a running container exited, and records how.
    fn reap(&mut self, name: &str) {
        let Some(run) = self
            .rec
            .containers
            .get(name)
            .and_then(|c| c.running.clone())
        else {
            return;
        };
        let exit = match self.live.get_mut(name).and_then(|l| l.child.as_mut()) {
            Some(child) => match child.try_wait() {
                Ok(Some(st)) => Some(exit_of(st)),
                Ok(None) => None,
                Err(_) => (!run.proc.alive()).then_some((255, None, true)),
            },
            None => (!run.proc.alive()).then_some((255, None, true)),
        };
        let Some((code, signal, unknown)) = exit else {
            return;
        };
        // Whatever it forked goes with it.
        if let Some(cg) = self.shared.cgroups.container(&self.uid, name) {
            crate::cgroup::kill_all(&cg);
        }
        let (reason, message) = if unknown {
            ("Unknown", Some("the process ended while the agent was not its parent; its exit status is unknown".to_owned()))
        } else if code == 0 {
            ("Completed", None)
        } else {
            ("Error", None)
        };
        tracing::info!(pod = %self.key, container = name, exit_code = code, ?signal, "container exited");
        let backoff = self.shared.cfg.backoff;
        let cr = self.rec.containers.entry(name.to_owned()).or_default();
        cr.backoff_step = backoff.next_step(cr.backoff_step, ran_for(run.started_at));
        cr.running = None;
        cr.terminated = Some(Termination {
            id: run.id,
            exit_code: code,
            signal,
            reason: reason.into(),
            message,
            started_at: Some(run.started_at),
            finished_at: SystemTime::now(),
        });
        self.live.remove(name);
        self.dirty = true;
    }

    /// Starts a container that is not running, when its spec, the restart policy and the
    /// back-off allow.
    fn maybe_start(&mut self, c: &Container, policy: Option<&str>) {
        let Some(sb) = self.rec.sandbox.clone() else {
            return;
        };
        let spec = match container::process_spec(
            &self.rec.pod,
            c,
            &hostname(&self.rec.pod),
            &fields(&self.rec.pod, &sb, &self.shared),
        ) {
            Ok(s) => s,
            Err(w) => {
                self.waiting.insert(c.name.clone(), w);
                return;
            }
        };
        let backoff = self.shared.cfg.backoff;
        let cr = self.rec.containers.entry(c.name.clone()).or_default();
        if let Some(t) = &cr.terminated {
            if !crate::backoff::should_restart(policy, t.exit_code) {
                self.waiting.remove(&c.name);
                return;
            }
            let delay = backoff.delay(cr.backoff_step);
            let ready_at = t.finished_at + delay;
            if SystemTime::now() < ready_at {
                self.waiting.insert(
                    c.name.clone(),
                    (
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={} pod={}",
                            delay.as_secs(),
                            c.name,
                            self.key
                        ),
                    ),
                );
                return;
            }
            cr.last = cr.terminated.take();
            cr.restart_count += 1;
            cr.backoff_step += 1;
        }
        let n = cr.restart_count;
        let log = log_path(&self.shared.state, &self.rec.pod, &c.name, n);
        let cgroup = self.shared.cgroups.container(&self.uid, &c.name);
        if let Some(cg) = &cgroup {
            // Leftovers of the previous instance must not count as this one.
            crate::cgroup::kill_all(cg);
        }
        let at = container::Placement {
            pod: &self.key,
            pause: &sb.pause,
            cgroup: cgroup.as_deref(),
        };
        let id = random_id();
        self.dirty = true;
        match container::spawn(&spec, &c.name, &at, &log) {
            Ok((proc, child)) => {
                tracing::info!(pod = %self.key, container = %c.name, pid = proc.pid, restart = n, "container started");
                let now = SystemTime::now();
                let cr = self.rec.containers.entry(c.name.clone()).or_default();
                cr.running = Some(RunningRecord {
                    id,
                    proc,
                    started_at: now,
                    log,
                });
                self.waiting.remove(&c.name);
                self.live.insert(
                    c.name.clone(),
                    Live::new(Some(child), Instant::now(), c, spec),
                );
            }
            Err(e) => {
                tracing::warn!(pod = %self.key, container = %c.name, error = %e, "start container");
                let cr = self.rec.containers.entry(c.name.clone()).or_default();
                cr.terminated = Some(Termination {
                    id,
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(e.to_string()),
                    started_at: None,
                    finished_at: SystemTime::now(),
                });
                self.waiting
                    .insert(c.name.clone(), ("RunContainerError".into(), e.to_string()));
            }
        }
    }

    fn due_probes(&self, c: &Container) -> Vec<ProbeJob> {
        let (Some(l), Some(sb)) = (self.live.get(&c.name), &self.rec.sandbox) else {
            return Vec::new();
        };
        if l.killing.is_some() {
            return Vec::new();
        }
        let elapsed = l.since.elapsed();
        let mut jobs = Vec::new();
        for (kind, t) in &l.probes {
            if !probe::should_run(*kind, l.outcome.started) || !t.due(elapsed) {
                continue;
            }
            let Some(p) = probe_of(c, *kind) else {
                continue;
            };
            jobs.push(ProbeJob {
                kind: *kind,
                probe: p.clone(),
                timing: t.timing,
                container: c.clone(),
                target: ProbeTarget {
                    pod: self.key.clone(),
                    pause: sb.pause,
                    netns: sb.netns.clone(),
                    pod_ip: sb.ips.first().copied().or(self.shared.cfg.node_ip),
                    cgroup: self.shared.cgroups.container(&self.uid, &c.name),
                    env: l.spec.clone(),
                },
            });
        }
        jobs
    }

    /// SIGTERM every running container, SIGKILL what is left after `grace`, record the
    /// terminations.
    async fn kill_all(&mut self, grace: Duration) {
        let running: Vec<(String, RunningRecord)> = self
            .rec
            .containers
            .iter()
            .filter_map(|(n, c)| c.running.clone().map(|r| (n.clone(), r)))
            .collect();
        for (_, r) in &running {
            r.proc.signal_group(Signal::SIGTERM);
            r.proc.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            for (n, _) in &running {
                self.reap(n);
            }
            let left = running
                .iter()
                .filter(|(n, _)| {
                    self.rec
                        .containers
                        .get(n)
                        .is_some_and(|c| c.running.is_some())
                })
                .count();
            if left == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (n, _) in &running {
            self.kill_container_now(n);
        }
        let hard = Instant::now() + Duration::from_secs(5);
        loop {
            for (n, _) in &running {
                self.reap(n);
            }
            let left = running.iter().any(|(n, _)| {
                self.rec
                    .containers
                    .get(n)
                    .is_some_and(|c| c.running.is_some())
            });
            if !left || Instant::now() >= hard {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn terminate(&mut self, grace: Duration) -> Result<(), String> {
        self.terminating = true;
        self.publish();
        tracing::info!(pod = %self.key, ?grace, "stopping pod");
        self.kill_all(grace).await;
        let mut errors = self.teardown_sandbox().await;
        if let Some(cg) = self.shared.cgroups.pod(&self.uid)
            && let Err(e) = crate::cgroup::remove(&cg)
        {
            errors.push(e.to_string());
        }
        let m = &self.rec.pod.metadata;
        let logs = self.shared.state.pod_log_dir(
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
            &self.uid,
        );
        if let Err(e) = std::fs::remove_dir_all(&logs)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("remove {}: {e}", logs.display()));
        }
        if let Err(e) = self.shared.state.remove_pod(&self.uid) {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            tracing::info!(pod = %self.key, "pod stopped and removed");
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

struct ProbeJob {
    kind: ProbeKind,
    probe: Probe,
    timing: ProbeTiming,
    container: Container,
    target: ProbeTarget,
}

impl Live {
    fn new(
        child: Option<tokio::process::Child>,
        since: Instant,
        c: &Container,
        spec: ProcessSpec,
    ) -> Live {
        let mut probes = HashMap::new();
        for kind in [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ] {
            if let Some(p) = probe_of(c, kind) {
                probes.insert(kind, ProbeTracker::new(kind, ProbeTiming::of(p)));
            }
        }
        let outcome = probe::outcome(
            probes.get(&ProbeKind::Startup),
            probes.get(&ProbeKind::Liveness),
            probes.get(&ProbeKind::Readiness),
        );
        Live {
            child,
            since,
            probes,
            outcome,
            killing: None,
            spec,
        }
    }
}

/// Where `kubectl exec` runs a command in a container of this record: the container's
/// sandbox, cgroup and process spec (env, workingDir, user). Err when the container is
/// not running.
pub(crate) fn exec_target(
    shared: &Shared,
    rec: &PodRecord,
    container: &str,
) -> std::result::Result<ProbeTarget, String> {
    let key = pod_key(&rec.pod);
    let not_running = || format!("container {container:?} in pod {key} is not running");
    let sb = rec.sandbox.as_ref().ok_or_else(not_running)?;
    let running = rec
        .containers
        .get(container)
        .is_some_and(|c| c.running.is_some());
    let spec_c = find_container(&rec.pod, container)
        .filter(|_| running)
        .ok_or_else(not_running)?;
    let env = container::process_spec(
        &rec.pod,
        spec_c,
        &hostname(&rec.pod),
        &fields(&rec.pod, sb, shared),
    )
    .map_err(|(_, m)| m)?;
    let uid = rec.pod.metadata.uid.as_deref().unwrap_or_default();
    Ok(ProbeTarget {
        pod: key,
        pause: sb.pause,
        netns: sb.netns.clone(),
        pod_ip: sb.ips.first().copied().or(shared.cfg.node_ip),
        cgroup: shared.cgroups.container(uid, container),
        env,
    })
}

fn probe_of(c: &Container, kind: ProbeKind) -> Option<&Probe> {
    match kind {
        ProbeKind::Startup => c.startup_probe.as_ref(),
        ProbeKind::Liveness => c.liveness_probe.as_ref(),
        ProbeKind::Readiness => c.readiness_probe.as_ref(),
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == name)
}

fn hostname(pod: &Pod) -> String {
    let spec_host = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    sandbox::hostname_for(
        &spec_host.unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default()),
    )
}

fn fields(_pod: &Pod, sb: &SandboxRecord, shared: &Shared) -> PodFields {
    PodFields {
        pod_ip: sb.ips.first().map(|i| i.to_string()),
        host_ip: shared.cfg.node_ip.map(|i| i.to_string()),
    }
}

/// (exit code, signal, unknown) from an exit status; a signal death is 128+signal.
fn exit_of(st: std::process::ExitStatus) -> (i32, Option<i32>, bool) {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => (c, None, false),
        (None, Some(s)) => (128 + s, Some(s), false),
        _ => (255, None, true),
    }
}
