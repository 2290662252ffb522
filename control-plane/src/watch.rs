//! One etcd watch per resource type, fanned out in memory.
//!
//! ```text
//! etcd watch(/registry/pods/, prev_kv) ──> Hub ──> history ring (last HISTORY events)
//!                                             └──> broadcast ──> every client watch
//! ```
//!
//! A client watch from resourceVersion X gets the history events after X, then live ones.
//! X older than the history window (or compacted away in etcd) gets 410 Gone, and the
//! client relists. When the hub loses events itself (its etcd watch was compacted under
//! it), every client watch ends with 410.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType as EtcdEvent, WatchOptions};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::store::{Store, decode};

/// Events kept per resource for watchers that resume from an older resourceVersion.
pub const HISTORY: usize = 20_000;
/// How far back (in etcd revisions) a starting hub replays, so that watchers of a
/// restarted server resume without relisting.
pub const REPLAY: i64 = 20_000;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

/// A change to one object.
#[derive(Debug)]
pub struct Event {
    /// etcd revision of the change.
    pub rev: i64,
    /// What happened.
    pub kind: Kind,
    /// The object after the change (before it, for a deletion), with resourceVersion.
    pub obj: Value,
    /// The object before the change, when known.
    pub prev: Option<Value>,
}

/// What the hub broadcasts.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A change.
    Event(Arc<Event>),
    /// Everything up to this revision has been delivered (for bookmarks).
    Progress(i64),
    /// The hub lost events: every watcher must relist (410).
    Reset,
}

#[derive(Debug)]
struct State {
    history: VecDeque<Arc<Event>>,
    /// Events after `floor` are all in `history` (or still to come).
    floor: i64,
    /// Every event up to `latest` has been received.
    latest: i64,
    ready: bool,
}

/// The fan-out point of one resource type.
#[derive(Debug)]
pub struct Hub {
    name: &'static str,
    state: Mutex<State>,
    tx: broadcast::Sender<Msg>,
}

/// A client's starting point in a hub.
#[derive(Debug)]
pub struct Subscription {
    /// Buffered events after the requested revision.
    pub backlog: Vec<Arc<Event>>,
    /// Live messages.
    pub rx: broadcast::Receiver<Msg>,
    /// The newest revision known complete at subscription time.
    pub latest: i64,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Starts the hub of resources stored under `prefix` (a task runs until the process
    /// ends).
    pub fn start(name: &'static str, store: Store, prefix: String) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(16_384);
        let hub = Arc::new(Hub {
            name,
            state: Mutex::new(State {
                history: VecDeque::new(),
                floor: i64::MAX,
                latest: 0,
                ready: false,
            }),
            tx,
        });
        let h = hub.clone();
        tokio::spawn(async move { h.run(store, prefix).await });
        hub
    }

    /// Subscribes from revision `from` (exclusive). `Err(floor)` when `from` is older
    /// than the hub's history.
    pub fn subscribe(&self, from: i64) -> Result<Subscription, i64> {
        let st = lock(&self.state);
        if !st.ready || from < st.floor {
            return Err(if st.ready { st.floor } else { 0 });
        }
        let rx = self.tx.subscribe();
        let start = st.history.partition_point(|e| e.rev <= from);
        Ok(Subscription {
            backlog: st.history.iter().skip(start).cloned().collect(),
            rx,
            latest: st.latest,
        })
    }

    /// Waits until the hub has received every event up to `rev` (bounded).
    pub async fn wait_for(&self, rev: i64, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            {
                let st = lock(&self.state);
                if st.ready && st.latest >= rev {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the hub is following etcd.
    pub fn is_ready(&self) -> bool {
        lock(&self.state).ready
    }

    fn push(&self, ev: Event) {
        let ev = Arc::new(ev);
        let mut st = lock(&self.state);
        st.latest = st.latest.max(ev.rev);
        st.history.push_back(ev.clone());
        while st.history.len() > HISTORY {
            if let Some(old) = st.history.pop_front() {
                st.floor = st.floor.max(old.rev);
            }
        }
        let _ = self.tx.send(Msg::Event(ev));
    }

    fn progress(&self, rev: i64) {
        let mut st = lock(&self.state);
        if rev > st.latest {
            st.latest = rev;
            let _ = self.tx.send(Msg::Progress(rev));
        }
    }

    fn reset(&self, floor: i64) {
        let mut st = lock(&self.state);
        st.history.clear();
        st.floor = floor;
        st.latest = floor;
        st.ready = true;
        let _ = self.tx.send(Msg::Reset);
    }

    async fn run(self: Arc<Self>, store: Store, prefix: String) {
        let mut next: Option<i64> = None;
        loop {
            match self.follow(&store, &prefix, &mut next).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(resource = self.name, error = %e, "etcd watch ended; restarting")
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Follows etcd from `next` (or from a replay window on the first run).
    async fn follow(
        &self,
        store: &Store,
        prefix: &str,
        next: &mut Option<i64>,
    ) -> Result<(), etcd_client::Error> {
        let mut client = store.client();
        let current = store
            .revision()
            .await
            .map_err(|e| etcd_client::Error::WatchError(e.to_string()))?;
        let first = next.is_none();
        let mut start = next.unwrap_or_else(|| (current - REPLAY).max(1));
        let mut stream = loop {
            let opts = WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_progress_notify()
                .with_start_revision(start);
            let mut stream = client.watch(prefix, Some(opts)).await?;
            let created = stream.message().await?;
            match created {
                Some(r) if r.canceled() && r.compact_revision() > 0 => {
                    // The start was compacted away.
                    if !first {
                        tracing::warn!(
                            resource = self.name,
                            compacted = r.compact_revision(),
                            "watch history compacted; watchers relist"
                        );
                    }
                    let floor = r.compact_revision().max(start);
                    self.reset(floor);
                    start = floor + 1;
                    if !first {
                        *next = Some(start);
                    }
                    continue;
                }
                Some(_) => break stream,
                None => return Err(etcd_client::Error::WatchError("watch stream closed".into())),
            }
        };
        {
            let mut st = lock(&self.state);
            if !st.ready {
                st.floor = start - 1;
                st.latest = start - 1;
                st.ready = true;
            }
        }
        tracing::debug!(resource = self.name, start, "following etcd");
        let mut ticker = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let Some(resp) = msg? else {
                        return Err(etcd_client::Error::WatchError("watch stream closed".into()));
                    };
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            if first {
                                // The replay window started before etcd's compaction.
                                tracing::debug!(resource = self.name, compacted = resp.compact_revision(), "replay starts after the compaction");
                            } else {
                                tracing::warn!(resource = self.name, compacted = resp.compact_revision(), "watch history compacted; watchers relist");
                            }
                            self.reset(resp.compact_revision());
                            *next = Some(resp.compact_revision() + 1);
                            return Ok(());
                        }
                        return Err(etcd_client::Error::WatchError(format!("watch canceled: {}", resp.cancel_reason())));
                    }
                    let header_rev = resp.header().map_or(0, |h| h.revision());
                    if resp.events().is_empty() {
                        self.progress(header_rev);
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let rev = kv.mod_revision();
                        let prev = ev.prev_kv().and_then(|p| decode(&key, p.value(), p.mod_revision()).ok()).map(|s| s.obj);
                        let event = match ev.event_type() {
                            EtcdEvent::Put => {
                                let Ok(s) = decode(&key, kv.value(), rev) else { continue };
                                let kind = if kv.create_revision() == rev { Kind::Added } else { Kind::Modified };
                                Event { rev, kind, obj: s.obj, prev }
                            }
                            EtcdEvent::Delete => {
                                let Some(mut obj) = prev.clone() else { continue };
                                crate::store::set_rv(&mut obj, rev);
                                Event { rev, kind: Kind::Deleted, obj, prev }
                            }
                        };
                        *next = Some(rev + 1);
                        self.push(event);
                    }
                }
                _ = ticker.tick() => {
                    stream.request_progress().await?;
                }
            }
        }
    }
}
