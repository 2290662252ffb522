//! A small cluster for the proxy's privileged tests, built on the test bed: per node a
//! bridge `cni0` with the pod subnet 10.244.<i>.0/24 (made with plain `ip`, as the CNI
//! plugin would), "pods" (namespaces on the bridge) running TCP/UDP servers that answer
//! with their identity and the peer address they saw, routes between the nodes' pod
//! subnets, and clients that run in a pod namespace *and* in the node's pod cgroup (so
//! the socket hooks see them).
#![allow(dead_code)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use skein_netns::NetNs;
use skein_testbed::{Config, EtcdMode, TestBed};

/// The proxy binary under test (the bench example, which cargo builds without it, never
/// runs it).
pub const PROXY: &str = match option_env!("CARGO_BIN_EXE_skein-proxy") {
    Some(p) => p,
    None => "skein-proxy",
};

/// Fails with a clear reason when the test cannot run at all.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests load eBPF programs and build namespaces: run them as root"
    );
}

pub struct Cluster {
    pub bed: TestBed,
    pub pods: Vec<Pod>,
}

pub struct Pod {
    pub name: String,
    pub node: usize,
    pub ip: Ipv4Addr,
    pub netns: NetNs,
}

pub fn subnet_gw(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node as u8, 1)
}

impl Cluster {
    pub fn start(nodes: usize) -> Cluster {
        require_root();
        let bed = TestBed::start(Config {
            nodes,
            outside: true,
            etcd: EtcdMode::None,
            cgroups: true,
            ..Config::default()
        })
        .expect("start test bed");
        for i in 1..=nodes {
            let n = bed.node(i);
            n.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
            n.run("ip", &["link", "add", "cni0", "type", "bridge"])
                .unwrap();
            n.run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/24", subnet_gw(i)),
                    "dev",
                    "cni0",
                ],
            )
            .unwrap();
            n.run("ip", &["link", "set", "cni0", "up"]).unwrap();
            for k in 1..=nodes {
                if k != i {
                    n.run(
                        "ip",
                        &[
                            "route",
                            "add",
                            &format!("10.244.{k}.0/24"),
                            "via",
                            &bed.node(k).addr.to_string(),
                        ],
                    )
                    .unwrap();
                }
            }
        }
        Cluster {
            bed,
            pods: Vec::new(),
        }
    }

    /// Adds pod number `j` on node `i` with address 10.244.<i>.<10+j>.
    pub fn add_pod(&mut self, i: usize, j: usize) -> usize {
        let name = format!("n{i}p{j}");
        let ns_name = format!("{}-{name}", self.bed.prefix());
        let netns = NetNs::create(&ns_name).expect("create pod netns");
        let ip = Ipv4Addr::new(10, 244, i as u8, 10 + j as u8);
        let node = self.bed.node(i);
        let veth = format!("v{name}");
        node.run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns_name,
            ],
        )
        .unwrap();
        node.run("ip", &["link", "set", &veth, "master", "cni0", "up"])
            .unwrap();
        let ipn = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.arg("-n").arg(&ns_name).args(args);
            skein_testbed::run_checked(&mut c).unwrap();
        };
        ipn(&["link", "set", "lo", "up"]);
        ipn(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ipn(&["link", "set", "eth0", "up"]);
        ipn(&["route", "add", "default", "via", &subnet_gw(i).to_string()]);
        self.pods.push(Pod {
            name,
            node: i,
            ip,
            netns,
        });
        self.pods.len() - 1
    }

    pub fn pin_dir(&self, i: usize) -> PathBuf {
        self.bed.node(i).dirs.bpf_pin_dir.clone()
    }

    pub fn cgroup(&self, i: usize) -> PathBuf {
        self.bed
            .node(i)
            .dirs
            .cgroup
            .clone()
            .expect("bed made with cgroups")
    }

    /// Runs `skein-proxy <args>` inside node `i`'s namespace; returns stdout or panics
    /// with stderr.
    pub fn proxy(&self, i: usize, args: &[&str]) -> String {
        let mut cmd = self.bed.node(i).command(PROXY).unwrap();
        cmd.args(args);
        skein_testbed::run_checked(&mut cmd)
            .unwrap_or_else(|e| panic!("skein-proxy {args:?} on node{i}: {e}"))
    }

    /// Programs node `i` from `services` (JSON) with `skein-proxy apply`.
    pub fn apply(&self, i: usize, services: &serde_json::Value) -> serde_json::Value {
        let file = self.bed.state_dir().join(format!("services-node{i}.json"));
        std::fs::write(&file, services.to_string()).unwrap();
        let cg = self.cgroup(i);
        let pin = self.pin_dir(i);
        let out = self.proxy(
            i,
            &[
                "apply",
                "--node-name",
                &format!("node{i}"),
                "--pin-dir",
                pin.to_str().unwrap(),
                "--cgroup-root",
                cg.to_str().unwrap(),
                "--from-file",
                file.to_str().unwrap(),
            ],
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("apply output {out:?}: {e}"))
    }

    /// Runs the client script in pod `pod`'s namespace and node cgroup.
    pub fn client(&self, pod: usize, args: &[&str]) -> Vec<String> {
        let p = &self.pods[pod];
        let mut cmd = p.netns.command("python3").unwrap();
        join_cgroup(&mut cmd, &self.cgroup(p.node));
        run_client(cmd, args)
    }

    /// Runs the client script in the `outside` host (no cgroup: an external client).
    pub fn outside_client(&self, args: &[&str]) -> Vec<String> {
        run_client(self.bed.outside().command("python3").unwrap(), args)
    }
}

fn run_client(mut cmd: Command, args: &[&str]) -> Vec<String> {
    cmd.arg("-c").arg(CLIENT_PY).args(args);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run python3 client");
    assert!(
        out.status.success(),
        "client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Makes the child join `cgroup` before it execs (so its sockets belong to it).
pub fn join_cgroup(cmd: &mut Command, cgroup: &Path) {
    let procs = CString::new(cgroup.join("cgroup.procs").to_str().unwrap()).unwrap();
    // SAFETY: the closure only calls async-signal-safe libc functions on memory
    // prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The client: `tcp|udp HOST PORT COUNT [SOURCE_PORT]`; prints per attempt
/// `<server identity> <address the server saw> <peer address the client sees>` or
/// `ERR <errno> <milliseconds>`.
pub const CLIENT_PY: &str = r#"
import socket, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
for i in range(n):
    t = time.monotonic()
    try:
        if mode == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(3)
            if sport:
                s.bind(("0.0.0.0", sport))
            s.connect((host, port))
            peer = s.getpeername()
            data = b""
            while True:
                d = s.recv(256)
                if not d:
                    break
                data += d
            s.close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", sport))
            s.sendto(b"hi", (host, port))
            data, peer = s.recvfrom(256)
            s.close()
        print(data.decode().strip(), "%s:%d" % peer, flush=True)
    except OSError as e:
        print("ERR", e.errno, int((time.monotonic() - t) * 1000), flush=True)
"#;

/// Serves TCP on `port` in the pod: each connection gets "<identity> <peer ip:port>".
pub fn serve_tcp(netns: &NetNs, addr: SocketAddr, identity: &str) {
    let l: TcpListener = netns.run(|| TcpListener::bind(addr)).unwrap().unwrap();
    let id = identity.to_owned();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let _ = s.write_all(format!("{id} {peer}\n").as_bytes());
        }
    });
}

/// Serves a long-lived TCP stream: echoes every line back prefixed with the identity.
pub fn serve_echo(netns: &NetNs, addr: SocketAddr, identity: &str) {
    let l: TcpListener = netns.run(|| TcpListener::bind(addr)).unwrap().unwrap();
    let id = identity.to_owned();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let id = id.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut reply = format!("{id} ").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    if s.write_all(&reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Serves UDP on `port` in the pod: each datagram gets "<identity> <peer ip:port>".
pub fn serve_udp(netns: &NetNs, addr: SocketAddr, identity: &str) {
    let s: UdpSocket = netns.run(|| UdpSocket::bind(addr)).unwrap().unwrap();
    let id = identity.to_owned();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{id} {peer}").as_bytes(), peer);
        }
    });
}

/// A Service JSON object for `skein-proxy apply`.
pub fn service(
    name: &str,
    vip: Option<Ipv4Addr>,
    port: u16,
    protocol: &str,
    node_port: Option<u16>,
    endpoints: &[(Ipv4Addr, usize)],
    target: u16,
) -> serde_json::Value {
    serde_json::json!({
        "namespace": "default",
        "name": name,
        "cluster_ips": vip.into_iter().collect::<Vec<_>>(),
        "ports": [{"name": "p", "protocol": protocol, "port": port, "node_port": node_port}],
        "endpoints": endpoints.iter().map(|(ip, node)| serde_json::json!({
            "ip": ip, "node_name": format!("node{node}"), "ready": true,
            "ports": [{"name": "p", "protocol": protocol, "port": target}],
        })).collect::<Vec<_>>(),
    })
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
