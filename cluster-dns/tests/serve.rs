//! The skein-dns binary end to end: started in a test-bed node's namespace from a file of
//! Services and EndpointSlices, queried over UDP and TCP from another node's namespace.
//! Needs root (it builds namespaces); every test makes its own bed.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use skein_testbed::{EtcdMode, TestBed};
use support::*;

fn bed(nodes: usize) -> TestBed {
    support::bed(nodes, EtcdMode::None)
}

/// The cluster the tests serve: a normal, a headless and an ExternalName Service.
const OBJECTS: &str = r#"{
  "apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Service",
     "metadata": {"name": "web", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"apiVersion": "v1", "kind": "Service",
     "metadata": {"name": "db", "namespace": "default"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
    {"apiVersion": "v1", "kind": "Service",
     "metadata": {"name": "search", "namespace": "prod"},
     "spec": {"type": "ExternalName", "externalName": "search.example.com"}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "db-abc", "namespace": "default",
                  "labels": {"kubernetes.io/service-name": "db"}},
     "addressType": "IPv4",
     "endpoints": [
       {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
       {"addresses": ["10.244.2.7"], "conditions": {"ready": true}},
       {"addresses": ["10.244.3.9"], "conditions": {"ready": false}}],
     "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}
  ]}"#;

#[test]
fn answers_normal_headless_and_external_name_services_and_nxdomain_outside() {
    let bed = bed(2);
    let (server_host, client) = (bed.node(1), bed.node(2));
    let file = write_objects(bed.state_dir(), "objects.json", OBJECTS);
    let mut dns = start_dns(
        server_host,
        &server_host.dirs.log_dir.join("skein-dns.log"),
        &["--from-file", file.to_str().unwrap(), "--ttl", "7"],
    );
    let server = SocketAddr::from((server_host.addr, 53));
    wait_ready(client, server, &mut dns);
    let log = || dns.log_tail(30);

    // Normal Service: its ClusterIP, authoritative, with the configured TTL.
    for tcp in [false, true] {
        let m = query(
            client,
            server,
            "web.default.svc.cluster.local.",
            RecordType::A,
            tcp,
        )
        .unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "tcp={tcp}; log:\n{}",
            log()
        );
        assert!(m.metadata.authoritative);
        assert_eq!(addrs(&m), ips(&["10.96.0.20"]), "tcp={tcp}");
        assert_eq!(m.answers[0].ttl, 7);
    }
    // Case does not matter; the answer echoes the asked spelling.
    let m = query(
        client,
        server,
        "WEB.Default.SVC.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(addrs(&m), ips(&["10.96.0.20"]));
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "WEB.Default.SVC.cluster.local."
    );

    // SRV for the named port.
    let m = query(
        client,
        server,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .unwrap();
    let srv: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(srv, vec![(80, "web.default.svc.cluster.local.".to_owned())]);

    // Headless: the ready endpoints only, and a name per endpoint.
    let m = query(
        client,
        server,
        "db.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), ips(&["10.244.1.5", "10.244.2.7"]));
    let m = query(
        client,
        server,
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
        true,
    )
    .unwrap();
    assert_eq!(addrs(&m), ips(&["10.244.1.5"]));

    // ExternalName: a CNAME to the external name, not followed outside the zone.
    let m = query(
        client,
        server,
        "search.prod.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let cnames: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(cnames, vec!["search.example.com.".to_owned()]);

    // Missing names in the zone: NXDOMAIN with the zone's SOA (for negative caching).
    let m = query(
        client,
        server,
        "nope.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(
        m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "SOA in authority: {m:?}"
    );
    // A name that exists without that type: NOERROR and empty.
    let m = query(
        client,
        server,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        false,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());

    // Outside the zone, without --upstream: NXDOMAIN, not forwarded anywhere.
    for name in ["www.example.com.", "kubernetes.io."] {
        let m = query(client, server, name, RecordType::A, false).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert!(!m.metadata.recursion_available);
    }
    let tail = log();
    assert!(dns.is_running(), "log:\n{tail}");
}

#[test]
fn forwards_outside_names_only_to_the_explicit_upstream() {
    let bed = bed(3);
    let (cluster, client, upstream) = (bed.node(1), bed.node(2), bed.node(3));
    // The "upstream" is another skein-dns serving example.com.
    let upstream_objects = r#"{"kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "www", "namespace": "corp"},
         "spec": {"clusterIP": "192.0.2.80"}}]}"#;
    let up_file = write_objects(bed.state_dir(), "upstream.json", upstream_objects);
    let mut up = start_dns(
        upstream,
        &upstream.dirs.log_dir.join("skein-dns.log"),
        &[
            "--from-file",
            up_file.to_str().unwrap(),
            "--domain",
            "example.com",
        ],
    );
    let file = write_objects(bed.state_dir(), "objects.json", OBJECTS);
    let mut dns = start_dns(
        cluster,
        &cluster.dirs.log_dir.join("skein-dns.log"),
        &[
            "--from-file",
            file.to_str().unwrap(),
            "--upstream",
            &format!("{}:53", upstream.addr),
        ],
    );
    let server = SocketAddr::from((cluster.addr, 53));
    wait_ready(client, server, &mut dns);
    let up_addr = SocketAddr::from((upstream.addr, 53));
    let deadline = Instant::now() + Duration::from_secs(15);
    while query(
        client,
        up_addr,
        "www.corp.svc.example.com.",
        RecordType::A,
        false,
    )
    .is_err()
    {
        assert!(
            up.is_running() && Instant::now() < deadline,
            "upstream log:\n{}",
            up.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Forwarded: the upstream's answer comes back through the cluster server.
    let m = query(
        client,
        server,
        "www.corp.svc.example.com.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "log:\n{}",
        dns.log_tail(30)
    );
    assert_eq!(addrs(&m), ips(&["192.0.2.80"]));
    assert!(m.metadata.recursion_available);
    // The upstream's NXDOMAIN is passed on too.
    let m = query(
        client,
        server,
        "nope.corp.svc.example.com.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Names in the cluster zone are still answered locally.
    let m = query(
        client,
        server,
        "web.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(addrs(&m), ips(&["10.96.0.20"]));

    // The upstream goes away: forwarding answers SERVFAIL, the cluster zone still works.
    up.stop();
    let m = query(
        client,
        server,
        "www.corp.svc.example.com.",
        RecordType::A,
        true,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = query(
        client,
        server,
        "db.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(addrs(&m), ips(&["10.244.1.5", "10.244.2.7"]));
}

#[test]
fn sighup_reloads_the_file_and_a_bad_file_keeps_the_old_zone() {
    let bed = bed(2);
    let (server_host, client) = (bed.node(1), bed.node(2));
    let file = write_objects(bed.state_dir(), "objects.json", OBJECTS);
    let mut dns = start_dns(
        server_host,
        &server_host.dirs.log_dir.join("skein-dns.log"),
        &["--from-file", file.to_str().unwrap()],
    );
    let server = SocketAddr::from((server_host.addr, 53));
    wait_ready(client, server, &mut dns);

    // web moves to another ClusterIP.
    write_objects(
        bed.state_dir(),
        "objects.json",
        &OBJECTS.replace("10.96.0.20", "10.96.0.99"),
    );
    dns.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = query(
            client,
            server,
            "web.default.svc.cluster.local.",
            RecordType::A,
            false,
        )
        .unwrap();
        if addrs(&m) == ips(&["10.96.0.99"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reloaded; log:\n{}",
            dns.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A broken file is reported and the zone stays as it was.
    write_objects(bed.state_dir(), "objects.json", "{broken");
    dns.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dns.log_tail(50).contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged:\n{}",
            dns.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = query(
        client,
        server,
        "web.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(addrs(&m), ips(&["10.96.0.99"]));
    assert!(dns.is_running());
}

#[test]
fn bad_input_fails_at_start_with_a_clear_error() {
    let bed = bed(1);
    let host = bed.node(1);
    let pod_list = r#"{"kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}]}"#;
    let file = write_objects(bed.state_dir(), "pods.json", pod_list);
    let listen = format!("{}:53", host.addr);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--from-file".into(), file.display().to_string()],
            "item 0 (Pod \"p\")",
        ),
        (
            vec!["--from-file".into(), "/nonexistent/objects.json".into()],
            "read /nonexistent/objects.json",
        ),
        (
            vec![
                "--from-file".into(),
                file.display().to_string(),
                "--domain".into(),
                "bad_domain".into(),
            ],
            "--domain \"bad_domain\" is not a DNS name",
        ),
        (
            vec![
                "--from-file".into(),
                file.display().to_string(),
                "--upstream".into(),
                "nowhere".into(),
            ],
            "\"nowhere\" is not ADDR:PORT",
        ),
        (
            vec![
                "--from-file".into(),
                file.display().to_string(),
                "--ttl".into(),
                "99999".into(),
            ],
            "99999",
        ),
        (
            vec![
                "--from-file".into(),
                file.display().to_string(),
                "--upstream".into(),
                listen.clone(),
            ],
            "own --listen address",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = host.command(DNS_BIN).unwrap();
        cmd.args(["--listen", &listen]).args(&args);
        let out = cmd.output().expect("run skein-dns");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(want),
            "{args:?}: stderr lacks {want:?}:\n{stderr}"
        );
    }
    // Nothing was left listening.
    let ss = host.run("ss", &["-Hlnu"]).unwrap() + &host.run("ss", &["-Hlnt"]).unwrap();
    assert!(!ss.contains(":53 "), "left a listener:\n{ss}");
}
