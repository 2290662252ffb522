//! Shared plumbing for flanneld's integration tests: a test bed with real etcd, the
//! built flanneld in each node namespace, and "pods" (namespaces on a `cni0` bridge in
//! the node, wired with `ip -n` as a CNI plugin would).

#![allow(dead_code, reason = "each test file uses a different part")]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use skein_netns::NetNs;
use skein_testbed::{Config, Daemon, EtcdMode, Host, Node, TestBed};

pub const VXLAN_CONFIG: &str = r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#;
pub const HOSTGW_CONFIG: &str = r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}"#;
pub const PREFIX: &str = "/coreos.com/network";

/// Fails the test with a clear reason when it cannot run here.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "flanneld integration tests need root (network namespaces, netlink)"
    );
}

pub fn bed(nodes: usize, outside: bool) -> TestBed {
    require_root();
    TestBed::start(Config {
        nodes,
        outside,
        etcd: EtcdMode::Single,
        cgroups: false,
        ..Config::default()
    })
    .expect("start test bed")
}

/// Runs etcdctl from `from` against the bed's etcd.
pub fn etcdctl(bed: &TestBed, from: &Host, args: &[&str]) -> String {
    let mut cmd = bed.etcd().etcdctl(from).expect("etcdctl command");
    cmd.args(args);
    skein_testbed::run_checked(&mut cmd).expect("etcdctl")
}

pub fn put_config(bed: &TestBed, config: &str) {
    etcdctl(
        bed,
        &bed.node(1).host,
        &["put", &format!("{PREFIX}/config"), config],
    );
}

/// Starts the built flanneld in node `i` with `--iface eth0` (unless `extra` names an
/// interface) and the node's subnet file.
pub fn start_flanneld(bed: &TestBed, i: usize, extra: &[&str]) -> Daemon {
    let node = bed.node(i);
    let mut cmd = node
        .command(env!("CARGO_BIN_EXE_flanneld"))
        .expect("flanneld command");
    // Every member, running or not, as an operator's config lists them.
    let endpoints: Vec<String> = bed.etcd().members.iter().map(|m| m.client_url()).collect();
    cmd.arg("--etcd-endpoints").arg(endpoints.join(","));
    if !extra
        .iter()
        .any(|a| a.starts_with("--iface") || a.starts_with("-iface"))
    {
        cmd.args(["--iface", "eth0"]);
    }
    cmd.arg("--subnet-file")
        .arg(&node.dirs.subnet_file)
        .args(extra)
        .env("RUST_LOG", "info");
    let log = node.dirs.log_dir.join("flanneld.log");
    node.spawn(&format!("flanneld node{i}"), cmd, &log)
        .expect("start flanneld")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The subnet file's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: String,
    /// e.g. 10.244.3.1/24
    pub subnet: String,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.split('/').next().unwrap().parse().unwrap()
    }
    pub fn prefix_len(&self) -> u8 {
        self.subnet.split('/').nth(1).unwrap().parse().unwrap()
    }
    /// The subnet's network address (gateway − 1).
    pub fn network_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway()) - 1)
    }
    /// `10.244.3.0-24`, the etcd key suffix.
    pub fn key(&self) -> String {
        format!(
            "{PREFIX}/subnets/{}-{}",
            self.network_addr(),
            self.prefix_len()
        )
    }
    /// `10.244.3.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network_addr(), self.prefix_len())
    }
}

pub fn parse_subnet_env(text: &str) -> Option<SubnetEnv> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    Some(SubnetEnv {
        network: get("FLANNEL_NETWORK")?,
        subnet: get("FLANNEL_SUBNET")?,
        mtu: get("FLANNEL_MTU")?.parse().ok()?,
        ipmasq: get("FLANNEL_IPMASQ")?.parse().ok()?,
    })
}

/// Waits for node `i`'s subnet file, with the flanneld log in the failure message.
pub fn wait_subnet_file(node: &Node, daemon: &Daemon) -> SubnetEnv {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(env) = std::fs::read_to_string(&node.dirs.subnet_file)
            .ok()
            .and_then(|t| parse_subnet_env(&t))
        {
            return env;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no subnet file after 30 s; flanneld log:\n{}",
            node.name,
            daemon.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ip -n <node> ...` output.
pub fn ip(node: &Host, args: &[&str]) -> String {
    node.run("ip", args).expect("ip command")
}

/// A pod: a namespace with `eth0` on the node's `cni0`.
#[derive(Debug)]
pub struct Pod {
    pub host: Host,
}

/// Makes `count` pods on node `i`'s `cni0` (creating the bridge with the gateway address
/// from the subnet file), addresses .10, .11, ... of the node's subnet, MTU from the file.
pub fn add_pods(bed: &TestBed, i: usize, env: &SubnetEnv, count: usize) -> Vec<Pod> {
    let node = bed.node(i);
    let node_ns = node.netns_name().to_owned();
    let gw = env.gateway();
    let len = env.prefix_len();
    if !Path::new("/run/netns").join(&node_ns).exists() {
        panic!("node namespace {node_ns} is gone");
    }
    let mut pods = Vec::new();
    for j in 0..count {
        let name = format!("{}-n{i}pod{j}", bed.prefix());
        let netns = NetNs::create(&name).expect("create pod netns");
        let addr = Ipv4Addr::from(u32::from(gw) + 9 + j as u32);
        let veth = format!("vp{j}");
        let mtu = env.mtu.to_string();
        ip(
            node,
            &[
                "link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ],
        );
        ip(node, &["link", "set", &veth, "master", "cni0", "up"]);
        let pod = Host {
            name: format!("node{i}-pod{j}"),
            netns,
            addr,
        };
        pod.run("ip", &["link", "set", "lo", "up"]).unwrap();
        pod.run("ip", &["link", "set", "eth0", "mtu", &mtu, "up"])
            .unwrap();
        pod.run(
            "ip",
            &["addr", "add", &format!("{addr}/{len}"), "dev", "eth0"],
        )
        .unwrap();
        pod.run("ip", &["route", "add", "default", "via", &gw.to_string()])
            .unwrap();
        pods.push(Pod { host: pod });
    }
    pods
}

/// Creates `cni0` in node `i` with the gateway address (as the CNI bridge plugin would).
pub fn add_bridge(bed: &TestBed, i: usize, env: &SubnetEnv) {
    let node = bed.node(i);
    ip(node, &["link", "add", "cni0", "type", "bridge"]);
    ip(node, &["addr", "add", &env.subnet, "dev", "cni0"]);
    ip(node, &["link", "set", "cni0", "up"]);
}

/// Bridge plus pods.
pub fn wire_pods(bed: &TestBed, i: usize, env: &SubnetEnv, count: usize) -> Vec<Pod> {
    add_bridge(bed, i, env);
    add_pods(bed, i, env, count)
}

/// TCP from every pod to every pod on another node, retried until the routes converge.
pub fn all_pairs_tcp(pods: &[&Pod], port: u16, timeout: Duration) {
    let mut port = port;
    for a in pods {
        for b in pods {
            if std::ptr::eq(*a, *b) {
                continue;
            }
            port += 1;
            tcp_eventually(&a.host, &b.host, port, timeout);
        }
    }
}

/// One TCP exchange from `from` to `to`:`port` (a listener in `to`, bounded waits).
pub fn tcp_once(from: &Host, to: &Host, port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from((to.addr, port));
    let listener = to.listen_tcp(addr).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut client = from
        .connect_tcp(addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut server = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    server.set_nonblocking(false).map_err(|e| e.to_string())?;
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
    }
    client
        .write_all(b"ping")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4];
    server
        .read_exact(&mut buf)
        .map_err(|e| format!("server read: {e}"))?;
    server
        .write_all(b"pong")
        .map_err(|e| format!("reply: {e}"))?;
    client
        .read_exact(&mut buf)
        .map_err(|e| format!("client read: {e}"))?;
    if &buf != b"pong" {
        return Err("payload mismatch".into());
    }
    Ok(())
}

/// Retries a TCP check until it passes or `timeout` runs out.
pub fn tcp_eventually(from: &Host, to: &Host, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match tcp_once(from, to, port) {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{} -> {} ({}:{port}): {e}", from.name, to.name, to.addr)
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The node's route to `cidr` (`ip route show <cidr>` text; empty when absent).
pub fn route_to(node: &Host, cidr: &str) -> String {
    ip(node, &["route", "show", cidr]).trim().to_owned()
}

/// JSON of `ip -j -d link show <dev>`'s first element.
pub fn link_json(node: &Host, dev: &str) -> serde_json::Value {
    let out = ip(node, &["-j", "-d", "link", "show", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0].clone()
}
