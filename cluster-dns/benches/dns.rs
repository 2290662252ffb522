//! skein-dns figures, each next to a baseline measured in the same run:
//!
//! 1. zone build time for N Services (half normal with 2 named ports, half headless with
//!    a 3-endpoint slice), against a plain HashMap of the same number of names;
//! 2. UDP query round trips from node2 to skein-dns on node1 (serving the N-Service
//!    zone) against the same round trips to a UDP echo server on node1: the echo is the
//!    floor the namespaces and the kernel set.
//!
//! Run through scripts/bench-dns.sh (root; pinned to one CPU). Counts: SKEIN_DNS_BENCH_SERVICES,
//! SKEIN_DNS_BENCH_QUERIES.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skein_testbed::stats::percentile;
use skein_testbed::{Config, EtcdMode, TestBed};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn objects(n: usize) -> serde_json::Value {
    let mut items = Vec::new();
    for i in 0..n {
        let name = format!("svc{i}");
        if i % 2 == 0 {
            items.push(serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                         "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}
            }));
        } else {
            items.push(serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
            }));
            let eps: Vec<_> = (0..3)
                .map(
                    |k| serde_json::json!({"addresses": [format!("10.244.{}.{}", k, i % 250 + 1)]}),
                )
                .collect();
            items.push(serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-x"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "endpoints": eps,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
            }));
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn bench_build(n: usize) {
    let list = objects(n);
    let parsed = skein_dns::objects_file::parse(&list.to_string()).expect("parse");
    let (services, slices): (Vec<Service>, Vec<EndpointSlice>) = (parsed.services, parsed.slices);
    let rounds = 5;
    let mut ours = Vec::new();
    let mut names = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let built = skein_dns::build_zone("cluster.local", &services, &slices);
        ours.push(t.elapsed());
        names = built.zone.len();
    }
    let mut base = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut m = std::collections::HashMap::new();
        for s in &services {
            let name = s.metadata.name.clone().unwrap_or_default();
            m.insert(format!("{name}.bench.svc.cluster.local"), s.spec.clone());
        }
        base.push(t.elapsed());
        std::hint::black_box(&m);
    }
    ours.sort();
    base.sort();
    println!(
        "zone build, {n} services ({names} names): skein-dns median {:.1} ms | baseline HashMap of names {:.1} ms",
        ours[rounds / 2].as_secs_f64() * 1e3,
        base[rounds / 2].as_secs_f64() * 1e3
    );
}

/// Sequential round trips from `client` to `server`; each payload comes from `make`.
fn round_trips(
    client: &skein_testbed::Host,
    server: SocketAddr,
    count: usize,
    make: impl Fn(usize) -> Vec<u8> + Send + Sync,
    check: impl Fn(&[u8]) -> bool + Send + Sync,
) -> Vec<Duration> {
    client
        .in_netns(|| {
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind client");
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            sock.connect(server).expect("connect");
            let mut buf = [0u8; 4096];
            let mut out = Vec::with_capacity(count);
            for i in 0..count + count / 10 {
                let q = make(i);
                let t = Instant::now();
                sock.send(&q).expect("send");
                let n = sock.recv(&mut buf).expect("no answer within 2 s");
                let dt = t.elapsed();
                assert!(check(&buf[..n]), "unexpected answer");
                if i >= count / 10 {
                    out.push(dt); // the first tenth warms up
                }
            }
            out.sort();
            out
        })
        .expect("enter client netns")
}

fn bench_queries(n: usize, count: usize) {
    let bed = TestBed::start(Config {
        prefix: None,
        nodes: 2,
        outside: false,
        etcd: EtcdMode::None,
        cgroups: false,
    })
    .expect("start test bed (needs root)");
    let (server_host, client) = (bed.node(1), bed.node(2));
    let file = bed.state_dir().join("objects.json");
    std::fs::write(&file, objects(n).to_string()).expect("write objects");
    let bin = std::env::var("SKEIN_DNS_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/skein-dns").into()
    });
    let mut cmd = server_host.command(&bin).expect("command");
    cmd.args([
        "--from-file",
        file.to_str().unwrap(),
        "--listen",
        &format!("{}:53", server_host.addr),
    ])
    .env("RUST_LOG", "warn");
    let mut dns = server_host
        .spawn(
            "skein-dns",
            cmd,
            &server_host.dirs.log_dir.join("skein-dns.log"),
        )
        .expect("spawn skein-dns");
    let server = SocketAddr::from((server_host.addr, 53));

    let query = |i: usize| {
        let mut m = Message::new((i % 65536) as u16, MessageType::Query, OpCode::Query);
        let svc = (i * 7919) % n;
        m.add_query(Query::query(
            Name::from_ascii(format!("svc{svc}.bench.svc.cluster.local.")).unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    };
    let answered = |b: &[u8]| {
        Message::from_vec(b).is_ok_and(|m| {
            m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
        })
    };
    // Wait for the server to be up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .in_netns(|| {
            let s = UdpSocket::bind("0.0.0.0:0").ok()?;
            s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
            s.send_to(&query(0), server).ok()?;
            let mut b = [0u8; 512];
            s.recv(&mut b).ok()
        })
        .expect("netns")
        .is_none()
    {
        assert!(dns.is_running(), "skein-dns exited: {}", dns.log_tail(20));
        assert!(
            Instant::now() < deadline,
            "skein-dns not answering: {}",
            dns.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = round_trips(client, server, count, query, answered);

    // Baseline: a UDP echo in the same namespace, on another port.
    let echo_addr = SocketAddr::from((server_host.addr, 5353));
    let echo = server_host
        .in_netns(|| UdpSocket::bind(echo_addr))
        .expect("netns")
        .expect("bind echo");
    echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let base = round_trips(client, echo_addr, count, query, |b| !b.is_empty());
    let _ = echo_thread.join();
    dns.stop();

    let rate = |v: &[Duration]| v.len() as f64 / v.iter().sum::<Duration>().as_secs_f64();
    println!(
        "udp A query round trip, {count} queries over {n} services: skein-dns p50 {} us p99 {} us ({:.0} q/s sequential) | baseline udp echo p50 {} us p99 {} us ({:.0} q/s)",
        us(percentile(&ours, 0.5)),
        us(percentile(&ours, 0.99)),
        rate(&ours),
        us(percentile(&base, 0.5)),
        us(percentile(&base, 0.99)),
        rate(&base),
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let n = env_count("SKEIN_DNS_BENCH_SERVICES", 2000).max(1);
    let count = env_count("SKEIN_DNS_BENCH_QUERIES", 5000).clamp(10, 100_000);
    bench_build(n);
    bench_build(n * 5);
    bench_queries(n, count);
}
