//! `skeinctl up`: builds the test bed, starts every usable component in its namespace,
//! waits for each step, and leaves it all running when it returns.
//!
//! ```text
//! probe binaries ─► bed (fabric, nodes, outside, etcd) ─► control ns ─► flannel config in
//!   etcd ─► relay + kubeconfig ─► apiserver (/readyz) ─► scheduler, controllers, dns ─►
//!   per node: conflist, flanneld (subnet files) ─► agent, proxy (Nodes Ready) ─► detach
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
    /// Where the skein binaries are.
    pub bin_dir: PathBuf,
}

const SUBNET_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const NODES_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything started so far. Fields drop in order: daemons stop first, then the bed is
/// swept (unless [`Bringup::keep`] detached them).
struct Bringup {
    daemons: Vec<Daemon>,
    bed: TestBed,
    control: Host,
    paths: ClusterPaths,
}

/// Brings the cluster up and leaves it running.
pub fn up(opts: &UpOptions) -> anyhow::Result<()> {
    let started = Instant::now();
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
    // From here on an error drops `bed` (or `b`), which removes everything.
    let control = bed
        .add_host("control", layout::CONTROL_ADDR)
        .context("add the control namespace")?;
    let paths = ClusterPaths::new(&opts.name);
    for d in [&paths.run_dir, &paths.log_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let mut b = Bringup {
        daemons: Vec::new(),
        bed,
        control,
        paths,
    };
    match b.bring_up(opts, &comps) {
        Ok(()) => {
            b.keep()?;
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
            println!("    skeinctl down --name {}", opts.name);
            Ok(())
        }
        Err(e) => {
            println!("==> failed; removing everything made so far");
            drop(b);
            Err(e)
        }
    }
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

impl Bringup {
    fn bring_up(&mut self, opts: &UpOptions, comps: &Components) -> anyhow::Result<()> {
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
            self.wait("apiserver /readyz", READY_TIMEOUT, |b| {
                Ok(matches!(
                    skein_testbed::http_get(&b.control, layout::api_addr(), "/readyz"),
                    Ok((200, _))
                ))
            })?;
            let master = layout::api_url();
            for (name, avail) in [
                ("scheduler", &comps.scheduler),
                ("controller-manager", &comps.controller_manager),
            ] {
                if let Some(bin) = avail.path() {
                    let mut cmd = self.control.command(bin)?;
                    cmd.args(["--master", &master]);
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
        self.start_relay(opts)?;

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
            self.wait("subnet files of every node", SUBNET_TIMEOUT, |b| {
                Ok(b.bed.nodes.iter().all(|n| {
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
            let api_url = layout::api_url();
            let mut agents = 0;
            for i in 0..self.bed.nodes.len() {
                let (name, addr, dirs) = {
                    let n = &self.bed.nodes[i];
                    (n.name.clone(), n.addr, n.dirs.clone())
                };
                if let Some(bin) = comps.agent.path() {
                    let mut cmd = self.bed.nodes[i].command(bin)?;
                    cmd.args(["--node-name", &name])
                        .args(["--api-server", &api_url])
                        .args(["--node-ip", &addr.to_string()])
                        .arg("--cni-conf-dir")
                        .arg(&dirs.cni_conf_dir)
                        .arg("--cni-bin-dir")
                        .arg(&opts.bin_dir)
                        .arg("--state-dir")
                        .arg(dirs.root.join("agent"))
                        .arg("--subnet-file")
                        .arg(&dirs.subnet_file);
                    if let Some(cg) = &dirs.cgroup {
                        cmd.arg("--cgroup-root").arg(cg);
                    }
                    self.spawn(&format!("{name}-agent"), cmd)?;
                    agents += 1;
                }
                if let Some(bin) = comps.proxy.path() {
                    let mut cmd = self.bed.nodes[i].command(bin)?;
                    cmd.args(["--node-name", &name])
                        .args(["--api-server", &api_url])
                        .arg("--pin-dir")
                        .arg(&dirs.bpf_pin_dir)
                        .args(["--uplink", "eth0"])
                        .args(["--node-ip", &addr.to_string()]);
                    if let Some(cg) = &dirs.cgroup {
                        cmd.arg("--cgroup-root").arg(cg);
                    }
                    self.spawn(&format!("{name}-proxy"), cmd)?;
                }
            }
            if agents > 0 {
                self.wait("every Node Ready", NODES_TIMEOUT, move |b| {
                    Ok(ready_nodes(&b.control)? >= agents)
                })?;
            }
        }
        self.check_daemons()
    }

    fn start_relay(&mut self, opts: &UpOptions) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("find the skeinctl executable")?;
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
            let cg = base.join("skein").join(&opts.name).join("relay");
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
        std::fs::write(&self.paths.kubeconfig, layout::kubeconfig(&opts.name, port))
            .with_context(|| format!("write {}", self.paths.kubeconfig.display()))?;
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
    fn check_daemons(&mut self) -> anyhow::Result<()> {
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
        mut ready: impl FnMut(&Bringup) -> anyhow::Result<bool>,
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
    fn keep(self) -> anyhow::Result<()> {
        let Bringup {
            daemons,
            bed,
            control: _,
            paths,
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
