//! skein-dns on the Kubernetes watch path: a real skein-apiserver (on etcd) in node1's
//! namespace, skein-dns watching it with `--master`, objects created, changed and deleted
//! with kubectl, and the answers checked from node2's namespace as they follow.
//! Needs root and the built skein-apiserver (`cargo build -p skein-control-plane`).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use skein_testbed::{Daemon, EtcdMode, Host};
use support::*;

const API_PORT: u16 = 6443;

fn apiserver_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/skein-apiserver
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("skein-apiserver");
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build -p skein-control-plane --bin skein-apiserver` first",
        p.display()
    );
    p
}

fn kubectl(host: &Host, kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let mut cmd = host.command("kubectl").unwrap();
    cmd.env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .args(["--request-timeout", "20s"])
        .args(args);
    let out = cmd.output().expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec:
    ports: [{name: http, port: 80, protocol: TCP}]
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: default}
  spec:
    clusterIP: None
    ports: [{name: pg, port: 5432}]
- apiVersion: v1
  kind: Service
  metadata: {name: search, namespace: default}
  spec: {type: ExternalName, externalName: search.example.com}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: db-abc
    namespace: default
    labels: {kubernetes.io/service-name: db}
  addressType: IPv4
  endpoints:
  - addresses: [10.244.1.5]
    hostname: db-0
    conditions: {ready: true}
  - addresses: [10.244.3.9]
    conditions: {ready: false}
  ports: [{name: pg, port: 5432, protocol: TCP}]
"#;

#[test]
fn follows_services_and_endpointslices_from_the_api_server() {
    let bed = bed(2, EtcdMode::Single);
    let api_bin = apiserver_binary();
    let etcd = bed.etcd().endpoints();
    let (node1, client) = (bed.node(1), bed.node(2));
    let url = format!("http://{}:{API_PORT}", node1.addr);

    let mut cmd = node1.command(&api_bin).unwrap();
    cmd.args([
        "--etcd-servers",
        &etcd,
        "--bind-address",
        &node1.addr.to_string(),
        "--port",
        &API_PORT.to_string(),
    ]);
    // Declared after the bed: dropped (stopped) before it.
    let api = node1
        .spawn(
            "skein-apiserver",
            cmd,
            &node1.dirs.log_dir.join("apiserver.log"),
        )
        .expect("spawn skein-apiserver");

    // skein-dns can start before the API server answers: it serves SERVFAIL until the
    // first lists, then the zone.
    let mut dns = start_dns(
        node1,
        &node1.dirs.log_dir.join("skein-dns.log"),
        &["--master", &url],
    );
    let server = SocketAddr::from((node1.addr, 53));
    wait_ready(client, server, &mut dns);

    let kubeconfig = bed.state_dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skein\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: skein\n  context:\n    cluster: skein\n    user: u\n    namespace: default\ncurrent-context: skein\n"
        ),
    )
    .unwrap();
    let objects = write_objects(bed.state_dir(), "objects.yaml", OBJECTS);
    let home = bed.state_dir().to_owned();
    let kc = |args: &[&str]| kubectl(client, &kubeconfig, &home, args);
    // The API server may still be starting: retry create for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut cmd = client.command("kubectl").unwrap();
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("HOME", &home)
            .args([
                "--request-timeout",
                "5s",
                "create",
                "--validate=false",
                "-f",
            ])
            .arg(&objects);
        let out = cmd.output().expect("run kubectl");
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl create failed: {}\napiserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            api.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let cluster_ip = kc(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        cluster_ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "web got ClusterIP {cluster_ip:?}"
    );

    let within = Duration::from_secs(20);
    // Normal Service: the ClusterIP the API server allocated.
    eventually(
        client,
        server,
        "web.default.svc.cluster.local.",
        RecordType::A,
        within,
        &dns,
        |m| addrs(m) == ips(&[&cluster_ip]),
    );
    // Headless: the ready endpoint only, and its hostname.
    eventually(
        client,
        server,
        "db.default.svc.cluster.local.",
        RecordType::A,
        within,
        &dns,
        |m| addrs(m) == ips(&["10.244.1.5"]),
    );
    eventually(
        client,
        server,
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
        within,
        &dns,
        |m| addrs(m) == ips(&["10.244.1.5"]),
    );
    // ExternalName.
    eventually(
        client,
        server,
        "search.default.svc.cluster.local.",
        RecordType::A,
        within,
        &dns,
        |m| cnames(m) == ["search.example.com."],
    );

    // The operator's workflow from the README: dump the state with kubectl and serve it
    // from the file; the answers are the same.
    let dump = kc(&["get", "services,endpointslices", "-A", "-o", "json"]);
    let dump_file = write_objects(bed.state_dir(), "dump.json", &dump);
    let mut cmd = node1.command(DNS_BIN).unwrap();
    cmd.args(["--listen", &format!("{}:5353", node1.addr), "--from-file"])
        .arg(&dump_file);
    let mut from_file = node1
        .spawn(
            "skein-dns-file",
            cmd,
            &node1.dirs.log_dir.join("skein-dns-file.log"),
        )
        .expect("spawn skein-dns --from-file");
    let file_server = SocketAddr::from((node1.addr, 5353));
    wait_ready(client, file_server, &mut from_file);
    let m = query(
        client,
        file_server,
        "web.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(
        addrs(&m),
        ips(&[&cluster_ip]),
        "log:\n{}",
        from_file.log_tail(20)
    );
    let m = query(
        client,
        file_server,
        "db.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(addrs(&m), ips(&["10.244.1.5"]));
    let m = query(
        client,
        file_server,
        "search.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(cnames(&m), ["search.example.com."]);
    from_file.stop();

    // The not-ready endpoint becomes ready: it is published.
    kc(&[
        "patch",
        "endpointslice",
        "db-abc",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/endpoints/1/conditions/ready","value":true}]"#,
    ]);
    eventually(
        client,
        server,
        "db.default.svc.cluster.local.",
        RecordType::A,
        within,
        &dns,
        |m| addrs(m) == ips(&["10.244.1.5", "10.244.3.9"]),
    );

    // A deleted Service disappears.
    kc(&["delete", "service", "web", "--wait=false"]);
    eventually(
        client,
        server,
        "web.default.svc.cluster.local.",
        RecordType::A,
        within,
        &dns,
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    );
    // Outside names stay NXDOMAIN (no upstream given).
    let m = query(client, server, "www.example.com.", RecordType::A, false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        dns.is_running(),
        "skein-dns exited; log:\n{}",
        dns.log_tail(30)
    );
}

#[test]
fn serves_servfail_not_nxdomain_until_the_first_list() {
    let bed = bed(2, EtcdMode::None);
    let (node1, client) = (bed.node(1), bed.node(2));
    // Nothing listens at this API address: the watch never lists.
    let url = format!("http://{}:{API_PORT}", node1.addr);
    let mut dns: Daemon = start_dns(
        node1,
        &node1.dirs.log_dir.join("skein-dns.log"),
        &["--master", &url],
    );
    let server = SocketAddr::from((node1.addr, 53));
    wait_ready(client, server, &mut dns);
    for _ in 0..3 {
        let m = query(
            client,
            server,
            "web.default.svc.cluster.local.",
            RecordType::A,
            false,
        )
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Outside names do not depend on the API.
    let m = query(client, server, "www.example.com.", RecordType::A, false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        dns.is_running(),
        "skein-dns exited; log:\n{}",
        dns.log_tail(30)
    );
}
