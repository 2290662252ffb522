//! Services on a real 3-node cluster, end to end: Services and EndpointSlices made by
//! skein-apiserver and the controller manager from `kubectl`, pods run by skein-agent
//! with skein-cni on flannel's subnets, and skein-proxy balancing at the socket
//! (ClusterIP, from client pods) and at tc on the uplink (NodePort, from `outside`).
//!
//! Every backend runs `WHO`: TCP 8080 answers "<pod name> <client address>" and closes,
//! TCP 8082 echoes lines prefixed with the pod name, UDP 8081 answers like 8080. The pod
//! name is the sandbox's hostname, so every answer says which backend served it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};
use skein_e2e::cluster::{Cluster, wait_for};

const WHO: &str = r#"
import socket, threading
H = socket.gethostname()
def serve(c, a, echo):
    with c:
        if not echo:
            c.sendall(f"{H} {a[0]}\n".encode())
            return
        f = c.makefile("rwb")
        for line in f:
            f.write(H.encode() + b" " + line)
            f.flush()
def tcp(port, echo):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    while True:
        c, a = s.accept()
        threading.Thread(target=serve, args=(c, a, echo), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(f"{H} {a[0]}\n".encode(), a)
threading.Thread(target=tcp, args=(8082, True), daemon=True).start()
threading.Thread(target=udp, args=(8081,), daemon=True).start()
tcp(8080, False)
"#;

/// A client pod's program: `tcp VIP N` (N connections to VIP:80, counts per backend and
/// the address getpeername shows), `udp VIP N` (N datagrams to VIP:53 on one socket,
/// counts per backend and the address replies come from), `refused VIP` (how a connect
/// to VIP:80 ends and how long it takes). Prints one JSON line.
const CLIENT: &str = r#"
import json, socket, sys, time
mode, vip = sys.argv[1], sys.argv[2]
out = {"counts": {}, "peers": []}
if mode == "tcp":
    for _ in range(int(sys.argv[3])):
        s = socket.create_connection((vip, 80), timeout=5)
        peer = s.getpeername()[0]
        name = s.makefile().readline().split()[0]
        s.close()
        out["counts"][name] = out["counts"].get(name, 0) + 1
        if peer not in out["peers"]:
            out["peers"].append(peer)
elif mode == "udp":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    for _ in range(int(sys.argv[3])):
        u.sendto(b"q", (vip, 53))
        d, a = u.recvfrom(2048)
        name = d.split()[0].decode()
        out["counts"][name] = out["counts"].get(name, 0) + 1
        if a[0] not in out["peers"]:
            out["peers"].append(a[0])
else:
    t = time.monotonic()
    try:
        socket.create_connection((vip, 80), timeout=5).close()
        out["result"] = "connected"
    except ConnectionRefusedError:
        out["result"] = "refused"
    except OSError as e:
        out["result"] = type(e).__name__
    out["seconds"] = time.monotonic() - t
print(json.dumps(out), flush=True)
"#;

/// Applies a JSON manifest.
fn apply_json(c: &Cluster, v: &Value) {
    c.apply(&v.to_string());
}

/// The backends: a DaemonSet (exactly one per node) labelled role=who, serving=yes.
fn who_daemonset() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "who"},
        "spec": {
            "selector": {"matchLabels": {"app": "who"}},
            "template": {
                "metadata": {"labels": {"app": "who", "role": "who", "serving": "yes"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "who", "image": "python:3",
                        "command": ["python3", "-c", WHO],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                    }]
                }
            }
        }
    })
}

/// A Service named `name` over role=who, serving=yes backends.
fn service(name: &str, spec: Value) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"role": "who", "serving": "yes"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "echo", "port": 82, "targetPort": 8082, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 8081, "protocol": "UDP"}
            ]
        }
    });
    if let (Some(to), Some(from)) = (s["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in from {
            to.insert(k.clone(), v.clone());
        }
    }
    s
}

/// pod name -> node name of the `n` Ready pods matching `selector`, once they are there.
fn ready_pods(c: &Cluster, selector: &str, n: usize) -> BTreeMap<String, String> {
    c.wait_ready_pods("default", selector, n, Duration::from_secs(120))
        .into_iter()
        .map(|p| (p.name, p.node))
        .collect()
}

/// Waits until the Service's EndpointSlices list `n` ready endpoints.
fn wait_endpoints(c: &Cluster, svc: &str, n: usize) {
    wait_for(
        &format!("{n} ready endpoints of {svc}"),
        Duration::from_secs(60),
        || {
            let list = c.get_json(&[
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={svc}"),
            ]);
            let ready = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] != false)
                .count();
            if ready == n {
                Ok(())
            } else {
                Err(format!("{ready} ready"))
            }
        },
    );
}

/// Runs `CLIENT args` as a pod on `node` (restartPolicy Never), waits for it to
/// succeed and returns its JSON line.
fn client_pod(c: &Cluster, name: &str, node: &str, args: &[&str]) -> Value {
    let mut command = vec!["python3", "-c", CLIENT];
    command.extend_from_slice(args);
    apply_json(
        c,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "python:3", "command": command}]
            }
        }),
    );
    wait_for(
        &format!("client pod {name} on {node} to finish"),
        Duration::from_secs(120),
        || {
            let pod = c.get_json(&["pod", name]);
            match pod["status"]["phase"].as_str() {
                Some("Succeeded") => Ok(()),
                Some("Failed") => panic!(
                    "client pod {name} failed: {}\n{}",
                    pod["status"],
                    String::from_utf8_lossy(&c.kubectl(&["logs", name]).stdout)
                ),
                other => Err(format!("phase {other:?}")),
            }
        },
    );
    let logs = c.kubectl_ok(&["logs", name]);
    serde_json::from_str(logs.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client pod {name} printed {logs:?}: {e}"))
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    c.get_json(&["service", svc])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn node_port(c: &Cluster, svc: &str, port: &str) -> u16 {
    let s = c.get_json(&["service", svc]);
    s["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .and_then(|p| p["nodePort"].as_u64())
        .unwrap_or_else(|| panic!("{svc} has no nodePort for {port}: {s}")) as u16
}

/// One request to `addr` (a `WHO` :8080 target) from `outside`: (backend, client address
/// the backend saw).
fn ask_from_outside(c: &Cluster, addr: SocketAddr) -> Result<(String, String), String> {
    let mut s = c
        .bed
        .outside()
        .connect_tcp(addr, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let mut w = text.split_whitespace();
    match (w.next(), w.next()) {
        (Some(name), Some(client)) => Ok((name.to_owned(), client.to_owned())),
        _ => Err(format!("{addr} answered {text:?}")),
    }
}

fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + i as u8)
}

#[test]
fn clusterip_balances_tcp_and_udp_from_every_node_and_refuses_without_endpoints() {
    let c = Cluster::start(3);
    apply_json(&c, &who_daemonset());
    apply_json(&c, &service("who", json!({})));
    apply_json(
        &c,
        &service("nobody", json!({"selector": {"role": "nobody"}})),
    );
    apply_json(&c, &service("who-headless", json!({"clusterIP": "None"})));
    let backends = ready_pods(&c, "app=who", 3);
    wait_endpoints(&c, "who", 3);
    wait_endpoints(&c, "who-headless", 3);
    let vip = cluster_ip(&c, "who");

    // What skein-proxy programmed on every node: the Service's VIP with its 3 backends,
    // nothing for the headless one (it has ready endpoints but no VIP).
    for node in &c.bed.nodes {
        let listed = wait_for(
            &format!("who's frontends in {}'s maps", node.name),
            Duration::from_secs(20),
            || {
                let out = std::process::Command::new(skein_e2e::binary("skein-proxy"))
                    .arg("list")
                    .arg("--pin-dir")
                    .arg(&node.dirs.bpf_pin_dir)
                    .output()
                    .map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
                let frontends = v["frontends"].as_array().cloned().unwrap_or_default();
                let who = frontends
                    .iter()
                    .filter(|f| f["frontend"] == format!("{vip}:80"))
                    .count();
                if who == 1 {
                    Ok(frontends)
                } else {
                    Err(format!("{v}"))
                }
            },
        );
        let group = |f: &Value| f["group"].as_str().unwrap_or("").to_owned();
        assert!(
            listed.iter().any(|f| group(f).starts_with("default/who")),
            "frontends are named by their Service: {listed:?}"
        );
        assert!(
            listed.iter().all(|f| !group(f).contains("who-headless")),
            "the headless Service got a frontend on {}: {listed:?}",
            node.name
        );
    }

    // 600 TCP connections from client pods on every node: every backend within ±20%
    // of an even share, and getpeername shows the ClusterIP.
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for i in 1..=3 {
        let node = format!("node{i}");
        let out = client_pod(&c, &format!("tcp-client-{i}"), &node, &["tcp", &vip, "200"]);
        assert_eq!(out["peers"], json!([vip]), "getpeername on {node}: {out}");
        for (name, n) in out["counts"].as_object().unwrap() {
            *total.entry(name.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        total.keys().collect::<BTreeSet<_>>(),
        backends.keys().collect::<BTreeSet<_>>(),
        "every backend served: {total:?}"
    );
    for (name, n) in &total {
        assert!(
            (160..=240).contains(n),
            "{name} served {n} of 600 connections (want 200 ± 20%): {total:?}"
        );
    }

    // UDP both ways: replies come from the ClusterIP.
    let out = client_pod(&c, "udp-client", "node2", &["udp", &vip, "30"]);
    assert_eq!(out["peers"], json!([vip]), "UDP replies' source: {out}");
    let served: u64 = out["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(served, 30, "every datagram answered: {out}");

    // No endpoints: refused at once, not a black hole.
    let nobody = cluster_ip(&c, "nobody");
    let out = client_pod(&c, "refused-client", "node3", &["refused", &nobody]);
    assert_eq!(out["result"], "refused", "{out}");
    assert!(
        out["seconds"].as_f64().unwrap() < 1.0,
        "refused at once: {out}"
    );

    // A deleted Service stops answering.
    c.kubectl_ok(&["delete", "service", "who"]);
    wait_for(
        "the deleted Service to stop answering",
        Duration::from_secs(30),
        || {
            let name = format!("gone-client-{}", next_suffix());
            let out = client_pod(&c, &name, "node1", &["refused", &vip]);
            if out["result"] == "connected" {
                Err(format!("{out}"))
            } else {
                Ok(())
            }
        },
    );
}

/// A short suffix for pod names that must not repeat within a test run.
fn next_suffix() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn nodeport_from_outside_through_every_node_with_local_policy_and_affinity() {
    let c = Cluster::start(3);
    apply_json(&c, &who_daemonset());
    apply_json(&c, &service("who-np", json!({"type": "NodePort"})));
    apply_json(
        &c,
        &service(
            "who-local",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
        ),
    );
    apply_json(
        &c,
        &service(
            "who-sticky",
            json!({"type": "NodePort", "sessionAffinity": "ClientIP"}),
        ),
    );
    let backends = ready_pods(&c, "app=who", 3);
    for svc in ["who-np", "who-local", "who-sticky"] {
        wait_endpoints(&c, svc, 3);
    }
    let (np, local, sticky) = (
        node_port(&c, "who-np", "http"),
        node_port(&c, "who-local", "http"),
        node_port(&c, "who-sticky", "http"),
    );
    let outside = c.bed.outside().addr.to_string();

    for i in 1..=3 {
        let node = format!("node{i}");
        // Through every node: backends on this node and on others, every request served.
        // (The first answer may wait for the proxy to sync; after it, none may fail.)
        wait_for(
            &format!("NodePort {np} through {node}"),
            Duration::from_secs(10),
            || ask_from_outside(&c, (node_addr(i), np).into()),
        );
        let mut seen = BTreeSet::new();
        for k in 0..30 {
            let (name, _) = ask_from_outside(&c, (node_addr(i), np).into())
                .unwrap_or_else(|e| panic!("request {k} to NodePort {np} through {node}: {e}"));
            seen.insert(name);
        }
        let here = seen.iter().any(|p| backends[p] == node);
        let elsewhere = seen.iter().any(|p| backends[p] != node);
        assert!(
            here && elsewhere,
            "through {node}, 30 requests reached backends on this node and on others: {seen:?} of {backends:?}"
        );
        // externalTrafficPolicy Local: only this node's backend, which sees the client.
        for _ in 0..10 {
            let (name, client) = ask_from_outside(&c, (node_addr(i), local).into())
                .unwrap_or_else(|e| panic!("Local NodePort through {node}: {e}"));
            assert_eq!(backends[&name], node, "Local policy through {node}");
            assert_eq!(client, outside, "Local policy keeps the client address");
        }
        // sessionAffinity ClientIP: every request sticks to one backend.
        let names: BTreeSet<String> = (0..15)
            .map(|_| {
                ask_from_outside(&c, (node_addr(i), sticky).into())
                    .unwrap_or_else(|e| panic!("sticky NodePort through {node}: {e}"))
                    .0
            })
            .collect();
        assert_eq!(names.len(), 1, "affinity through {node}: {names:?}");
    }
}

/// Sends one line on an established echo stream and returns the backend that answered.
fn echo(stream: &mut BufReader<TcpStream>, line: &str) -> Result<String, String> {
    writeln!(stream.get_mut(), "{line}").map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    stream
        .read_line(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    match reply.split_whitespace().collect::<Vec<_>>()[..] {
        [name, l] if l == line => Ok(name.to_owned()),
        _ => Err(format!("reply {reply:?} to {line:?}")),
    }
}

#[test]
fn a_nodeport_stream_survives_endpoints_going_3_to_1_to_5_and_a_proxy_restart() {
    let mut c = Cluster::start(3);
    apply_json(&c, &who_daemonset());
    apply_json(&c, &service("who-np", json!({"type": "NodePort"})));
    let backends = ready_pods(&c, "app=who", 3);
    wait_endpoints(&c, "who-np", 3);
    let (http, echo_port) = (
        node_port(&c, "who-np", "http"),
        node_port(&c, "who-np", "echo"),
    );

    // A long-lived stream through node1.
    let s = wait_for("the echo stream", Duration::from_secs(10), || {
        c.bed
            .outside()
            .connect_tcp((node_addr(1), echo_port).into(), Duration::from_secs(3))
            .map_err(|e| e.to_string())
    });
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut stream = BufReader::new(s);
    let owner = echo(&mut stream, "hello").expect("first echo");
    assert!(backends.contains_key(&owner), "{owner} is a backend");

    // 3 -> 1: the others leave the Service (relabelled); the stream stays, and new
    // connections all go to the one left.
    for p in backends.keys().filter(|p| **p != owner) {
        c.kubectl_ok(&["label", "pod", p, "serving=no", "--overwrite"]);
    }
    wait_endpoints(&c, "who-np", 1);
    wait_for(
        "new connections to reach only the remaining backend",
        Duration::from_secs(20),
        || {
            for _ in 0..10 {
                let (name, _) = ask_from_outside(&c, (node_addr(1), http).into())?;
                if name != owner {
                    return Err(format!("{name} answered"));
                }
            }
            Ok(())
        },
    );
    assert_eq!(echo(&mut stream, "after-1").as_deref(), Ok(owner.as_str()));

    // 1 -> 5: the two come back and two more backends join.
    for p in backends.keys().filter(|p| **p != owner) {
        c.kubectl_ok(&["label", "pod", p, "serving=yes", "--overwrite"]);
    }
    let mut extra = who_daemonset();
    extra["kind"] = json!("Deployment");
    extra["metadata"]["name"] = json!("who-extra");
    extra["spec"]["replicas"] = json!(2);
    extra["spec"]["selector"]["matchLabels"]["app"] = json!("who-extra");
    extra["spec"]["template"]["metadata"]["labels"]["app"] = json!("who-extra");
    apply_json(&c, &extra);
    ready_pods(&c, "app=who-extra", 2);
    wait_endpoints(&c, "who-np", 5);
    wait_for(
        "new connections to spread over the 5 backends",
        Duration::from_secs(20),
        || {
            let mut seen = BTreeSet::new();
            for _ in 0..40 {
                seen.insert(ask_from_outside(&c, (node_addr(1), http).into())?.0);
            }
            if seen.len() >= 4 {
                Ok(())
            } else {
                Err(format!("40 requests reached only {seen:?}"))
            }
        },
    );
    for k in 0..5 {
        assert_eq!(
            echo(&mut stream, &format!("after-5-{k}")).as_deref(),
            Ok(owner.as_str()),
            "the stream stays on its backend"
        );
    }

    // The proxy on the entry node restarts: the pinned datapath keeps the stream going
    // meanwhile and after, and the new daemon serves new connections.
    c.restart_proxy(1);
    for k in 0..5 {
        assert_eq!(
            echo(&mut stream, &format!("restart-{k}")).as_deref(),
            Ok(owner.as_str()),
            "the stream survives the proxy restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        "new connections through node1 after the restart",
        Duration::from_secs(20),
        || ask_from_outside(&c, (node_addr(1), http).into()),
    );
}
