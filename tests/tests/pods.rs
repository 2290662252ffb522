//! Pods run: `kubectl apply` of a Deployment on a 3-node local cluster ends with pods
//! running on the nodes, each with an IP from its node's flannel subnet, reachable from
//! every other pod; on a host-gw cluster with skein-proxy's pod routing, pod-to-pod
//! traffic between nodes bypasses the bridge.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use skein_e2e::cluster::{CNI_NETWORK, Cluster, wait_for};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["python3", "-m", "http.server", "8080"]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
"#;

/// (pod name, node, pod IP, ready, uid) of the pods labelled app=web that are not being deleted.
fn web_pods(c: &Cluster) -> Vec<(String, String, Ipv4Addr, bool, String)> {
    let list = c.get_json(&["pods", "-l", "app=web"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            let ip = p["status"]["podIP"].as_str()?.parse().ok()?;
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Some((
                p["metadata"]["name"].as_str()?.to_owned(),
                p["spec"]["nodeName"].as_str()?.to_owned(),
                ip,
                ready,
                p["metadata"]["uid"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn wait_ready(c: &Cluster, n: usize) -> Vec<(String, String, Ipv4Addr, bool, String)> {
    wait_for(
        &format!("{n} ready web pods"),
        Duration::from_secs(120),
        || {
            let pods = web_pods(c);
            let ready = pods.iter().filter(|p| p.3).count();
            if ready == n && pods.len() == n {
                Ok(pods)
            } else {
                Err(format!("{pods:?}\n{}", c.logs()))
            }
        },
    )
}

/// The network namespace skein-agent made for pod `uid` on `node`.
fn pod_netns(c: &Cluster, node: &str, uid: &str) -> std::path::PathBuf {
    let n = c.bed.nodes.iter().find(|n| n.name == node).expect("node");
    n.dirs.root.join("agent/pods").join(uid).join("netns")
}

/// An HTTP GET from inside pod `uid`'s network namespace, as a container of it would.
fn http_from_pod(c: &Cluster, node: &str, uid: &str, ip: Ipv4Addr) -> Result<u16, String> {
    let ns = skein_netns::NetNs::open(pod_netns(c, node, uid)).map_err(|e| e.to_string())?;
    ns.run(move || -> std::io::Result<u16> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((ip, 8080)), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET / HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("GET http://{ip}:8080/ from pod {uid} on {node}: {e}"))
}

fn http_from(c: &Cluster, node: usize, ip: Ipv4Addr) -> Result<u16, String> {
    // The client runs in the node's namespace.
    c.bed
        .node(node)
        .in_netns(move || -> std::io::Result<u16> {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from((ip, 8080)), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET / HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("GET http://{ip}:8080/ from node{node}: {e}"))
}

#[test]
fn deployment_pods_run_spread_and_reach_each_other() {
    let c = Cluster::start(3);
    c.apply(DEPLOYMENT);
    let pods = wait_ready(&c, 6);

    // Spread over all three nodes, each IP inside its node's podCIDR.
    let nodes = c.get_json(&["nodes"]);
    let cidrs: BTreeMap<String, String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_owned(),
                n["spec"]["podCIDR"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let used: BTreeSet<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(used.len(), 3, "pods not spread over the 3 nodes: {pods:?}");
    for (name, node, ip, _, _) in &pods {
        let cidr = &cidrs[node];
        let (net, len) = cidr
            .split_once('/')
            .unwrap_or_else(|| panic!("node {node} has no podCIDR: {cidrs:?}"));
        let net: Ipv4Addr = net.parse().unwrap();
        let mask = u32::MAX << (32 - len.parse::<u32>().unwrap());
        assert_eq!(
            u32::from(*ip) & mask,
            u32::from(net),
            "pod {name} on {node} has {ip}, outside {cidr}"
        );
    }

    // Every pod answers HTTP from every other pod, on its node and across the overlay.
    for (from, from_node, _, _, uid) in &pods {
        for (name, _, ip, _, _) in &pods {
            let code = http_from_pod(&c, from_node, uid, *ip)
                .unwrap_or_else(|e| panic!("{from} -> {name}: {e}\n{}", c.logs()));
            assert_eq!(code, 200, "{from} -> {name} at {ip}");
        }
    }

    // kubectl prints them with their node and IP.
    let wide = c.kubectl_ok(&["get", "pods", "-o", "wide"]);
    for (name, node, ip, _, _) in &pods {
        let line = wide
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing:\n{wide}"));
        assert!(
            line.contains(&ip.to_string()) && line.contains(node.as_str()),
            "{line}"
        );
    }

    // Scale 6 → 2 → 8.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=2"]);
    wait_ready(&c, 2);
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=8"]);
    let pods = wait_ready(&c, 8);

    // Each pod's address is allocated on disk in host-local's layout on its node.
    for (name, node, ip, _, _) in &pods {
        let n = c.bed.nodes.iter().find(|n| &n.name == node).unwrap();
        let file = n.dirs.ipam_data_dir.join(CNI_NETWORK).join(ip.to_string());
        assert!(file.is_file(), "{name}: no IPAM file {}", file.display());
    }

    // kubectl logs reaches a container's output through the API server.
    let logs = wait_for(
        "kubectl logs shows the server's access log",
        Duration::from_secs(20),
        || {
            let _ = http_from(&c, 1, pods[0].2);
            let out = c.kubectl(&["logs", &pods[0].0]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("GET / HTTP") {
                Ok(text)
            } else {
                Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            }
        },
    );
    assert!(logs.contains("GET / HTTP"));

    // Deleting the Deployment removes every pod and every IPAM file.
    c.kubectl_ok(&["delete", "deployment", "web"]);
    wait_for("all web pods gone", Duration::from_secs(90), || {
        let list = c.get_json(&["pods", "-l", "app=web"]);
        let n = list["items"].as_array().map(Vec::len).unwrap_or(0);
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} pods left"))
        }
    });
    for n in &c.bed.nodes {
        wait_for(
            &format!("no IPAM file on {}", n.name),
            Duration::from_secs(20),
            || {
                let dir = n.dirs.ipam_data_dir.join(CNI_NETWORK);
                let left: Vec<String> = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let ips: Vec<&String> = left
                    .iter()
                    .filter(|f| f.parse::<Ipv4Addr>().is_ok())
                    .collect();
                if ips.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{ips:?}"))
                }
            },
        );
    }
}

#[test]
fn unschedulable_pod_reports_why() {
    let c = Cluster::start(2);
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: picky}
spec:
  nodeSelector: {disk: ssd}
  containers:
  - {name: c, image: busybox, command: ["sleep", "1000"]}
"#,
    );
    let msg = wait_for(
        "PodScheduled=False on the picky pod",
        Duration::from_secs(30),
        || {
            let p = c.get_json(&["pod", "picky"]);
            let cond = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "PodScheduled")
                .cloned();
            match cond {
                Some(c) if c["status"] == "False" => {
                    Ok(c["message"].as_str().unwrap_or("").to_owned())
                }
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert!(
        msg.contains("0/2 nodes are available") && msg.contains("node affinity/selector"),
        "{msg}"
    );
}

/// Packets node `node`'s pod bridge received plus sent.
fn bridge_packets(c: &Cluster, node: &str) -> u64 {
    let n = c.bed.nodes.iter().find(|n| n.name == node).expect("node");
    let out = n.run("ip", &["-s", "-j", "link", "show", "cni0"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stats = &v[0]["stats64"];
    stats["rx"]["packets"].as_u64().unwrap() + stats["tx"]["packets"].as_u64().unwrap()
}

/// `skeinctl up --backend host-gw --pod-routing`: pods on two nodes reach each other, and
/// once both are known to skein-proxy the traffic between them no longer crosses the
/// receiving node's bridge (the proxy routes it in eBPF, see the README).
#[test]
fn host_gw_with_pod_routing_reaches_pods_past_the_bridge() {
    let c = Cluster::start_with(2, skeinctl::layout::Backend::HostGw, true);
    c.apply(DEPLOYMENT);
    let pods = wait_ready(&c, 6);
    let a = pods.iter().find(|p| p.1 == pods[0].1).unwrap().clone();
    let b = pods
        .iter()
        .find(|p| p.1 != a.1)
        .expect("web pods on both nodes")
        .clone();
    // Both ways once: the pods' own packets make the proxy learn them.
    assert_eq!(http_from_pod(&c, &a.1, &a.4, b.2), Ok(200));
    assert_eq!(http_from_pod(&c, &b.1, &b.4, a.2), Ok(200));

    let before = bridge_packets(&c, &b.1);
    // 50 GETs are some 1000 packets on the bridge without pod routing; what is left is
    // the readiness probes of the node's other pods.
    for _ in 0..50 {
        assert_eq!(http_from_pod(&c, &a.1, &a.4, b.2), Ok(200));
    }
    let bridged = bridge_packets(&c, &b.1) - before;
    assert!(
        bridged < 100,
        "50 GETs from {} to {} crossed {}'s bridge ({bridged} packets)\n{}",
        a.0,
        b.0,
        b.1,
        c.logs()
    );
}
