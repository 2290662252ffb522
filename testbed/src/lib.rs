//! The local-cluster test bed: a whole cluster's network on one machine, in namespaces.
//!
//! ```text
//!            <prefix>-fabric  (bridge br0, the "physical" L2 network 198.51.100.0/24)
//!     ┌──────────┬──────────┬──────────┬───────────┬──────────────┐
//!   node1      node2      nodeN      outside      etcd (or etcd1..3)
//!  .11/eth0   .12/eth0   .10+N      .200/eth0    .2 (.2 .3 .4)/eth0
//! ```
//!
//! [`TestBed::start`] builds it from a [`Config`]: namespaces `<prefix>-fabric`,
//! `<prefix>-node1`.., `<prefix>-outside`, `<prefix>-etcd` (or `-etcd1`..`-etcd3`), each
//! with `lo` up; a veth from every host into the fabric bridge (created inside the
//! namespaces, never in the root one); a real etcd listening only on its namespace
//! address; and per-node state ([`NodeDirs`]: CNI config and IPAM dirs, subnet file,
//! BPF pin dir, a cgroup v2 subtree). Processes run inside a namespace with
//! [`Host::command`] and [`Host::spawn`]. Dropping the bed (also while a test panics)
//! stops every process in its namespaces and removes everything it made; [`sweep`] does
//! the same by prefix after a crash (`skeinctl down`).

mod etcd;
mod ip;
mod lock;
mod process;
pub mod snapshot;
pub mod stats;
mod sweep;

pub use etcd::{CLIENT_PORT as ETCD_CLIENT_PORT, Etcd, EtcdMember, http_get};
pub use lock::{BedLock, exclusive_lock, join_shared_lock, shared_lock};
pub use process::{Daemon, DetachedDaemon, run_checked};
pub use sweep::{SweepReport, sweep, sweep_all};

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use skein_netns::NetNs;

/// Root of all test-bed and local-cluster state on the machine (tmpfs, like /run/netns).
pub const STATE_ROOT: &str = "/run/skein";
/// The fabric network every host is on (TEST-NET-2, never the machine's own uplink).
pub const FABRIC_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
/// Prefix length of [`FABRIC_NET`].
pub const FABRIC_PREFIX: u8 = 24;
/// Address of the `outside` host.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
/// Most nodes one bed can hold (their addresses are .11 to .110).
pub const MAX_NODES: usize = 100;

/// Errors while building or using the test bed; each names the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid test bed config: {0}")]
    Config(String),
    #[error(transparent)]
    NetNs(#[from] skein_netns::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Which etcd the bed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdMode {
    /// No etcd.
    None,
    /// One member in `<prefix>-etcd` at 198.51.100.2.
    Single,
    /// Three members in `<prefix>-etcd1..3` at 198.51.100.2-4 (for failure tests).
    Cluster3,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name prefix for every namespace and the state dir; unique by default.
    pub prefix: Option<String>,
    /// Number of node namespaces.
    pub nodes: usize,
    /// Add the `outside` namespace (an external client on the fabric).
    pub outside: bool,
    /// Which etcd to start.
    pub etcd: EtcdMode,
    /// Make a cgroup v2 subtree per node.
    pub cgroups: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: None,
            nodes: 3,
            outside: true,
            etcd: EtcdMode::Single,
            cgroups: true,
        }
    }
}

/// A unique prefix (`skt` + 6 base-36 chars) so beds of parallel tests never collide.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut n = (u64::from(std::process::id()) << 20)
        ^ nanos.rotate_left(17)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut s = String::from("skt");
    for _ in 0..6 {
        let d = (n % 36) as u32;
        s.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}

/// Checks a prefix: it becomes part of namespace and directory names.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !prefix.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "prefix {prefix:?} must be 1-32 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

/// A host on the fabric: a node, the outside client, or an etcd member.
#[derive(Debug)]
pub struct Host {
    /// Short name: `node1`, `outside`, `etcd`, `etcd2`.
    pub name: String,
    /// Its namespace, `<prefix>-<name>`.
    pub netns: NetNs,
    /// Its `eth0` address on the fabric.
    pub addr: Ipv4Addr,
}

impl Host {
    /// The namespace name (`<prefix>-<name>`), usable with `ip -n`.
    pub fn netns_name(&self) -> &str {
        self.netns.name().unwrap_or_default()
    }

    /// A command that runs inside this host's namespace (in its own process group).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        Ok(self.netns.command(program)?)
    }

    /// Runs a command inside the namespace to completion; fails with its stderr when it
    /// exits non-zero.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(program)?;
        cmd.args(args);
        run_checked(&mut cmd)
    }

    /// Starts a long-lived process inside the namespace, its output going to `log`.
    pub fn spawn(&self, name: &str, cmd: Command, log: &Path) -> Result<Daemon> {
        Daemon::spawn(name, cmd, log)
    }

    /// Runs `f` on a thread inside this host's namespace.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        Ok(self.netns.run(f)?)
    }

    /// Binds a TCP listener inside this namespace (the socket stays in it).
    pub fn listen_tcp(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.in_netns(|| TcpListener::bind(addr))?
            .map_err(io_err(format!("bind {addr} in {}", self.name)))
    }

    /// Opens a TCP connection from inside this namespace.
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.in_netns(|| TcpStream::connect_timeout(&addr, timeout))?
            .map_err(io_err(format!("connect from {} to {addr}", self.name)))
    }
}

/// Per-node state, so that nodes never share files.
#[derive(Debug, Clone)]
pub struct NodeDirs {
    /// The node's state dir (`/run/skein/<prefix>/<node>`).
    pub root: PathBuf,
    /// CNI config dir (the runtime's `/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// IPAM data dir (host-local's `/var/lib/cni/networks`).
    pub ipam_data_dir: PathBuf,
    /// flanneld's subnet file (`/run/flannel/subnet.env`).
    pub subnet_file: PathBuf,
    /// BPF pin dir (`/sys/fs/bpf/skein/<prefix>-<node>`), created by the proxy.
    pub bpf_pin_dir: PathBuf,
    /// This node's cgroup v2 subtree, when the bed made cgroups.
    pub cgroup: Option<PathBuf>,
    /// Logs of the daemons started for this node.
    pub log_dir: PathBuf,
}

/// A node of the local cluster.
#[derive(Debug)]
pub struct Node {
    /// The node's host on the fabric.
    pub host: Host,
    /// Its state.
    pub dirs: NodeDirs,
}

impl std::ops::Deref for Node {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

/// The running test bed. Dropping it tears everything down.
#[derive(Debug)]
pub struct TestBed {
    prefix: String,
    state_dir: PathBuf,
    cgroup_dir: Option<PathBuf>,
    /// The fabric namespace (bridge `br0`).
    pub fabric: Option<NetNs>,
    /// The nodes, `node1`..`nodeN`.
    pub nodes: Vec<Node>,
    /// The external client, when configured.
    pub outside: Option<Host>,
    /// etcd, when configured.
    pub etcd: Option<Etcd>,
    daemons: Vec<Daemon>,
    kept: bool,
    _lock: Option<BedLock>,
}

impl TestBed {
    /// Builds the bed. On any failure, what was already made is removed before the error
    /// is returned.
    pub fn start(config: Config) -> Result<TestBed> {
        if config.nodes > MAX_NODES {
            return Err(Error::Config(format!(
                "{} nodes asked, at most {MAX_NODES}",
                config.nodes
            )));
        }
        let prefix = config.prefix.clone().unwrap_or_else(unique_prefix);
        validate_prefix(&prefix)?;
        let lock = lock::shared_lock()?;
        let state_dir = Path::new(STATE_ROOT).join(&prefix);
        if state_dir.exists()
            || Path::new(skein_netns::NETNS_RUN_DIR)
                .join(format!("{prefix}-fabric"))
                .exists()
        {
            return Err(Error::Config(format!(
                "a test bed named {prefix:?} already exists (remove it with `skeinctl down --name {prefix}`)"
            )));
        }
        std::fs::create_dir_all(&state_dir)
            .map_err(io_err(format!("create {}", state_dir.display())))?;
        let mut bed = TestBed {
            prefix,
            state_dir,
            cgroup_dir: None,
            fabric: None,
            nodes: Vec::new(),
            outside: None,
            etcd: None,
            daemons: Vec::new(),
            kept: false,
            _lock: Some(lock),
        };
        // `bed` owns everything from here on: an early return drops it, which tears down.
        bed.build(&config)?;
        Ok(bed)
    }

    fn build(&mut self, config: &Config) -> Result<()> {
        let fabric = NetNs::create(&format!("{}-fabric", self.prefix))?;
        let fabric_name = fabric.name().unwrap_or_default().to_owned();
        self.fabric = Some(fabric);
        ip::run(&fabric_name, &["link", "set", "lo", "up"])?;
        ip::run(&fabric_name, &["link", "add", "br0", "type", "bridge"])?;
        ip::run(&fabric_name, &["link", "set", "br0", "up"])?;

        if config.cgroups {
            let base = cgroup2_mount()?.join("skein").join(&self.prefix);
            std::fs::create_dir_all(&base)
                .map_err(io_err(format!("create cgroup {}", base.display())))?;
            self.cgroup_dir = Some(base);
        }

        for i in 1..=config.nodes {
            let name = format!("node{i}");
            let host = self.add_host(&name, Ipv4Addr::new(198, 51, 100, 10 + i as u8))?;
            let dirs = self.node_dirs(&name)?;
            self.nodes.push(Node { host, dirs });
        }
        if config.outside {
            self.outside = Some(self.add_host("outside", OUTSIDE_ADDR)?);
        }
        match config.etcd {
            EtcdMode::None => {}
            EtcdMode::Single => {
                let host = self.add_host("etcd", Ipv4Addr::new(198, 51, 100, 2))?;
                self.etcd = Some(Etcd::start(&self.prefix, &self.state_dir, vec![host])?);
            }
            EtcdMode::Cluster3 => {
                let mut hosts = Vec::new();
                for i in 1..=3u8 {
                    hosts.push(
                        self.add_host(&format!("etcd{i}"), Ipv4Addr::new(198, 51, 100, 1 + i))?,
                    );
                }
                self.etcd = Some(Etcd::start(&self.prefix, &self.state_dir, hosts)?);
            }
        }
        Ok(())
    }

    /// Adds a namespace `<prefix>-<name>` linked to the fabric bridge, `eth0` = `addr`/24.
    pub fn add_host(&self, name: &str, addr: Ipv4Addr) -> Result<Host> {
        let fabric = self.fabric_name();
        let netns = NetNs::create(&format!("{}-{name}", self.prefix))?;
        let ns = netns.name().unwrap_or_default().to_owned();
        let wire = || -> Result<()> {
            ip::run(&ns, &["link", "set", "lo", "up"])?;
            // Both ends are made inside namespaces: nothing ever appears in the root one.
            ip::run(
                fabric,
                &[
                    "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            ip::run(fabric, &["link", "set", name, "master", "br0", "up"])?;
            ip::run(
                &ns,
                &[
                    "addr",
                    "add",
                    &format!("{addr}/{FABRIC_PREFIX}"),
                    "dev",
                    "eth0",
                ],
            )?;
            ip::run(&ns, &["link", "set", "eth0", "up"]).map(drop)
        };
        if let Err(e) = wire() {
            // Roll back: deleting the namespace also removes a veth made into it.
            let _ = ip::run(fabric, &["link", "del", name]);
            drop(netns);
            let _ = NetNs::delete_named(&ns);
            return Err(e);
        }
        Ok(Host {
            name: name.to_owned(),
            netns,
            addr,
        })
    }

    fn node_dirs(&self, node: &str) -> Result<NodeDirs> {
        let root = self.state_dir.join(node);
        let dirs = NodeDirs {
            cni_conf_dir: root.join("cni/net.d"),
            ipam_data_dir: root.join("cni/networks"),
            subnet_file: root.join("flannel/subnet.env"),
            bpf_pin_dir: Path::new("/sys/fs/bpf/skein").join(format!("{}-{node}", self.prefix)),
            cgroup: self.cgroup_dir.as_ref().map(|c| c.join(node)),
            log_dir: root.join("log"),
            root,
        };
        for d in [&dirs.cni_conf_dir, &dirs.ipam_data_dir, &dirs.log_dir] {
            std::fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
        }
        if let Some(parent) = dirs.subnet_file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("create {}", parent.display())))?;
        }
        if let Some(cg) = &dirs.cgroup {
            std::fs::create_dir_all(cg)
                .map_err(io_err(format!("create cgroup {}", cg.display())))?;
        }
        Ok(dirs)
    }

    /// The bed's name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bed's state dir (`/run/skein/<prefix>`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The fabric namespace's name.
    pub fn fabric_name(&self) -> &str {
        self.fabric
            .as_ref()
            .and_then(|f| f.name())
            .unwrap_or_default()
    }

    /// Node `i`, counting from 1 as the names do.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    /// The outside host; panics when the bed was made without one.
    pub fn outside(&self) -> &Host {
        self.outside
            .as_ref()
            .expect("test bed made without an outside host")
    }

    /// etcd; panics when the bed was made without one.
    pub fn etcd(&self) -> &Etcd {
        self.etcd.as_ref().expect("test bed made without etcd")
    }

    /// etcd, mutable (to stop or kill a member).
    pub fn etcd_mut(&mut self) -> &mut Etcd {
        self.etcd.as_mut().expect("test bed made without etcd")
    }

    /// Keeps a daemon under the bed's care: it is stopped at teardown (before the
    /// namespaces go).
    pub fn adopt(&mut self, daemon: Daemon) {
        self.daemons.push(daemon);
    }

    /// Pids of every process the bed started itself (etcd and adopted daemons).
    pub fn started_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.daemons.iter().map(|d| d.pid()).collect();
        if let Some(etcd) = &self.etcd {
            pids.extend(
                etcd.members
                    .iter()
                    .filter_map(|m| m.daemon.as_ref().map(|d| d.pid())),
            );
        }
        pids
    }

    /// Checks TCP from `from` to `to` (port `port` on `to`'s address): a listener in
    /// `to`, a connection from `from`, one message each way.
    pub fn tcp_check(from: &Host, to: &Host, port: u16) -> Result<()> {
        use std::io::{Read, Write};
        let listener = to.listen_tcp(SocketAddr::from((to.addr, port)))?;
        let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            s.write_all(b"pong")?;
            Ok(buf[..n].to_vec())
        });
        let what = format!("tcp {} -> {}:{port}", from.name, to.addr);
        let mut stream =
            from.connect_tcp(SocketAddr::from((to.addr, port)), Duration::from_secs(3))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io_err(&what))?;
        stream.write_all(b"ping").map_err(io_err(&what))?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).map_err(io_err(&what))?;
        let got = server
            .join()
            .map_err(|_| Error::Config(format!("{what}: server thread panicked")))?
            .map_err(io_err(&what))?;
        if got != b"ping" || &reply != b"pong" {
            return Err(Error::Io {
                what,
                source: std::io::Error::other("payload mismatch"),
            });
        }
        Ok(())
    }
}

impl TestBed {
    /// Leaves the bed in place after this program exits (a long-lived local cluster):
    /// namespaces, state and every daemon (etcd and adopted ones) stay; nothing is torn
    /// down on drop. Returns the daemons left running. Remove the bed later with
    /// [`sweep`] (`skeinctl down --name <prefix>`). The bed lock is released when this
    /// program exits: a process that must keep other tests' exclusive snapshots out
    /// while the bed lives takes [`shared_lock`] itself.
    pub fn keep(mut self) -> Vec<DetachedDaemon> {
        self.kept = true;
        let mut kept = Vec::new();
        if let Some(etcd) = self.etcd.take() {
            for m in etcd.members {
                if let Some(d) = m.daemon {
                    kept.push(d.detach());
                }
            }
        }
        kept.extend(self.daemons.drain(..).map(Daemon::detach));
        kept
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Daemons first, in reverse start order, then everything by prefix.
        for mut d in self.daemons.drain(..).rev() {
            d.stop();
        }
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop_all();
        }
        self.nodes.clear();
        self.outside = None;
        self.fabric = None;
        let report = sweep(&self.prefix);
        if !report.errors.is_empty() {
            eprintln!(
                "test bed {} teardown left problems: {:#?}",
                self.prefix, report.errors
            );
        }
    }
}

/// The machine's cgroup v2 mount (the unified hierarchy), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("read /proc/self/mountinfo"))?;
    for line in info.lines() {
        // "... mountpoint opts ... - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mp) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mp));
        }
    }
    Err(Error::Config("no cgroup2 filesystem is mounted (mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`)".into()))
}
