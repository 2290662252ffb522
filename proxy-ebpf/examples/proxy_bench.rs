//! skein-proxy benchmark (run by scripts/bench-proxy.sh, as root). Prints, side by side
//! and measured in the same run:
//!
//! 1. connect + one request/response to a ClusterIP (skein-proxy) vs to the same
//!    backend's pod IP directly;
//! 2. the same through kube-proxy-style iptables rules (KUBE-SERVICES -> KUBE-SVC-* ->
//!    KUBE-SEP-* with statistic probabilities, iptables-legacy, in a node namespace) for
//!    the first and the last of 100 / 1,000 / 10,000 Services, next to skein-proxy with
//!    the same number of Services loaded;
//! 3. time from a Service change reaching the reconciler to its BPF map entry being
//!    present, p50/p99, with 100 / 1,000 / 10,000 Services loaded;
//! 4. the same through the running daemon: a Service created, or an EndpointSlice
//!    changed, in an API (the stand-in of tests/fake_api, as the real API server is not on
//!    main yet) until the BPF map entry is present, with 10,000 Services loaded.
//!
//! Clients run as a child of this binary (`client` mode) inside a pod namespace, pinned
//! to one CPU together with the backend server, so wake-ups do not cross CPUs.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fake_api/mod.rs"]
mod fake_api;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use skein_proxy::datapath::{BpfMaps, InstallConfig};
use skein_proxy::desired::NodeContext;
use skein_proxy::maps::{PROTO_TCP, SCOPE_CLUSTER, SvcKey};
use skein_proxy::model::{Endpoint, Protocol, Service, ServicePort, ServiceSet};
use skein_proxy::reconcile::{MapWriter, Reconciler};

const ROUNDS: usize = 2000;
const CPU: &str = "0";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        client(&args[2], args[3].parse().unwrap());
        return;
    }
    require_root();
    let sizes: Vec<usize> = std::env::var("SKEIN_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    bench(&sizes);
}

/// Client mode: ROUNDS x (connect, send, read reply, close); prints p50 p99 mean in µs.
fn client(addr: &str, rounds: usize) {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut lat = Vec::with_capacity(rounds);
    let mut buf = [0u8; 64];
    for _ in 0..rounds + 100 {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.write_all(b"ping").unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let mut lat = lat.split_off(100); // warm-up
    lat.sort_unstable();
    let mean = lat.iter().sum::<u64>() / lat.len() as u64;
    println!(
        "{} {} {}",
        lat[lat.len() / 2] / 1000,
        lat[lat.len() * 99 / 100] / 1000,
        mean / 1000
    );
}

fn serve_ping(c: &Cluster, pod: usize, port: u16) {
    let p = &c.pods[pod];
    let l: TcpListener = p
        .netns
        .run(|| TcpListener::bind((p.ip, port)))
        .unwrap()
        .unwrap();
    // The server thread is pinned to the same CPU as the client.
    std::thread::spawn(move || {
        pin_this_thread();
        let mut buf = [0u8; 64];
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if s.read(&mut buf).unwrap_or(0) > 0 {
                let _ = s.write_all(b"pong");
            }
        }
    });
}

fn pin_this_thread() {
    let mut set = nix::sched::CpuSet::new();
    set.set(CPU.parse().unwrap()).unwrap();
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// Runs the client in pod `pod` (in node `cg` cgroup when given); returns (p50, p99, mean) µs.
fn measure(c: &Cluster, pod: usize, cgroup: Option<&Path>, addr: SocketAddr) -> (u64, u64, u64) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = c.pods[pod].netns.command("taskset").unwrap();
    cmd.args(["-c", CPU])
        .arg(exe)
        .args(["client", &addr.to_string(), &ROUNDS.to_string()]);
    if let Some(cg) = cgroup {
        join_cgroup(&mut cmd, cg);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "client {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn services(n: usize, backend: Ipv4Addr) -> Vec<Service> {
    (0..n)
        .map(|i| Service {
            namespace: "bench".into(),
            name: format!("svc{i}"),
            cluster_ips: vec![vip(i)],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![ServicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                target_port: Some(8080),
            }],
            external_traffic_policy_local: false,
            session_affinity_timeout: None,
            health_check_node_port: None,
            endpoints: vec![Endpoint {
                ip: backend,
                node_name: Some("node1".into()),
                ready: true,
                serving: true,
                terminating: false,
                ports: vec![],
            }],
        })
        .collect()
}

/// iptables-restore input laid out as kube-proxy lays it out, `n` Services with one
/// endpoint each (plus the statistic-mode probability rule of a 1-of-1 split).
fn kube_proxy_rules(n: usize, backend: Ipv4Addr) -> String {
    let mut chains = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    let mut rules = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
    );
    for i in 0..n {
        let svc = format!("KUBE-SVC-{i:016X}");
        let sep = format!("KUBE-SEP-{i:016X}");
        chains.push_str(&format!(":{svc} - [0:0]\n:{sep} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"bench/svc{i} cluster IP\" -m tcp --dport 80 -j {svc}\n\
             -A {svc} -m comment --comment \"bench/svc{i} -> {backend}:8080\" -m statistic --mode random --probability 1.0000000000 -j {sep}\n\
             -A {sep} -s {backend}/32 -m comment --comment \"bench/svc{i}\" -j KUBE-MARK-MASQ\n\
             -A {sep} -p tcp -m comment --comment \"bench/svc{i}\" -m tcp -j DNAT --to-destination {backend}:8080\n",
            vip(i)
        ));
    }
    format!("{chains}{rules}COMMIT\n")
}

fn sync_latency(pin_dir: &Path, n: usize, backend: Ipv4Addr) -> (u128, u128) {
    let mut maps = BpfMaps::open(pin_dir).unwrap();
    let current = maps.read_state().unwrap();
    let node = NodeContext {
        node_name: "node1".into(),
        node_ip: None,
    };
    let mut r = Reconciler::new(node, &current);
    let mut svcs = services(n, backend);
    let ops = r.resync(&svcs, &current).unwrap();
    maps.write_all(&ops).unwrap();
    // Change 200 Services one at a time (a new backend port: endpoints changed), time
    // each until its entry is in the map.
    let mut lat = Vec::new();
    for k in 0..200 {
        let i = (k * 7919) % n;
        let port = 9000 + k as u16;
        svcs[i].endpoints[0].ports = vec![skein_proxy::model::EndpointPort {
            name: String::new(),
            protocol: Protocol::Tcp,
            port,
        }];
        let t = Instant::now();
        let ops = r.update(&svcs[i]).unwrap();
        maps.write_all(&ops).unwrap();
        let key = SvcKey::new(vip(i), 80, PROTO_TCP, SCOPE_CLUSTER);
        assert!(maps.has_frontend(&key));
        lat.push(t.elapsed().as_micros());
    }
    lat.sort_unstable();
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn bench(sizes: &[usize]) {
    let mut c = Cluster::start(2);
    // node1: skein-proxy; node2: kube-proxy-style iptables. Backend and client pods on each.
    let b1 = c.add_pod(1, 1);
    let cl1 = c.add_pod(1, 2);
    let b2 = c.add_pod(2, 1);
    let cl2 = c.add_pod(2, 2);
    serve_ping(&c, b1, 8080);
    serve_ping(&c, b2, 8080);
    let (ip1, ip2) = (c.pods[b1].ip, c.pods[b2].ip);
    let cg1 = c.cgroup(1);
    let cfg = InstallConfig {
        pin_dir: c.pin_dir(1),
        cgroup: Some(cg1.clone()),
        uplink: None,
        node_ip: None,
        pod_routing: None,
    };
    let node = NodeContext {
        node_name: "node1".into(),
        node_ip: None,
    };

    println!(
        "skein-proxy benchmark ({ROUNDS} connections per figure, client and server on CPU {CPU}; µs)"
    );
    println!();
    println!("1. connect + request/response, one Service");
    skein_proxy::apply::apply_set(
        &cfg,
        node.clone(),
        &ServiceSet {
            services: services(1, ip1),
        },
    )
    .unwrap();
    let direct = measure(&c, cl1, Some(&cg1), SocketAddr::from((ip1, 8080)));
    let via = measure(&c, cl1, Some(&cg1), SocketAddr::from((vip(0), 80)));
    let direct2 = measure(&c, cl1, Some(&cg1), SocketAddr::from((ip1, 8080)));
    let base = (direct.0 + direct2.0) / 2;
    println!(
        "   {:<34} p50 {:>6} p99 {:>6} mean {:>6}",
        "pod IP directly (baseline)",
        base,
        direct.1.max(direct2.1),
        (direct.2 + direct2.2) / 2
    );
    println!(
        "   {:<34} p50 {:>6} p99 {:>6} mean {:>6}   overhead p50 {:+.1}%",
        "ClusterIP via skein-proxy",
        via.0,
        via.1,
        via.2,
        (via.0 as f64 / base as f64 - 1.0) * 100.0
    );
    println!();
    println!(
        "2. first / last Service with N Services loaded (p50 µs; baseline pod IP direct {base})"
    );
    println!(
        "   {:>6}  {:>14} {:>14}   {:>14} {:>14}   {:>12}",
        "N", "iptables first", "iptables last", "skein first", "skein last", "iptables load"
    );
    for &n in sizes {
        let rules = kube_proxy_rules(n, ip2);
        let t = Instant::now();
        let mut cmd = c.bed.node(2).command("iptables-legacy-restore").unwrap();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "iptables-legacy-restore failed"
        );
        let load = t.elapsed();
        let ipt_first = measure(&c, cl2, None, SocketAddr::from((vip(0), 80)));
        let ipt_last = measure(&c, cl2, None, SocketAddr::from((vip(n - 1), 80)));
        skein_proxy::apply::apply_set(
            &cfg,
            node.clone(),
            &ServiceSet {
                services: services(n, ip1),
            },
        )
        .unwrap();
        let sk_first = measure(&c, cl1, Some(&cg1), SocketAddr::from((vip(0), 80)));
        let sk_last = measure(&c, cl1, Some(&cg1), SocketAddr::from((vip(n - 1), 80)));
        println!(
            "   {:>6}  {:>14} {:>14}   {:>14} {:>14}   {:>10.2}s",
            n,
            ipt_first.0,
            ipt_last.0,
            sk_first.0,
            sk_last.0,
            load.as_secs_f64()
        );
    }
    c.bed
        .node(2)
        .run("iptables-legacy", &["-t", "nat", "-F"])
        .unwrap();
    c.bed
        .node(2)
        .run("iptables-legacy", &["-t", "nat", "-X"])
        .unwrap();
    println!();
    println!(
        "3. Service change -> BPF map entry present (reconciler + map writes; API leg not included), µs"
    );
    println!("   {:>6}  {:>8} {:>8}", "N", "p50", "p99");
    for &n in sizes {
        let (p50, p99) = sync_latency(&cfg.pin_dir, n, ip1);
        println!("   {:>6}  {:>8} {:>8}", n, p50, p99);
    }
    println!();
    let n = *sizes.iter().max().unwrap_or(&100);
    println!(
        "4. API change -> BPF map entry present, through the daemon's watchers, {n} Services loaded, µs"
    );
    // The daemon starts from empty maps, so its first full sync is measured too.
    skein_proxy::datapath::cleanup(&cfg.pin_dir).unwrap();
    daemon_latency(&c, n, ip1);
    let _ = skein_proxy::datapath::cleanup(&cfg.pin_dir);
}

fn api_service(i: usize) -> serde_json::Value {
    fake_api::service(
        &format!("svc{i}"),
        &vip(i).to_string(),
        serde_json::json!([{"name": "p", "port": 80, "targetPort": 8080, "protocol": "TCP"}]),
    )
}

fn api_slice(i: usize, backend: Ipv4Addr, port: u16) -> serde_json::Value {
    fake_api::slice(
        &format!("svc{i}"),
        &[(backend.to_string(), "node1")],
        serde_json::json!([{"name": "p", "port": port, "protocol": "TCP"}]),
    )
}

fn percentiles(mut v: Vec<u128>) -> (u128, u128) {
    v.sort_unstable();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn daemon_latency(c: &Cluster, n: usize, backend: Ipv4Addr) {
    let listener: TcpListener = c
        .bed
        .node(1)
        .in_netns(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let api = fake_api::FakeApi::serve(listener);
    for i in 0..n {
        api.put_service(api_service(i));
        api.put_slice(api_slice(i, backend, 8080));
    }
    let exe = std::env::current_exe().unwrap();
    let proxy = exe.parent().unwrap().parent().unwrap().join("skein-proxy");
    let mut cmd = c.bed.node(1).command(&proxy).unwrap();
    cmd.args([
        "--node-name",
        "node1",
        "--metrics-port",
        "0",
        "--cleanup",
        "--api-server",
    ])
    .arg(format!("http://{}", api.addr))
    .arg("--pin-dir")
    .arg(c.pin_dir(1))
    .arg("--cgroup-root")
    .arg(c.cgroup(1));
    let log = c.bed.node(1).dirs.log_dir.join("bench-daemon.log");
    let mut daemon = skein_testbed::Daemon::spawn("skein-proxy", cmd, &log).unwrap();
    let t = Instant::now();
    let last = SvcKey::new(vip(n - 1), 80, PROTO_TCP, SCOPE_CLUSTER);
    let maps = loop {
        if let Ok(m) = BpfMaps::open(&c.pin_dir(1))
            && m.backend(&last, 0).is_some_and(|b| b.port() == 8080)
        {
            break m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "daemon did not sync: {}",
            daemon.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    println!(
        "   daemon start, list, full resync of {n} Services (debug build): {} ms",
        t.elapsed().as_millis()
    );
    let wait = |f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "change not applied");
            std::thread::sleep(Duration::from_micros(100));
        }
        t.elapsed().as_micros()
    };
    let mut slice_lat = Vec::new();
    for k in 0..200 {
        let i = (k * 7919) % n;
        let port = 9000 + k as u16;
        let key = SvcKey::new(vip(i), 80, PROTO_TCP, SCOPE_CLUSTER);
        let t = Instant::now();
        api.put_slice(api_slice(i, backend, port));
        let _ = wait(&|| maps.backend(&key, 0).is_some_and(|b| b.port() == port));
        slice_lat.push(t.elapsed().as_micros());
    }
    let mut svc_lat = Vec::new();
    for k in 0..200 {
        let i = n + k;
        let key = SvcKey::new(vip(i), 80, PROTO_TCP, SCOPE_CLUSTER);
        let t = Instant::now();
        api.put_slice(api_slice(i, backend, 8080));
        api.put_service(api_service(i));
        let _ = wait(&|| maps.backend(&key, 0).is_some());
        svc_lat.push(t.elapsed().as_micros());
    }
    let (a, b) = percentiles(slice_lat);
    let (x, y) = percentiles(svc_lat);
    println!(
        "   {:<34} p50 {:>8} p99 {:>8}   (goal p99 <= 100000)",
        "EndpointSlice port change", a, b
    );
    println!(
        "   {:<34} p50 {:>8} p99 {:>8}",
        "new Service + EndpointSlice", x, y
    );
    daemon.stop();
}
