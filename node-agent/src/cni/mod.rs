//! CNI, driven exactly as containerd drives it (libcni semantics).
//!
//! ```text
//! --cni-conf-dir ── config::load ──> NetworkList (first valid .conflist/.conf/.json)
//!                                        │
//! Cni::add(attachment) ── for each plugin, in order: exec <bin-dir>/<type> ADD,
//!                         config on stdin with name, cniVersion, prevResult, runtimeConfig
//!                         ── cache::write(<state>/cni/results/<net>-<id>-<ifname>)
//! Cni::check ── CHECK each plugin with the cached result as prevResult (>= 0.4.0)
//! Cni::del   ── DEL each plugin in reverse order, cached config + prevResult, drop cache
//! Cni::gc    ── DEL every cached attachment not in the valid set, then GC (>= 1.1.0)
//!                with cni.dev/valid-attachments
//! ```
//!
//! A `loopback` network (containerd's `cni-loopback`, ifname `lo`) is attached first
//! when the `loopback` plugin is in the bin dir, so `lo` is up in every pod.

mod cache;
mod config;
mod invoke;
mod result;
mod version;

pub use cache::CachedAttachment;
pub use config::{NetworkList, load_dir};
pub use result::CniResult;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// One attachment of a sandbox to a network.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The sandbox id (CNI_CONTAINERID).
    pub container_id: String,
    /// The netns path (CNI_NETNS).
    pub netns: PathBuf,
    /// The interface name in the sandbox (CNI_IFNAME).
    pub ifname: String,
    /// CNI_ARGS key/value pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, ...), passed as runtimeConfig to plugins
    /// that declare the capability.
    pub capability_args: Map<String, Value>,
}

/// A CNI driver: where plugins and the result cache are.
#[derive(Debug, Clone)]
pub struct Cni {
    /// Directories searched for plugin binaries (CNI_PATH).
    pub bin_dirs: Vec<PathBuf>,
    /// The libcni cache dir (results are kept in `<cache_dir>/results`).
    pub cache_dir: PathBuf,
}

/// containerd's loopback network.
pub fn loopback_network() -> NetworkList {
    NetworkList::from_value(
        json!({"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}),
        None,
    )
    .expect("static loopback config is valid")
}

impl Cni {
    /// Whether a plugin binary named `ty` exists in the bin dirs.
    pub fn has_plugin(&self, ty: &str) -> bool {
        invoke::find_plugin(&self.bin_dirs, ty).is_ok()
    }

    /// Attaches: ADD through every plugin, chaining prevResult, and caches the final
    /// result. If a plugin fails, the plugins already run are undone with DEL.
    pub async fn add(&self, net: &NetworkList, att: &Attachment) -> Result<CniResult> {
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let conf = net.plugin_config(plugin, prev.as_ref(), &att.capability_args);
            match invoke::exec(&self.bin_dirs, "ADD", &conf, Some(att)).await {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    if let Err(undo) = self.del_with(net, att, prev.as_ref()).await {
                        tracing::warn!(error = %undo, "cni: rollback after failed ADD");
                    }
                    return Err(e);
                }
            }
        }
        let value = prev.unwrap_or_else(|| json!({"cniVersion": net.cni_version}));
        cache::write(&self.cache_dir, net, att, &value)?;
        CniResult::parse(&value).map_err(|message| Error::CniPlugin {
            plugin: net.name.clone(),
            command: "ADD".into(),
            container_id: att.container_id.clone(),
            message,
        })
    }

    /// Checks an attachment against its cached result (no-op before CNI 0.4.0 or when
    /// the list disables checks).
    pub async fn check(&self, net: &NetworkList, att: &Attachment) -> Result<()> {
        if net.disable_check || !version::at_least(&net.cni_version, (0, 4, 0)) {
            return Ok(());
        }
        let cached = cache::read(&self.cache_dir, &net.name, &att.container_id, &att.ifname)
            .ok_or_else(|| Error::CniPlugin {
                plugin: net.name.clone(),
                command: "CHECK".into(),
                container_id: att.container_id.clone(),
                message: "no cached result for this attachment".into(),
            })?;
        for plugin in &net.plugins {
            let conf = net.plugin_config(plugin, Some(&cached.result), &att.capability_args);
            invoke::exec(&self.bin_dirs, "CHECK", &conf, Some(att)).await?;
        }
        Ok(())
    }

    /// Detaches: DEL through every plugin in reverse order with the cached config and
    /// result, then drops the cache entry. A missing cache entry still runs DEL with the
    /// current config (DEL must be idempotent).
    pub async fn del(&self, net: &NetworkList, att: &Attachment) -> Result<()> {
        let cached = cache::read(&self.cache_dir, &net.name, &att.container_id, &att.ifname);
        let (net, prev) = match &cached {
            Some(c) => (c.network.as_ref().unwrap_or(net), Some(&c.result)),
            None => (net, None),
        };
        self.del_with(net, att, prev).await?;
        cache::remove(&self.cache_dir, &net.name, &att.container_id, &att.ifname)
    }

    async fn del_with(
        &self,
        net: &NetworkList,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<()> {
        let prev = prev.filter(|_| version::at_least(&net.cni_version, (0, 4, 0)));
        let mut first_err = None;
        for plugin in net.plugins.iter().rev() {
            let conf = net.plugin_config(plugin, prev, &att.capability_args);
            if let Err(e) = invoke::exec(&self.bin_dirs, "DEL", &conf, Some(att)).await {
                tracing::warn!(error = %e, "cni DEL");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Garbage-collects `net`: every cached attachment that is not in `valid`
    /// (container id, ifname) is deleted; then, for CNI >= 1.1.0, every plugin gets GC
    /// with `cni.dev/valid-attachments`. Returns the attachments it deleted.
    pub async fn gc(
        &self,
        net: &NetworkList,
        valid: &[(String, String)],
    ) -> Result<Vec<CachedAttachment>> {
        let mut removed = Vec::new();
        for cached in cache::list(&self.cache_dir, &net.name) {
            if valid
                .iter()
                .any(|(id, ifn)| *id == cached.container_id && *ifn == cached.ifname)
            {
                continue;
            }
            let att = Attachment {
                container_id: cached.container_id.clone(),
                netns: PathBuf::new(),
                ifname: cached.ifname.clone(),
                args: cached.args.clone(),
                capability_args: cached.capability_args.clone(),
            };
            tracing::info!(id = %att.container_id, ifname = %att.ifname, network = %net.name,
                "cni gc: deleting stale attachment");
            match self.del(net, &att).await {
                Ok(()) => removed.push(cached),
                Err(e) => tracing::warn!(error = %e, "cni gc: DEL of stale attachment"),
            }
        }
        if !net.disable_gc && version::at_least(&net.cni_version, (1, 1, 0)) {
            let list: Vec<Value> = valid
                .iter()
                .map(|(id, ifn)| json!({"containerID": id, "ifname": ifn}))
                .collect();
            for plugin in &net.plugins {
                let mut conf = net.plugin_config(plugin, None, &Map::new());
                if let Some(o) = conf.as_object_mut() {
                    o.insert(
                        "cni.dev/valid-attachments".into(),
                        Value::Array(list.clone()),
                    );
                }
                invoke::exec(&self.bin_dirs, "GC", &conf, None).await?;
            }
        }
        Ok(removed)
    }

    /// The network list an attachment was made with, from its cache entry.
    pub fn cached_network(&self, net: &str, id: &str, ifname: &str) -> Option<NetworkList> {
        cache::read(&self.cache_dir, net, id, ifname)?.network
    }

    /// The cache dir's results folder (for operators and tests).
    pub fn results_dir(&self) -> PathBuf {
        self.cache_dir.join("results")
    }
}

/// Checks a CNI_CONTAINERID: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Path helper shared by the submodules.
pub(crate) fn show(p: &Path) -> String {
    p.display().to_string()
}
