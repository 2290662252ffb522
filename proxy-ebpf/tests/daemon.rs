//! The daemon end to end against a stand-in API (tests/fake_api: list + watch, enough for
//! kube-rs watchers): Services and EndpointSlices from the API become map entries, a
//! change is applied incrementally, metrics and healthCheckNodePort answer, a restart
//! keeps an open NodePort stream and resyncs away a Service deleted while it was down,
//! and `--cleanup` removes everything. Needs root.

mod common;
mod fake_api;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use common::*;
use fake_api::{FakeApi, service, slice};
use serde_json::json;
use skein_testbed::Daemon;

const METRICS_PORT: u16 = 10249;

fn start_daemon(c: &Cluster, api: &FakeApi, cleanup: bool, run: usize) -> Daemon {
    let mut cmd = c.bed.node(1).command(PROXY).unwrap();
    cmd.args(["--node-name", "node1", "--api-server"])
        .arg(format!("http://{}", api.addr))
        .arg("--pin-dir")
        .arg(c.pin_dir(1))
        .arg("--cgroup-root")
        .arg(c.cgroup(1))
        .args(["--metrics-port", &METRICS_PORT.to_string()]);
    if cleanup {
        cmd.arg("--cleanup");
    }
    cmd.env("RUST_LOG", "info");
    let log = c
        .bed
        .node(1)
        .dirs
        .log_dir
        .join(format!("skein-proxy-{run}.log"));
    Daemon::spawn("skein-proxy", cmd, &log).unwrap()
}

/// Waits for `f` to hold; on timeout fails with the daemon's log.
fn wait_until(d: &Daemon, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; skein-proxy log:\n{}",
            d.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One connection from the client pod to `addr`: the identity that answered, or ERR.
fn who(c: &Cluster, client: usize, vip: &str, port: u16) -> String {
    let l = c.client(client, &["tcp", vip, &port.to_string(), "1"]);
    l[0].split_whitespace().next().unwrap().to_owned()
}

fn http_get(c: &Cluster, from_outside: bool, addr: SocketAddr, path: &str) -> Option<String> {
    let host = if from_outside {
        c.bed.outside()
    } else {
        &c.bed.node(1).host
    };
    let mut s = host.connect_tcp(addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn daemon_follows_the_api_survives_a_restart_and_cleans_up() {
    let mut c = Cluster::start(1);
    let b = c.add_pod(1, 1);
    let client = c.add_pod(1, 2);
    let bip = c.pods[b].ip;
    serve_tcp(&c.pods[b].netns, SocketAddr::from((bip, 8080)), "web");
    serve_echo(&c.pods[b].netns, SocketAddr::from((bip, 9090)), "echo");
    let listener: TcpListener = c
        .bed
        .node(1)
        .in_netns(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let api = FakeApi::serve(listener);
    let ep = vec![(bip.to_string(), "node1")];
    let web_ports = json!([
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "echo", "port": 90, "targetPort": 9090, "nodePort": 30090, "protocol": "TCP"}]);
    let slice_ports = json!([
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "echo", "port": 9090, "protocol": "TCP"}]);
    api.put_service(service("web", "10.96.0.10", web_ports.clone()));
    api.put_slice(slice("web", &ep, slice_ports.clone()));
    let p1 = json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]);
    let s1 = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
    api.put_service(service("stale", "10.96.0.12", p1.clone()));
    api.put_slice(slice("stale", &ep, s1.clone()));
    // externalTrafficPolicy: Local with a healthCheckNodePort.
    let mut hc = service("hc", "10.96.0.13", p1.clone());
    hc["spec"]["type"] = json!("LoadBalancer");
    hc["spec"]["externalTrafficPolicy"] = json!("Local");
    hc["spec"]["healthCheckNodePort"] = json!(31000);
    api.put_service(hc);
    api.put_slice(slice("hc", &ep, s1.clone()));

    let mut d1 = start_daemon(&c, &api, false, 1);
    wait_until(
        &d1,
        "the daemon to program web",
        Duration::from_secs(30),
        || who(&c, client, "10.96.0.10", 80) == "web",
    );
    assert_eq!(who(&c, client, "10.96.0.12", 80), "web");

    // A Service added later: applied from the watch event alone.
    api.put_service(service("later", "10.96.0.11", p1.clone()));
    api.put_slice(slice("later", &ep, s1.clone()));
    wait_until(&d1, "the new Service", Duration::from_secs(10), || {
        who(&c, client, "10.96.0.11", 80) == "web"
    });
    // Deleted: it stops answering.
    api.delete_service("default", "later");
    wait_until(
        &d1,
        "the deleted Service to stop",
        Duration::from_secs(10),
        || who(&c, client, "10.96.0.11", 80) == "ERR",
    );

    // Metrics and the health check port.
    let metrics = http_get(
        &c,
        false,
        SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)),
        "/metrics",
    )
    .expect("metrics answer");
    assert!(metrics.contains("skein_proxy_services 3"), "{metrics}");
    assert!(
        metrics.contains("skein_proxy_service_connections_total{service=\"default/web:http/TCP\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skein_proxy_sync_duration_seconds_count"),
        "{metrics}"
    );
    let health = http_get(
        &c,
        true,
        SocketAddr::from((Ipv4Addr::new(198, 51, 100, 11), 31000)),
        "/healthz",
    )
    .expect("health check answers");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"localEndpoints\":1"), "{health}");
    // Its only endpoint goes away: the node reports it has none (503), so a load
    // balancer stops sending there.
    api.put_slice(slice("hc", &[], s1.clone()));
    wait_until(
        &d1,
        "healthCheckNodePort to answer 503",
        Duration::from_secs(10),
        || {
            http_get(
                &c,
                true,
                SocketAddr::from((Ipv4Addr::new(198, 51, 100, 11), 31000)),
                "/",
            )
            .is_some_and(|h| h.starts_with("HTTP/1.1 503") && h.contains("\"localEndpoints\":0"))
        },
    );

    // An open NodePort stream from outside.
    let s = c
        .bed
        .outside()
        .connect_tcp(
            SocketAddr::from(([198, 51, 100, 11], 30090)),
            Duration::from_secs(3),
        )
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut ping = |n: u32| {
        w.write_all(format!("p{n}\n").as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, format!("echo p{n}\n"));
    };
    ping(1);

    // Restart: stop (no --cleanup), delete a Service while the proxy is down, start again.
    d1.stop();
    assert!(
        c.pin_dir(1).join(skein_proxy::maps::MAP_SVC).exists(),
        "pins outlive the process"
    );
    ping(2);
    api.delete_service("default", "stale");
    let _d2 = {
        let mut d2 = start_daemon(&c, &api, true, 2);
        wait_until(
            &d2,
            "the resync to remove the stale Service",
            Duration::from_secs(30),
            || who(&c, client, "10.96.0.12", 80) == "ERR",
        );
        assert_eq!(who(&c, client, "10.96.0.10", 80), "web");
        ping(3);
        let log = d2.log_tail(50);
        assert!(log.contains("full resync"), "{log}");

        // A deletion the watch never delivered, then the API compacts its history (410
        // Gone): the watchers list again and the full resync removes the Service.
        api.put_service(service("unseen", "10.96.0.14", p1.clone()));
        api.put_slice(slice("unseen", &ep, s1.clone()));
        wait_until(
            &d2,
            "the unseen Service to be programmed",
            Duration::from_secs(10),
            || who(&c, client, "10.96.0.14", 80) == "web",
        );
        api.delete_service_unseen("default", "unseen");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            who(&c, client, "10.96.0.14", 80),
            "web",
            "the deletion was not watched"
        );
        api.expire_watches();
        wait_until(
            &d2,
            "the relist to remove the unseen Service",
            Duration::from_secs(20),
            || who(&c, client, "10.96.0.14", 80) == "ERR",
        );

        // --cleanup on SIGTERM: everything detached and unpinned.
        d2.stop();
        d2
    };
    assert!(!c.pin_dir(1).exists(), "pin dir removed by --cleanup");
    assert_eq!(
        who(&c, client, "10.96.0.10", 80),
        "ERR",
        "no balancing after cleanup"
    );
}
