//! `skeinctl up/status/kubeconfig/down` as a user runs them: the real binary, a real
//! cluster in namespaces, and `down` at the end of every test (also on failure).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use skein_e2e::{binary, require_root};
use skein_netns::NetNs;
use skein_testbed::snapshot::RootSnapshot;

/// Runs `skeinctl down --name <name>` on drop, so a failing test leaves nothing behind.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(binary("skeinctl"))
            .args(["down", "--name", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

fn skeinctl(args: &[&str]) -> Output {
    let out = Command::new(binary("skeinctl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skeinctl");
    eprintln!(
        "$ skeinctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn netns_of(name: &str) -> Vec<String> {
    let mut v: Vec<String> = skein_netns::list_named()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{name}-")))
        .collect();
    v.sort();
    v
}

/// A root-namespace snapshot taken while no other test bed exists.
fn quiet_snapshot() -> RootSnapshot {
    let _lock = skein_testbed::exclusive_lock().unwrap();
    RootSnapshot::take().unwrap()
}

#[test]
fn up_status_kubeconfig_down_leave_the_root_namespace_as_before() {
    require_root();
    let name = skein_testbed::unique_prefix();
    let before = quiet_snapshot();
    {
        let _down = Down(name.clone());
        let out = skeinctl(&["up", "--name", &name, "--nodes", "2"]);
        assert!(out.status.success(), "up failed:\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("cluster {name} is up")),
            "{stdout}"
        );
        assert!(stdout.contains("ok       flanneld"), "{stdout}");

        // The namespaces the README promises.
        let want: Vec<String> = ["control", "etcd", "fabric", "node1", "node2", "outside"]
            .iter()
            .map(|s| format!("{name}-{s}"))
            .collect();
        assert_eq!(netns_of(&name), want);

        // Daemons outlive `up`, each with a pid file and a log.
        let state = Path::new("/run/skein").join(&name);
        for d in ["etcd", "relay", "node1-flanneld", "node2-flanneld"] {
            let pid = std::fs::read_to_string(state.join(format!("run/{d}.pid")))
                .unwrap_or_else(|e| panic!("pid file of {d}: {e}"));
            let pid: i32 = pid.trim().parse().unwrap();
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "{d} pid {pid} is not running"
            );
            assert!(state.join(format!("log/{d}.log")).exists(), "log of {d}");
        }

        // Each node got a distinct subnet in the cluster network.
        let s1 = std::fs::read_to_string(state.join("node1/flannel/subnet.env")).unwrap();
        let s2 = std::fs::read_to_string(state.join("node2/flannel/subnet.env")).unwrap();
        assert!(s1.contains("FLANNEL_NETWORK=10.244.0.0/16"), "{s1}");
        assert_ne!(
            s1.lines().find(|l| l.starts_with("FLANNEL_SUBNET")),
            s2.lines().find(|l| l.starts_with("FLANNEL_SUBNET"))
        );

        let out = skeinctl(&["kubeconfig", "--name", &name]);
        assert!(out.status.success(), "{}", text(&out));
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let kubeconfig = std::fs::read_to_string(&path).unwrap();
        assert!(
            kubeconfig.contains("server: http://127.0.0.1:"),
            "{kubeconfig}"
        );

        let out = skeinctl(&["status", "--name", &name]);
        assert!(out.status.success(), "status failed:\n{}", text(&out));
        let status = String::from_utf8_lossy(&out.stdout);
        for want in [
            "node1-flanneld",
            "running",
            "subnet 10.244.",
            "PublicIP 198.51.100.12",
        ] {
            assert!(status.contains(want), "status lacks {want:?}:\n{status}");
        }

        let out = skeinctl(&["down", "--name", &name]);
        assert!(out.status.success(), "down failed:\n{}", text(&out));
        assert!(netns_of(&name).is_empty(), "{:?}", netns_of(&name));
        assert!(!state.exists(), "{} still exists", state.display());
        let cg = skein_testbed::cgroup2_mount()
            .unwrap()
            .join("skein")
            .join(&name);
        assert!(!cg.exists(), "{} still exists", cg.display());
        let out = skeinctl(&["status", "--name", &name]);
        assert!(!out.status.success());
        assert!(text(&out).contains("no cluster named"), "{}", text(&out));
    }
    let after = quiet_snapshot();
    assert_eq!(before.diff(&after), Vec::<String>::new());
}

/// ADD through skein-cni as a runtime would, for the network of the node's conflist.
fn cni_add(name: &str, node: usize, pod: &NetNs, id: &str) -> Ipv4Addr {
    let state = Path::new("/run/skein").join(name);
    let conflist: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join(format!("node{node}/cni/net.d/10-skein.conflist")))
            .unwrap(),
    )
    .unwrap();
    let mut conf = conflist["plugins"][0].clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    let cni = binary("skein-cni");
    let node_ns = NetNs::open(format!("{name}-node{node}")).unwrap();
    let mut cmd = node_ns.command(&cni).unwrap();
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni.parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ADD on node{node}: {}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = result["ips"][0]["address"].as_str().unwrap();
    addr.split('/').next().unwrap().parse().unwrap()
}

fn pods_reach_each_other(backend: &str) {
    require_root();
    let name = skein_testbed::unique_prefix();
    let _down = Down(name.clone());
    let out = skeinctl(&["up", "--name", &name, "--nodes", "2", "--backend", backend]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));

    // Pod namespaces carry the cluster's prefix, so `down` removes them too.
    let pods: Vec<NetNs> = (1..=2)
        .map(|i| NetNs::create(&format!("{name}-pod{i}")).unwrap())
        .collect();
    let ips: Vec<Ipv4Addr> = (1..=2)
        .map(|i| cni_add(&name, i, &pods[i - 1], &format!("{name}-pod{i}")))
        .collect();
    assert_ne!(ips[0], ips[1]);
    for (from, to) in [(0usize, 1usize), (1, 0)] {
        let addr = SocketAddr::from((ips[to], 8080 + to as u16));
        let listener = pods[to].run(|| TcpListener::bind(addr)).unwrap().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
            (buf, peer.ip())
        });
        let mut c = pods[from]
            .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("pod{} -> {addr}: {e}", from + 1));
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).unwrap();
        let (got, peer) = server.join().unwrap();
        assert_eq!((&got, &reply), (b"ping", b"pong"));
        // Pod to pod is never masqueraded: the server sees the client pod's own address.
        assert_eq!(peer, ips[from]);
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_vxlan() {
    pods_reach_each_other("vxlan");
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_host_gw() {
    pods_reach_each_other("host-gw");
}

#[test]
fn a_failing_daemon_is_named_with_its_log_and_nothing_is_left() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("flanneld");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in --help) echo 'Usage: flanneld'; exit 0;; esac\n\
         echo 'flanneld: cannot start: planted failure' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = skein_testbed::unique_prefix();
    let _down = Down(name.clone());
    let bin_dir: PathBuf = bin.path().to_owned();
    let out = skeinctl(&[
        "up",
        "--name",
        &name,
        "--nodes",
        "1",
        "--bin-dir",
        bin_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "up must fail:\n{}", text(&out));
    let all = text(&out);
    assert!(all.contains("node1-flanneld exited"), "{all}");
    assert!(
        all.contains(&format!("/run/skein/{name}/log/node1-flanneld.log")),
        "{all}"
    );
    assert!(all.contains("planted failure"), "{all}");
    // Components that are not there are named, not pretended.
    assert!(all.contains("WARNING: skein-apiserver is missing"), "{all}");
    // And everything made so far is gone.
    assert!(netns_of(&name).is_empty(), "{:?}", netns_of(&name));
    assert!(!Path::new("/run/skein").join(&name).exists());
}

#[test]
fn bad_input_is_refused_before_anything_is_made() {
    require_root();
    let out = skeinctl(&["up", "--name", "Bad_Name", "--nodes", "1"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("\"Bad_Name\" must be 1-32 characters"),
        "{}",
        text(&out)
    );
    assert!(netns_of("Bad_Name").is_empty());

    let name = skein_testbed::unique_prefix();
    let out = skeinctl(&["up", "--name", &name, "--nodes", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--nodes 0: a cluster has 1 to 100 nodes"),
        "{}",
        text(&out)
    );
    let out = skeinctl(&["up", "--name", &name, "--bin-dir", "/nonexistent/bin"]);
    assert!(
        text(&out).contains("--bin-dir /nonexistent/bin: not a directory"),
        "{}",
        text(&out)
    );
    assert!(netns_of(&name).is_empty());
    assert!(!Path::new("/run/skein").join(&name).exists());

    let out = skeinctl(&["kubeconfig", "--name", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("no cluster named \"{name}\"")),
        "{}",
        text(&out)
    );
}

#[test]
fn kubectl_in_the_root_namespace_reaches_the_control_namespace_through_the_relay() {
    require_root();
    // An empty bin dir: only etcd and the relay run, and a stand-in HTTP server in the
    // control namespace plays the API server, so this checks the relay alone.
    let bin = tempfile::tempdir().unwrap();
    let name = skein_testbed::unique_prefix();
    let _down = Down(name.clone());
    let out = skeinctl(&[
        "up",
        "--name",
        &name,
        "--nodes",
        "1",
        "--bin-dir",
        bin.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));
    assert!(
        text(&out).contains("WARNING: skein-apiserver is missing"),
        "{}",
        text(&out)
    );

    let control = NetNs::open(format!("{name}-control")).unwrap();
    let listener = control
        .run(|| TcpListener::bind("198.51.100.3:6443"))
        .unwrap()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\nrelayed-through",
            );
        }
    });

    let out = skeinctl(&["kubeconfig", "--name", &name]);
    let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig, "get", "--raw", "/healthz"])
        .args(["--request-timeout", "10s"])
        .output()
        .expect("run kubectl (it is on the machine: /usr/bin/kubectl)");
    assert!(out.status.success(), "kubectl: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "relayed-through"
    );
    // kubectl may ask for /version first; the request we sent must have arrived.
    let mut seen = Vec::new();
    while let Ok(request) = rx.recv_timeout(Duration::from_secs(5)) {
        if request.starts_with("GET /healthz?") || request.starts_with("GET /healthz ") {
            return;
        }
        seen.push(request);
    }
    panic!("GET /healthz never reached the control namespace; requests seen: {seen:#?}");
}

#[test]
fn kubectl_get_nodes_shows_every_node_ready() {
    require_root();
    let name = skein_testbed::unique_prefix();
    let _down = Down(name.clone());
    let out = skeinctl(&["up", "--name", &name, "--nodes", "2"]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));
    let all = text(&out);
    for component in ["skein-apiserver", "skein-agent", "skein-proxy"] {
        assert!(
            all.contains(&format!("ok       {component}")),
            "{component} is not usable in the bin dir (build it: cargo build --workspace --bins):\n{all}"
        );
    }
    let out = skeinctl(&["kubeconfig", "--name", &name]);
    let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig, "get", "nodes", "--no-headers"])
        .args(["--request-timeout", "10s"])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl: {}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("node{}", i + 1), "{table}");
        assert_eq!(row[1], "Ready", "{table}");
    }

    let out = skeinctl(&["status", "--name", &name]);
    assert!(out.status.success(), "status:\n{}", text(&out));
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "apiserver",
        "node2-agent",
        "node2-proxy",
        "Ready",
        "kube-system/kube-dns",
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }

    // The cluster DNS Service, as kubectl shows it.
    let out = Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig, "get", "svc", "kube-dns"])
        .args([
            "-n",
            "kube-system",
            "--no-headers",
            "--request-timeout",
            "10s",
        ])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl: {}", text(&out));
    let row = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        row.contains("10.96.0.10") && row.contains("53/UDP,53/TCP"),
        "kube-dns: {row}"
    );

    // `check` refuses, saying why, while examples/ is not applied.
    let out = skeinctl(&["check", "--name", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("apply examples/ first"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_names_a_missing_cluster() {
    let name = skein_testbed::unique_prefix();
    let out = skeinctl(&["check", "--name", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("no cluster named \"{name}\"")),
        "{}",
        text(&out)
    );
}
