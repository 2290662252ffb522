//! The kernel side: load the two eBPF objects, attach them (cgroup hooks to the node's
//! pod cgroup, tc to the uplink of the current network namespace), pin programs' links
//! and maps under the pin dir, open the pinned maps, and remove it all again.
//!
//! ```text
//! <pin dir>/skein_svc skein_be ...   maps (pinned by name by the loader)
//! <pin dir>/link_skein_connect4 ...  links: an attachment lives as long as its pin
//! ```
//! A second `install` on the same pin dir reuses the pinned maps and keeps every link
//! whose program is unchanged (same tag), so open connections and NAT state survive a
//! restart; a link running different code (an older binary) is replaced: the new
//! program is attached first, then the old link unpinned.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, loaded_programs,
};
use aya::{Ebpf, EbpfLoader, VerifierLogLevel};

use crate::Error;
use crate::maps::*;
use crate::reconcile::{MapState, MapWriter, Op};

/// The compiled socket-hook object (`bpf/cgroup_sock.c`).
pub static CGROUP_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgroup_sock.o"));
/// The compiled tc object (`bpf/tc_nodeport.c`).
pub static TC_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_nodeport.o"));

const CGROUP_PROGRAMS: &[&str] = &[
    PROG_CONNECT4,
    PROG_SENDMSG4,
    PROG_RECVMSG4,
    PROG_GETPEERNAME4,
];

/// Where and what to attach.
#[derive(Debug, Clone)]
pub struct InstallConfig {
    /// Pin dir, `/sys/fs/bpf/skein/<node>`.
    pub pin_dir: PathBuf,
    /// The pods' cgroup v2 subtree (never the root cgroup); `None` = no ClusterIP hooks.
    pub cgroup: Option<PathBuf>,
    /// The uplink in the current network namespace; `None` = no NodePort.
    pub uplink: Option<String>,
    /// This node's address, the SNAT source for remote backends.
    pub node_ip: Option<Ipv4Addr>,
    /// Pod routing between nodes in eBPF (off = `None`: the bridge and the node's
    /// forwarding carry pod traffic).
    pub pod_routing: Option<PodRouting>,
}

/// What `install` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Programs attached now.
    pub attached: Vec<&'static str>,
    /// Programs whose pinned link from an earlier run was kept (same program).
    pub kept: Vec<&'static str>,
    /// Programs whose pinned link ran different code (an older binary): the new program
    /// was attached first, then the old link removed.
    pub replaced: Vec<&'static str>,
}

fn link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("link_{program}"))
}

/// Refuses the root cgroup and anything that is not a cgroup v2 directory: only a
/// non-root cgroup2 directory has `cgroup.events`.
pub fn check_cgroup(path: &Path) -> Result<(), Error> {
    if !path.join("cgroup.events").exists() {
        return Err(Error::Config(format!(
            "{} is not a non-root cgroup v2 directory (the hooks never attach to the root cgroup)",
            path.display()
        )));
    }
    Ok(())
}

fn load(object: &'static str, bytes: &[u8], pin_dir: &Path) -> Result<Ebpf, Error> {
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
        .load(bytes)
        .map_err(|e| Error::Load {
            object,
            source: Box::new(e),
        })
}

/// The tag (hash of the instructions, map references left out) of the program behind a
/// pinned link; `None` when it cannot be read.
fn pinned_program_tag(pin: &Path) -> Option<u64> {
    let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
    let id = link.info().ok()?.program_id();
    loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| p.tag())
}

/// Decides what to do with a program before attaching it: `true` = the pinned link
/// already runs this very program (keep it). Otherwise the caller attaches the new one
/// and then calls [`swap_pin`].
fn keep_pinned(pin: &Path, new_tag: Option<u64>) -> bool {
    pin.exists() && new_tag.is_some() && pinned_program_tag(pin) == new_tag
}

/// Pins `link` at `pin`, replacing (and so detaching) a link pinned there before.
/// Returns whether one was replaced.
fn swap_pin(link: FdLink, pin: &Path) -> Result<bool, Error> {
    let replaced = pin.exists();
    if replaced {
        std::fs::remove_file(pin)
            .map_err(Error::io(format!("unpin old link {}", pin.display())))?;
    }
    pin_link(link, pin)?;
    Ok(replaced)
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), Error> {
    link.pin(path).map(drop).map_err(|e| Error::Pin {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The standard bpffs mount point.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Makes sure the pin dir is on a bpffs: when it lies under /sys/fs/bpf and nothing is
/// mounted there yet, mounts bpffs there (as systemd does at boot, and as Cilium does
/// when it is missing). Serialised with a lock so two proxies never stack two mounts.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), Error> {
    let root = Path::new(BPFFS);
    if !pin_dir.starts_with(root) {
        let parent = pin_dir.ancestors().find(|p| p.exists()).unwrap_or(root);
        if is_bpffs(parent) {
            return Ok(());
        }
        return Err(Error::Config(format!(
            "pin dir {} is not on a bpf filesystem (mount one: mount -t bpf bpffs <dir>)",
            pin_dir.display()
        )));
    }
    if is_bpffs(root) {
        return Ok(());
    }
    let lock_path = Path::new("/run/skein-proxy-bpffs.lock");
    let lock = std::fs::File::create(lock_path)
        .map_err(Error::io(format!("create {}", lock_path.display())))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(format!("lock {}", lock_path.display()))(e.into()))?;
    if is_bpffs(root) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpffs"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| Error::io(format!("mount bpffs at {BPFFS}"))(e.into()))?;
    tracing::info!(path = BPFFS, "mounted bpffs");
    Ok(())
}

/// Loads, attaches and pins everything `cfg` asks for. Maps are created (or reused when
/// pinned) under the pin dir. On failure, what this call attached is detached again.
pub fn install(cfg: &InstallConfig) -> Result<InstallReport, Error> {
    // Bad input is refused before anything is made.
    if let Some(cgroup) = &cfg.cgroup {
        check_cgroup(cgroup)?;
    }
    ensure_bpffs(&cfg.pin_dir)?;
    let fresh = !cfg.pin_dir.exists();
    std::fs::create_dir_all(&cfg.pin_dir).map_err(Error::io(format!(
        "create pin dir {}",
        cfg.pin_dir.display()
    )))?;
    let mut report = InstallReport::default();
    let result = install_inner(cfg, &mut report);
    if result.is_err() {
        if fresh {
            // Nothing was here before: remove everything this call made, maps included.
            let _ = cleanup(&cfg.pin_dir);
        } else {
            for p in &report.attached {
                let _ = std::fs::remove_file(link_pin(&cfg.pin_dir, p));
            }
        }
    }
    result.map(|()| report)
}

/// Keeps the link pinned at `pin` when its program has `tag` (the same code); otherwise
/// attaches anew (`attach`) and pins the new link in place of the old one. Reports which.
fn pin_attached(
    report: &mut InstallReport,
    name: &'static str,
    pin: &Path,
    tag: Option<u64>,
    attach: impl FnOnce() -> Result<FdLink, Error>,
) -> Result<(), Error> {
    if keep_pinned(pin, tag) {
        report.kept.push(name);
    } else if swap_pin(attach()?, pin)? {
        report.replaced.push(name);
    } else {
        report.attached.push(name);
    }
    Ok(())
}

/// A program's link as a pinnable fd link (pinned at `pin`).
fn fd_link<L: TryInto<FdLink, Error = aya::programs::links::LinkError>>(
    link: L,
    pin: &Path,
) -> Result<FdLink, Error> {
    link.try_into().map_err(|e| Error::Pin {
        path: pin.to_path_buf(),
        reason: e.to_string(),
    })
}

fn install_inner(cfg: &InstallConfig, report: &mut InstallReport) -> Result<(), Error> {
    // Both objects are always loaded: that creates or reuses every pinned map.
    let mut cg = load("cgroup_sock.o", CGROUP_OBJ, &cfg.pin_dir)?;
    let mut tc = load("tc_nodeport.o", TC_OBJ, &cfg.pin_dir)?;

    if let Some(cgroup) = &cfg.cgroup {
        let dir = std::fs::File::open(cgroup)
            .map_err(Error::io(format!("open cgroup {}", cgroup.display())))?;
        for &name in CGROUP_PROGRAMS {
            let pin = link_pin(&cfg.pin_dir, name);
            let prog_err = |e| Error::Program {
                program: name,
                source: Box::new(e),
            };
            let prog: &mut CgroupSockAddr = cg
                .program_mut(name)
                .ok_or_else(|| Error::Config(format!("program {name} missing from cgroup_sock.o")))?
                .try_into()
                .map_err(prog_err)?;
            prog.load().map_err(prog_err)?;
            let tag = prog.info().ok().map(|i| i.tag());
            pin_attached(report, name, &pin, tag, || {
                let id = prog
                    .attach(&dir, CgroupAttachMode::default())
                    .map_err(|e| Error::Attach {
                        program: name,
                        target: cgroup.display().to_string(),
                        source: Box::new(e),
                    })?;
                fd_link(prog.take_link(id).map_err(prog_err)?, &pin)
            })?;
        }
    }

    if let Some(uplink) = &cfg.uplink {
        for (name, kind) in [
            (PROG_TC_INGRESS, TcAttachType::Ingress),
            (PROG_TC_EGRESS, TcAttachType::Egress),
        ] {
            let pin = link_pin(&cfg.pin_dir, name);
            let prog_err = |e| Error::Program {
                program: name,
                source: Box::new(e),
            };
            let prog: &mut SchedClassifier = tc
                .program_mut(name)
                .ok_or_else(|| Error::Config(format!("program {name} missing from tc_nodeport.o")))?
                .try_into()
                .map_err(prog_err)?;
            prog.load().map_err(prog_err)?;
            let tag = prog.info().ok().map(|i| i.tag());
            pin_attached(report, name, &pin, tag, || {
                let id = prog.attach(uplink, kind).map_err(|e| Error::Attach {
                    program: name,
                    target: uplink.clone(),
                    source: Box::new(e),
                })?;
                fd_link(prog.take_link(id).map_err(prog_err)?, &pin)
            })?;
        }
    }

    if let Some(ip) = cfg.node_ip {
        let map = tc
            .map_mut(MAP_CFG)
            .ok_or_else(|| Error::Config(format!("map {MAP_CFG} missing")))?;
        let mut arr: Array<&mut MapData, NodeCfg> =
            Array::try_from(map).map_err(Error::map(MAP_CFG))?;
        arr.set(
            0,
            NodeCfg {
                node_addr: ip.octets(),
                pad: 0,
            },
            0,
        )
        .map_err(Error::map(MAP_CFG))?;
    }
    // Dropping the Ebpf objects here releases only their own fds: the pins keep the
    // maps and the links (and through them the programs) alive.
    Ok(())
}

/// Removes everything under the pin dir: pod routing's filters, links (which detaches
/// the programs), then maps, then the dir. Keeps going past failures and reports them
/// all.
pub fn cleanup(pin_dir: &Path) -> Result<(), Error> {
    // Pod routing's filters are not pinned: they hang on the pods' veths.
    detach_pod_routing()?;
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("read {}", pin_dir.display()))(e)),
    };
    let (links, rest): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("link_"))
    });
    for p in links.iter().chain(rest.iter()) {
        if let Err(e) = std::fs::remove_file(p) {
            problems.push(format!("remove {}: {e}", p.display()));
        }
    }
    if let Err(e) = std::fs::remove_dir(pin_dir) {
        problems.push(format!("remove {}: {e}", pin_dir.display()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "cleanup left problems: {}",
            problems.join("; ")
        )))
    }
}

/// Whether the programs of this pin dir are attached (their link pins exist).
pub fn installed(pin_dir: &Path) -> Vec<&'static str> {
    CGROUP_PROGRAMS
        .iter()
        .chain([PROG_TC_INGRESS, PROG_TC_EGRESS].iter())
        .copied()
        .filter(|p| link_pin(pin_dir, p).exists())
        .collect()
}

fn open_map(pin_dir: &Path, name: &'static str) -> Result<Map, Error> {
    let data = MapData::from_pin(pin_dir.join(name)).map_err(Error::map(name))?;
    Map::from_map_data(data).map_err(Error::map(name))
}

/// The pinned maps the reconciler writes, opened from the pin dir.
pub struct BpfMaps {
    svc: HashMap<MapData, SvcKey, SvcValue>,
    be: HashMap<MapData, BeKey, Backend>,
    maglev: HashMap<MapData, u32, MaglevTable>,
    names: HashMap<MapData, u32, GroupName>,
    conns: PerCpuArray<MapData, u64>,
    ct: HashMap<MapData, Tuple, CtValue>,
}

impl std::fmt::Debug for BpfMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfMaps").finish_non_exhaustive()
    }
}

impl BpfMaps {
    /// Opens the maps pinned under `pin_dir` (made by [`install`]).
    pub fn open(pin_dir: &Path) -> Result<BpfMaps, Error> {
        Ok(BpfMaps {
            svc: HashMap::try_from(open_map(pin_dir, MAP_SVC)?).map_err(Error::map(MAP_SVC))?,
            be: HashMap::try_from(open_map(pin_dir, MAP_BE)?).map_err(Error::map(MAP_BE))?,
            maglev: HashMap::try_from(open_map(pin_dir, MAP_MAGLEV)?)
                .map_err(Error::map(MAP_MAGLEV))?,
            names: HashMap::try_from(open_map(pin_dir, MAP_NAMES)?)
                .map_err(Error::map(MAP_NAMES))?,
            conns: PerCpuArray::try_from(open_map(pin_dir, MAP_CONNS)?)
                .map_err(Error::map(MAP_CONNS))?,
            ct: HashMap::try_from(open_map(pin_dir, MAP_CT)?).map_err(Error::map(MAP_CT))?,
        })
    }

    /// Reads what the four reconciled maps hold.
    pub fn read_state(&self) -> Result<MapState, Error> {
        let mut st = MapState::default();
        for kv in self.svc.iter() {
            let (k, v) = kv.map_err(Error::map(MAP_SVC))?;
            st.svc.insert(k, v);
        }
        for kv in self.be.iter() {
            let (k, v) = kv.map_err(Error::map(MAP_BE))?;
            st.be.insert(k, v);
        }
        for kv in self.maglev.iter() {
            let (k, v) = kv.map_err(Error::map(MAP_MAGLEV))?;
            st.maglev.insert(k, Box::new(v));
        }
        for kv in self.names.iter() {
            let (k, v) = kv.map_err(Error::map(MAP_NAMES))?;
            st.names.insert(k, v);
        }
        Ok(st)
    }

    /// Every group id with its name, sorted by id.
    pub fn group_names(&self) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .names
            .iter()
            .filter_map(|kv| kv.ok())
            .map(|(id, n)| (id, n.as_str()))
            .collect();
        v.sort();
        v
    }

    /// New connections counted for `group` (summed over CPUs).
    pub fn connections(&self, group: u32) -> Result<u64, Error> {
        let v = self.conns.get(&group, 0).map_err(Error::map(MAP_CONNS))?;
        Ok(v.iter().sum())
    }

    /// Whether a frontend is present (for latency measurements).
    pub fn has_frontend(&self, key: &SvcKey) -> bool {
        self.svc.get(key, 0).is_ok()
    }

    /// The backend in slot `slot` of the frontend `key`, if both exist.
    pub fn backend(&self, key: &SvcKey, slot: u32) -> Option<Backend> {
        let svc = self.svc.get(key, 0).ok()?;
        self.be
            .get(
                &BeKey {
                    group: svc.group,
                    slot,
                },
                0,
            )
            .ok()
    }

    /// Removes the tc conntrack entries of UDP flows in `groups` whose backend is not in
    /// `live` any more, so their next datagram is balanced afresh (as kube-proxy clears
    /// conntrack for UDP endpoints that left; TCP flows are left to end on their own).
    /// Returns how many went.
    pub fn purge_udp_flows(
        &mut self,
        groups: &std::collections::BTreeSet<u32>,
        live: &std::collections::BTreeSet<(u32, [u8; 4], [u8; 2])>,
    ) -> Result<usize, Error> {
        let stale: Vec<Tuple> = self
            .ct
            .iter()
            .filter_map(|kv| kv.ok())
            .filter(|(k, v)| {
                k.proto == libc::IPPROTO_UDP as u8
                    && groups.contains(&v.group)
                    && !live.contains(&(v.group, v.backend_addr, v.backend_port))
            })
            .map(|(k, _)| k)
            .collect();
        for k in &stale {
            ignore_missing(self.ct.remove(k)).map_err(Error::map(MAP_CT))?;
        }
        Ok(stale.len())
    }

    /// Number of tc conntrack entries.
    pub fn conntrack_entries(&self) -> usize {
        self.ct.keys().filter(|k| k.is_ok()).count()
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

impl MapWriter for BpfMaps {
    fn write(&mut self, op: &Op) -> Result<(), Error> {
        match op {
            Op::PutBackend(k, v) => self.be.insert(k, v, 0).map_err(Error::map(MAP_BE)),
            Op::PutMaglev(k, v) => self
                .maglev
                .insert(k, **v, 0)
                .map_err(Error::map(MAP_MAGLEV)),
            Op::PutName(k, v) => self.names.insert(k, v, 0).map_err(Error::map(MAP_NAMES)),
            Op::PutSvc(k, v) => self.svc.insert(k, v, 0).map_err(Error::map(MAP_SVC)),
            Op::DelSvc(k) => ignore_missing(self.svc.remove(k)).map_err(Error::map(MAP_SVC)),
            Op::DelBackend(k) => ignore_missing(self.be.remove(k)).map_err(Error::map(MAP_BE)),
            Op::DelMaglev(k) => {
                ignore_missing(self.maglev.remove(k)).map_err(Error::map(MAP_MAGLEV))
            }
            Op::DelName(k) => ignore_missing(self.names.remove(k)).map_err(Error::map(MAP_NAMES)),
        }
    }
}

/// Pod routing: which bridge the pods hang off and the cluster's pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRouting {
    /// The pods' bridge (`cni0`); its IPv4 address names this node's pod subnet.
    pub bridge: String,
    /// The cluster's pod network (flannel's `Network`), address and prefix length.
    pub cluster: (Ipv4Addr, u8),
}

/// Attaches `skein_tc_pod` to the ingress of every port of the pods' bridge (the pods'
/// host-side veths) and keeps the pod routing config in `skein_podnet`. The attachments
/// are tc filters (netlink), which live as long as the veth: a deleted pod takes its
/// own with it. [`PodRouter::sync`] picks up pods started since.
pub struct PodRouter {
    tc: Ebpf,
    routing: PodRouting,
    uplink_index: u32,
    /// The bridge's ifindex and subnet the config was written for, or why there is none.
    bridge: Result<(u32, (Ipv4Addr, u8)), String>,
    attached: std::collections::HashSet<u32>,
}

impl std::fmt::Debug for PodRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRouter")
            .field("routing", &self.routing)
            .field("bridge", &self.bridge)
            .field("attached", &self.attached)
            .finish()
    }
}

fn nl_err(what: String) -> impl FnOnce(skein_netns::netlink::NetlinkError) -> Error {
    move |e| Error::Config(format!("{what}: {e}"))
}

impl PodRouter {
    /// Loads the program (maps from `pin_dir`, where [`install`] pinned them) and, when
    /// `routing`'s bridge is there, writes the config for it and `uplink` and attaches to
    /// the bridge's ports ([`PodRouter::waiting_for`] says when it is not).
    pub fn start(pin_dir: &Path, routing: PodRouting, uplink: &str) -> Result<PodRouter, Error> {
        let mut nl =
            skein_netns::netlink::Netlink::open().map_err(nl_err("open netlink".to_owned()))?;
        let uplink_index = nl
            .link(uplink)
            .map_err(nl_err(format!("look up {uplink}")))?
            .ok_or_else(|| Error::Config(format!("pod routing: uplink {uplink} does not exist")))?
            .index;
        let mut tc = load("tc_nodeport.o", TC_OBJ, pin_dir)?;
        let prog: &mut SchedClassifier = tc
            .program_mut(PROG_TC_POD)
            .ok_or_else(|| Error::Config(format!("program {PROG_TC_POD} missing")))?
            .try_into()
            .map_err(|e| Error::Program {
                program: PROG_TC_POD,
                source: Box::new(e),
            })?;
        prog.load().map_err(|e| Error::Program {
            program: PROG_TC_POD,
            source: Box::new(e),
        })?;
        let mut router = PodRouter {
            tc,
            routing,
            uplink_index,
            bridge: Err(String::new()),
            attached: Default::default(),
        };
        router.sync()?;
        Ok(router)
    }

    /// Why pod routing is not on yet (the bridge is missing or has no IPv4 address: the
    /// CNI plugin makes it with the first pod), or `None` when it is.
    pub fn waiting_for(&self) -> Option<&str> {
        self.bridge.as_ref().err().map(String::as_str)
    }

    /// Finds the bridge and its subnet; writes the config when they are new (the bridge
    /// made by the first pod, or made again).
    fn find_bridge(
        &mut self,
        nl: &mut skein_netns::netlink::Netlink,
        links: &[skein_netns::netlink::Link],
    ) -> Result<Option<u32>, Error> {
        let name = &self.routing.bridge;
        let Some(bridge) = links.iter().find(|l| &l.name == name) else {
            self.bridge = Err(format!(
                "pod routing: bridge {name} does not exist (the CNI plugin makes it with the first pod)"
            ));
            return Ok(None);
        };
        let subnet = nl
            .addresses(Some(bridge.index))
            .map_err(nl_err(format!("addresses of {name}")))?
            .into_iter()
            .find_map(|a| match a.addr {
                std::net::IpAddr::V4(v4) => Some((v4, a.prefix_len)),
                _ => None,
            });
        let Some(subnet) = subnet else {
            self.bridge = Err(format!(
                "pod routing: bridge {name} has no IPv4 address (the pods' gateway)"
            ));
            return Ok(None);
        };
        if self.bridge != Ok((bridge.index, subnet)) {
            let map = self
                .tc
                .map_mut(MAP_PODNET)
                .ok_or_else(|| Error::Config(format!("map {MAP_PODNET} missing")))?;
            let mut arr: Array<&mut MapData, PodNetCfg> =
                Array::try_from(map).map_err(Error::map(MAP_PODNET))?;
            let cfg = PodNetCfg::new(
                bridge.index,
                self.uplink_index,
                self.routing.cluster,
                subnet,
            );
            arr.set(0, cfg, 0).map_err(Error::map(MAP_PODNET))?;
            self.bridge = Ok((bridge.index, subnet));
        }
        Ok(Some(bridge.index))
    }

    /// Attaches to ports that joined the bridge since the last call (replacing a filter
    /// an earlier run left there); returns how many.
    pub fn sync(&mut self) -> Result<usize, Error> {
        let mut nl =
            skein_netns::netlink::Netlink::open().map_err(nl_err("open netlink".to_owned()))?;
        let links = nl.links().map_err(nl_err("list links".to_owned()))?;
        let Some(bridge) = self.find_bridge(&mut nl, &links)? else {
            return Ok(0);
        };
        let ports: Vec<_> = links.iter().filter(|l| l.master == Some(bridge)).collect();
        self.attached
            .retain(|i| ports.iter().any(|l| l.index == *i));
        let program = PROG_TC_POD;
        let prog: &mut SchedClassifier = self
            .tc
            .program_mut(program)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| Error::Config(format!("program {program} missing")))?;
        let mut added = 0;
        for link in ports {
            if self.attached.contains(&link.index) {
                continue;
            }
            // A device that vanished meanwhile (a pod deleted) is not an error.
            let _ = aya::programs::tc::qdisc_add_clsact(&link.name);
            let _ =
                aya::programs::tc::qdisc_detach_program(&link.name, TcAttachType::Ingress, program);
            let attached = prog.attach_with_options(
                &link.name,
                TcAttachType::Ingress,
                aya::programs::tc::TcAttachOptions::Netlink(Default::default()),
            );
            match attached {
                Ok(id) => {
                    // The filter stays when this process ends (until the device goes):
                    // the link handle is let go without detaching.
                    if let Ok(handle) = prog.take_link(id) {
                        std::mem::forget(handle);
                    }
                    self.attached.insert(link.index);
                    added += 1;
                }
                Err(e) => {
                    let gone = nl.link(&link.name).ok().flatten().is_none();
                    if !gone {
                        return Err(Error::Attach {
                            program,
                            target: link.name.clone(),
                            source: Box::new(e),
                        });
                    }
                }
            }
        }
        Ok(added)
    }

    /// The pods' veths the program is attached to.
    pub fn attached(&self) -> usize {
        self.attached.len()
    }
}

/// Removes `skein_tc_pod` from every bridge port of the current namespace (cleanup, and
/// pod routing turned off): the filters outlive the proxy otherwise.
pub fn detach_pod_routing() -> Result<usize, Error> {
    let mut nl =
        skein_netns::netlink::Netlink::open().map_err(nl_err("open netlink".to_owned()))?;
    let links = nl.links().map_err(nl_err("list links".to_owned()))?;
    Ok(links
        .iter()
        .filter(|link| link.master.is_some())
        .filter(|link| {
            aya::programs::tc::qdisc_detach_program(&link.name, TcAttachType::Ingress, PROG_TC_POD)
                .is_ok()
        })
        .count())
}

/// Starts pod routing when `cfg` asks for it (after [`install`]); otherwise turns off
/// what an earlier run with pod routing left (the config and the veth filters).
pub fn setup_pod_routing(cfg: &InstallConfig) -> Result<Option<PodRouter>, Error> {
    match &cfg.pod_routing {
        Some(routing) => {
            let Some(uplink) = &cfg.uplink else {
                return Err(Error::Config(
                    "pod routing needs the uplink programs (give --uplink)".into(),
                ));
            };
            PodRouter::start(&cfg.pin_dir, routing.clone(), uplink).map(Some)
        }
        None => {
            disable_pod_routing(&cfg.pin_dir)?;
            detach_pod_routing()?;
            Ok(None)
        }
    }
}

/// Turns pod routing off in the maps (the programs pass everything to the stack).
pub fn disable_pod_routing(pin_dir: &Path) -> Result<(), Error> {
    let path = pin_dir.join(MAP_PODNET);
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(Error::map(MAP_PODNET))?;
    let mut arr: Array<MapData, PodNetCfg> =
        Array::try_from(Map::Array(data)).map_err(Error::map(MAP_PODNET))?;
    arr.set(0, PodNetCfg::default(), 0)
        .map_err(Error::map(MAP_PODNET))
}
