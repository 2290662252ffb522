//! `skeinctl up`: builds the test bed, starts every usable component in its namespace,
//! waits for each step, and leaves it all running when it returns. The end-to-end tests'
//! fixture starts its clusters with the same [`Cluster::start`] (and stops them on drop).
//!
//! ```text
//! probe binaries ─► bed (fabric, nodes, outside, etcd) ─► control ns ─► flannel config in
//!   etcd ─► apiserver (/readyz) ─► kube-dns Service + endpoints ─► scheduler, controllers,
//!   dns ─► relay + kubeconfigs ─► per node: conflist, flanneld (subnet files) ─► agent,
//!   proxy (Nodes Ready) ─► detach (`up`) or keep owning the daemons (tests)
//! ```
//!
//! Any failure stops what was started and sweeps the bed before the error is returned:
//! nothing is left half-made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_testbed::{Config, Daemon, EtcdMode, Host, TestBed};

use crate::components::Components;
use crate::layout::{self, Backend, ClusterPaths};

/// What `up` builds.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The cluster's name: the prefix of its namespaces and its state dir.
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// flanneld's backend.
    pub backend: Backend,
    /// skein-proxy's eBPF pod routing between nodes (`--pod-routing`) on every node.
    pub pod_routing: bool,
    /// Where the skein binaries are.
    pub bin_dir: PathBuf,
    /// The `skeinctl` executable that runs the kubeconfig relay (`skeinctl relay`).
    pub skeinctl: PathBuf,
    /// Extra flags per daemon (tests shorten periods and back-offs with these).
    pub tuning: Tuning,
}

/// Extra command-line flags appended to a daemon's own.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// skein-scheduler.
    pub scheduler: Vec<String>,
    /// skein-controller-manager.
    pub controller_manager: Vec<String>,
    /// skein-agent on every node.
    pub agent: Vec<String>,
}

const SUBNET_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const NODES_TIMEOUT: Duration = Duration::from_secs(90);

/// A running local cluster and everything it started. Fields drop in order: daemons
/// stop first, then the bed is swept (unless [`Cluster::keep`] detached them).
#[derive(Debug)]
pub struct Cluster {
    daemons: Vec<Daemon>,
    /// The bed: fabric, nodes, outside, etcd.
    pub bed: TestBed,
    /// The control-plane host (API server, scheduler, controllers, DNS).
    pub control: Host,
    /// The cluster's files under /run/skein/<name>.
    pub paths: ClusterPaths,
    opts: UpOptions,
    comps: Components,
}

/// Brings the cluster up and leaves it running (`skeinctl up`).
pub fn up(opts: &UpOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = Cluster::start(opts)?;
    cluster.keep()?;
    println!(
        "\n==> cluster {} is up ({:.1}s)",
        opts.name,
        started.elapsed().as_secs_f64()
    );
    println!(
        "    export KUBECONFIG={}",
        ClusterPaths::new(&opts.name).kubeconfig.display()
    );
    println!("    skeinctl status --name {}", opts.name);
    println!("    skeinctl check --name {}", opts.name);
    println!("    skeinctl down --name {}", opts.name);
    Ok(())
}

fn report_components(c: &Components) {
    let all = [
        ("flanneld", &c.flanneld, "flanneld on every node"),
        ("skein-cni", &c.cni, "the CNI conflist on every node"),
        (
            "skein-apiserver",
            &c.apiserver,
            "the API server (kubectl gets no answer), scheduler, controller manager, DNS, agents and proxies",
        ),
        ("skein-scheduler", &c.scheduler, "the scheduler"),
        (
            "skein-controller-manager",
            &c.controller_manager,
            "the controller manager",
        ),
        ("skein-dns", &c.dns, "cluster DNS"),
        ("skein-agent", &c.agent, "the node agent on every node"),
        ("skein-proxy", &c.proxy, "the service proxy on every node"),
    ];
    for (name, a, skipped) in all {
        match a.warning(name, skipped) {
            None => println!("    ok       {name}"),
            Some(w) => println!("    {w}"),
        }
    }
}

impl Cluster {
    /// Builds the bed and starts every usable component; on failure everything made so
    /// far is removed before the error is returned. The daemons stop, and the bed is
    /// swept, when the returned value is dropped (see [`Cluster::keep`]).
    pub fn start(opts: &UpOptions) -> anyhow::Result<Cluster> {
        skein_testbed::validate_prefix(&opts.name)?;
        if opts.nodes == 0 || opts.nodes > skein_testbed::MAX_NODES {
            bail!(
                "--nodes {}: a cluster has 1 to {} nodes",
                opts.nodes,
                skein_testbed::MAX_NODES
            );
        }
        if !opts.bin_dir.is_dir() {
            bail!("--bin-dir {}: not a directory", opts.bin_dir.display());
        }
        println!("==> components in {}", opts.bin_dir.display());
        let comps = Components::probe(&opts.bin_dir);
        report_components(&comps);

        println!(
            "==> test bed {}: fabric, {} nodes, outside, etcd (waiting for etcd health)",
            opts.name, opts.nodes
        );
        let bed = TestBed::start(Config {
            prefix: Some(opts.name.clone()),
            nodes: opts.nodes,
            outside: true,
            etcd: EtcdMode::Single,
            cgroups: true,
        })
        .context("build the test bed")?;
        // From here on an error drops `bed` (or `c`), which removes everything.
        let control = bed
            .add_host("control", layout::CONTROL_ADDR)
            .context("add the control namespace")?;
        let paths = ClusterPaths::new(&opts.name);
        for d in [&paths.run_dir, &paths.log_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let mut c = Cluster {
            daemons: Vec::new(),
            bed,
            control,
            paths,
            opts: opts.clone(),
            comps,
        };
        match c.bring_up() {
            Ok(()) => Ok(c),
            Err(e) => {
                println!("==> failed; removing everything made so far");
                drop(c);
                Err(e)
            }
        }
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &UpOptions {
        &self.opts
    }

    /// The daemons started (not the bed's etcd), in start order.
    pub fn daemons(&self) -> &[Daemon] {
        &self.daemons
    }

    fn bring_up(&mut self) -> anyhow::Result<()> {
        let opts = self.opts.clone();
        let comps = self.comps.clone();
        let etcd_url = self.bed.etcd().endpoints();
        println!("    etcd at {etcd_url} (netns {}-etcd)", opts.name);

        println!(
            "==> flannel network config: {} {}",
            layout::CLUSTER_NETWORK,
            opts.backend.flannel_type()
        );
        let key = format!("{}/config", layout::FLANNEL_PREFIX);
        let mut put = self.bed.etcd().etcdctl(&self.control)?;
        put.args(["put", &key, &layout::flannel_config(opts.backend)]);
        skein_testbed::run_checked(&mut put).with_context(|| format!("write {key} to etcd"))?;

        let api = comps.apiserver.path().map(Path::to_owned);
        if let Some(apiserver) = &api {
            println!(
                "==> control plane in {}-control ({})",
                opts.name,
                layout::api_url()
            );
            let mut cmd = self.control.command(apiserver)?;
            cmd.args(["--etcd-servers", &etcd_url])
                .args(["--bind-address", &layout::CONTROL_ADDR.to_string()])
                .args(["--port", &layout::API_PORT.to_string()])
                .args(["--anonymous-auth", "true"]);
            self.spawn("apiserver", cmd)?;
            self.wait("apiserver /readyz", READY_TIMEOUT, |c| {
                Ok(matches!(
                    skein_testbed::http_get(&c.control, layout::api_addr(), "/readyz"),
                    Ok((200, _))
                ))
            })?;
            if comps.dns.path().is_some() {
                // Before anything else can take 10.96.0.10.
                self.create_kube_dns()?;
            }
            let master = layout::api_url();
            for (name, avail, extra) in [
                ("scheduler", &comps.scheduler, &opts.tuning.scheduler),
                (
                    "controller-manager",
                    &comps.controller_manager,
                    &opts.tuning.controller_manager,
                ),
            ] {
                if let Some(bin) = avail.path() {
                    let mut cmd = self.control.command(bin)?;
                    cmd.args(["--master", &master]).args(extra);
                    self.spawn(name, cmd)?;
                }
            }
            if let Some(bin) = comps.dns.path() {
                let mut cmd = self.control.command(bin)?;
                cmd.args(["--master", &master])
                    .args(["--listen", layout::DNS_LISTEN])
                    .args(["--domain", layout::DNS_DOMAIN]);
                self.spawn("dns", cmd)?;
            }
        }
        self.start_relay()?;

        println!("==> nodes");
        for i in 0..self.bed.nodes.len() {
            let node = &self.bed.nodes[i];
            let (name, addr, dirs) = (node.name.clone(), node.addr, node.dirs.clone());
            if comps.cni.path().is_some() {
                let file = dirs.cni_conf_dir.join("10-skein.conflist");
                std::fs::write(
                    &file,
                    layout::cni_conflist(&dirs.subnet_file, &dirs.ipam_data_dir),
                )
                .with_context(|| format!("write {}", file.display()))?;
            }
            if let Some(bin) = comps.flanneld.path() {
                let mut cmd = self.bed.nodes[i].command(bin)?;
                cmd.args(["--etcd-endpoints", &etcd_url])
                    .args(["--etcd-prefix", layout::FLANNEL_PREFIX])
                    .args(["--iface", "eth0"])
                    .arg("--subnet-file")
                    .arg(&dirs.subnet_file)
                    .arg("--ip-masq");
                self.spawn(&format!("{name}-flanneld"), cmd)?;
            }
            println!("    {name:<8} netns {}-{name:<8} eth0 {addr}", opts.name);
        }
        if comps.flanneld.path().is_some() {
            self.wait("subnet files of every node", SUBNET_TIMEOUT, |c| {
                Ok(c.bed.nodes.iter().all(|n| {
                    std::fs::read_to_string(&n.dirs.subnet_file)
                        .ok()
                        .is_some_and(|t| layout::subnet_of(&t).is_some())
                }))
            })?;
            for n in &self.bed.nodes {
                let text = std::fs::read_to_string(&n.dirs.subnet_file).unwrap_or_default();
                println!(
                    "    {:<8} subnet {}",
                    n.name,
                    layout::subnet_of(&text).unwrap_or("?")
                );
            }
        }

        if api.is_some() {
            let mut agents = 0;
            for i in 1..=self.bed.nodes.len() {
                if comps.agent.path().is_some() {
                    self.start_agent(i)?;
                    agents += 1;
                }
                if comps.proxy.path().is_some() {
                    self.start_proxy(i)?;
                }
            }
            if agents > 0 {
                self.wait("every Node Ready", NODES_TIMEOUT, move |c| {
                    Ok(ready_nodes(&c.control)? >= agents)
                })?;
            }
        }
        self.check_daemons()
    }

    /// Starts skein-agent on node `i` (1-based), again after [`Cluster::stop_agent`].
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(bin) = self.comps.agent.path().map(Path::to_owned) else {
            bail!(
                "skein-agent is not usable in {}",
                self.opts.bin_dir.display()
            );
        };
        let node = self.bed.node(i);
        let (name, addr, dirs) = (node.name.clone(), node.addr, node.dirs.clone());
        let mut cmd = node.command(bin)?;
        cmd.args(["--node-name", &name])
            .args(["--api-server", &layout::api_url()])
            .args(["--node-ip", &addr.to_string()])
            .arg("--cni-conf-dir")
            .arg(&dirs.cni_conf_dir)
            .arg("--cni-bin-dir")
            .arg(&self.opts.bin_dir)
            .arg("--state-dir")
            .arg(dirs.root.join("agent"))
            .arg("--subnet-file")
            .arg(&dirs.subnet_file)
            .args(["--cluster-domain", layout::DNS_DOMAIN]);
        // Without skein-dns there is no kube-dns Service: pods then get the node's
        // resolver (the agent logs the ClusterFirst fallback, as a kubelet does).
        if self.comps.dns.path().is_some() {
            cmd.args(["--cluster-dns", &layout::CLUSTER_DNS_IP.to_string()]);
        }
        if let Some(cg) = &dirs.cgroup {
            cmd.arg("--cgroup-root").arg(cg);
        }
        cmd.args(&self.opts.tuning.agent);
        self.spawn(&format!("{name}-agent"), cmd)?;
        Ok(())
    }

    /// Starts skein-proxy on node `i` (1-based), again after [`Cluster::stop_proxy`]:
    /// without `--cleanup` a stopped proxy leaves its programs and maps pinned, and the
    /// new one takes them over.
    pub fn start_proxy(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(bin) = self.comps.proxy.path().map(Path::to_owned) else {
            bail!(
                "skein-proxy is not usable in {}",
                self.opts.bin_dir.display()
            );
        };
        let node = self.bed.node(i);
        let (name, addr, dirs) = (node.name.clone(), node.addr, node.dirs.clone());
        let mut cmd = node.command(bin)?;
        cmd.args(["--node-name", &name])
            .args(["--api-server", &layout::api_url()])
            .arg("--pin-dir")
            .arg(&dirs.bpf_pin_dir)
            .args(["--uplink", "eth0"])
            .args(["--node-ip", &addr.to_string()]);
        if self.opts.pod_routing {
            cmd.args(["--pod-routing", "--cluster-cidr", layout::CLUSTER_NETWORK]);
        }
        if let Some(cg) = &dirs.cgroup {
            cmd.arg("--cgroup-root").arg(cg);
        }
        self.spawn(&format!("{name}-proxy"), cmd)?;
        Ok(())
    }

    /// Stops skein-agent on node `i` with SIGTERM (its pods keep running, as a
    /// kubelet's do).
    pub fn stop_agent(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_node_daemon(i, "agent")
    }

    /// Stops skein-proxy on node `i` with SIGTERM (its datapath stays pinned and keeps
    /// forwarding, as a restart needs).
    pub fn stop_proxy(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_node_daemon(i, "proxy")
    }

    fn stop_node_daemon(&mut self, i: usize, what: &str) -> anyhow::Result<()> {
        let name = format!("{}-{what}", self.bed.node(i).name);
        let Some(pos) = self.daemons.iter().position(|d| d.name() == name) else {
            bail!("{name} is not running");
        };
        self.daemons.remove(pos).stop();
        let _ = std::fs::remove_file(self.paths.pid_file(&name));
        Ok(())
    }

    /// The kube-dns Service in kube-system (ClusterIP 10.96.0.10, 53/UDP `dns` and
    /// 53/TCP `dns-tcp`), with no selector: skein-dns runs on the control host, so its
    /// EndpointSlice and Endpoints are written here.
    fn create_kube_dns(&mut self) -> anyhow::Result<()> {
        println!(
            "==> Service kube-system/kube-dns {} -> skein-dns {}",
            layout::CLUSTER_DNS_IP,
            layout::DNS_LISTEN
        );
        for (path, obj) in layout::kube_dns_objects() {
            crate::api::create(&self.control, path, &obj)?;
        }
        Ok(())
    }

    fn start_relay(&mut self) -> anyhow::Result<()> {
        let exe = &self.opts.skeinctl;
        let port_file = self.paths.relay_port_file();
        let mut cmd = Command::new(exe);
        cmd.arg("relay")
            .arg("--netns")
            .arg(self.control.netns.path())
            .args(["--target", &layout::api_addr().to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--port-file")
            .arg(&port_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let pid = self.spawn("relay", cmd)?;
        // In the cluster's cgroup, so that `down` (the sweep) finds it even without its
        // pid file.
        if let Ok(base) = skein_testbed::cgroup2_mount() {
            let cg = base.join("skein").join(&self.opts.name).join("relay");
            std::fs::create_dir_all(&cg)
                .with_context(|| format!("create cgroup {}", cg.display()))?;
            std::fs::write(cg.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("move the relay into {}", cg.display()))?;
        }
        self.wait("kubeconfig relay", READY_TIMEOUT, |_| {
            Ok(port_file.is_file())
        })?;
        let port: u16 = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .with_context(|| format!("read the relay port from {}", port_file.display()))?;
        std::fs::write(
            &self.paths.kubeconfig,
            layout::kubeconfig(&self.opts.name, &format!("http://127.0.0.1:{port}")),
        )
        .with_context(|| format!("write {}", self.paths.kubeconfig.display()))?;
        std::fs::write(
            &self.paths.control_kubeconfig,
            layout::kubeconfig(&self.opts.name, &layout::api_url()),
        )
        .with_context(|| format!("write {}", self.paths.control_kubeconfig.display()))?;
        println!(
            "    kubeconfig {} (relay 127.0.0.1:{port} -> {})",
            self.paths.kubeconfig.display(),
            layout::api_addr()
        );
        Ok(())
    }

    /// Starts a daemon with its log and pid file; returns its pid.
    fn spawn(&mut self, name: &str, cmd: Command) -> anyhow::Result<i32> {
        let log = self.paths.log_file(name);
        let d = Daemon::spawn(name, cmd, &log)?;
        let pid = d.pid();
        self.daemons.push(d);
        let pid_file = self.paths.pid_file(name);
        std::fs::write(&pid_file, format!("{pid}\n"))
            .with_context(|| format!("write {}", pid_file.display()))?;
        println!("    started {name:<20} pid {pid:<8} log {}", log.display());
        Ok(pid)
    }

    /// Fails naming the first daemon that exited, with the tail and path of its log.
    pub fn check_daemons(&mut self) -> anyhow::Result<()> {
        for d in &mut self.daemons {
            if !d.is_running() {
                bail!(
                    "{} exited; the end of its log {}:\n{}",
                    d.name(),
                    d.log().display(),
                    indent(&d.log_tail(20))
                );
            }
        }
        Ok(())
    }

    /// Waits for `ready`, printing progress; fails when a daemon exits or on timeout.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Cluster) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        use std::io::Write;
        print!("    waiting for {what} ...");
        let _ = std::io::stdout().flush();
        let start = Instant::now();
        loop {
            self.check_daemons().inspect_err(|_| println!(" failed"))?;
            if ready(self).unwrap_or(false) {
                println!(" ok ({:.1}s)", start.elapsed().as_secs_f64());
                return Ok(());
            }
            if start.elapsed() > timeout {
                println!(" timed out");
                let logs: Vec<String> = self
                    .daemons
                    .iter()
                    .map(|d| format!("  {} log {}", d.name(), d.log().display()))
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; the daemons' logs:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Detaches every daemon (they outlive this program) and keeps the bed.
    pub fn keep(self) -> anyhow::Result<()> {
        let Cluster {
            daemons,
            bed,
            paths,
            ..
        } = self;
        for d in daemons {
            d.detach();
        }
        for d in bed.keep() {
            // The bed's own daemons (etcd): pid file, and the log linked into log/.
            let name = d
                .name
                .split_whitespace()
                .next()
                .unwrap_or("etcd")
                .to_owned();
            std::fs::write(paths.pid_file(&name), format!("{}\n", d.pid))
                .with_context(|| format!("write {}", paths.pid_file(&name).display()))?;
            let _ = std::os::unix::fs::symlink(&d.log, paths.log_file(&name));
        }
        Ok(())
    }
}

/// How many Nodes the API reports Ready.
fn ready_nodes(control: &Host) -> anyhow::Result<usize> {
    let list = crate::api::get_json(control, "/api/v1/nodes")?;
    Ok(list["items"]
        .as_array()
        .map(|items| items.iter().filter(|n| crate::api::node_ready(n)).count())
        .unwrap_or(0))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
