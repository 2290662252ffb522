//! `kubectl exec` on a 2-node local cluster: kubectl (WebSocket, v5.channel.k8s.io) →
//! skein-apiserver → the pod's skein-agent, which runs the command inside the pod.
//! Output reaches the right streams, the exit code comes back, stdin is streamed, the
//! command sees the pod's own resolv.conf, env and workingDir, can reach a pod on the
//! other node, and errors (missing pod, container, command) are clear.

use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use skein_e2e::cluster::{Cluster, wait_for};

/// A pod on `node` serving HTTP on :8080, with an env var and a workingDir to observe.
fn server_pod(name: &str, node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "exec"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": "python:3",
                "command": ["python3", "-m", "http.server", "8080"],
                "env": [{"name": "GREETING", "value": format!("hello from {name}")}],
                "workingDir": "/tmp",
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
            }]
        }
    })
}

/// `kubectl exec <args>` with `stdin` piped in (or none); fails the test if it does not
/// end within a minute.
fn kubectl_exec(c: &Cluster, stdin: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = c.control.command("kubectl").unwrap();
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("exec")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run kubectl exec");
    let pid = child.id();
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait for kubectl exec"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("kubectl exec {args:?} did not finish in 60s\n{}", c.logs());
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn kubectl_exec_runs_commands_inside_pods() {
    let c = Cluster::start(2);
    c.apply(&server_pod("exec-a", "node1").to_string());
    c.apply(&server_pod("exec-b", "node2").to_string());
    let pods = c.wait_ready_pods("default", "app=exec", 2, Duration::from_secs(120));
    let b = pods.iter().find(|p| p.name == "exec-b").unwrap();
    let b_ip = b.ip.unwrap();

    // stdout and stderr on their own streams, the exit code passed through.
    let out = kubectl_exec(
        &c,
        None,
        &["exec-a", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(text(&out.stdout), "out\n", "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("err\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // A zero exit is a success with nothing on stderr.
    let out = kubectl_exec(&c, None, &["exec-a", "--", "sh", "-c", "exit 0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");

    // stdin is streamed, and its end reaches the command (cat exits).
    let data = "data line 1\nline 2\n".repeat(200);
    let out = kubectl_exec(&c, Some(&data), &["-i", "exec-a", "--", "cat"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), data);

    // The pod's own mount namespace (its resolv.conf), env and workingDir.
    let out = kubectl_exec(&c, None, &["exec-a", "--", "cat", "/etc/resolv.conf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("nameserver 10.96.0.10"),
        "{}",
        text(&out.stdout)
    );
    let out = kubectl_exec(
        &c,
        None,
        &[
            "exec-b",
            "-c",
            "web",
            "--",
            "sh",
            "-c",
            "echo $GREETING; pwd",
        ],
    );
    assert_eq!(text(&out.stdout), "hello from exec-b\n/tmp\n");

    // The debugging use case: from pod A, reach pod B on the other node.
    let url = format!("http://{b_ip}:8080/");
    let script =
        format!("import urllib.request; print(urllib.request.urlopen({url:?}, timeout=10).status)");
    let out = kubectl_exec(&c, None, &["exec-a", "--", "python3", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "200\n");

    // Only the API server may open exec sessions on an agent: from a pod, the node
    // port answers 403.
    let probe = format!(
        "import socket; s = socket.create_connection(('{}', 10250), timeout=10); \
         s.sendall(b'GET /exec/default/exec-b/web?command=true&stdout=1 HTTP/1.1\\r\\nHost: x\\r\\n\
         Connection: Upgrade\\r\\nUpgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\\r\\n\\r\\n'); \
         print(s.recv(4096).decode())",
        c.bed.node(2).addr
    );
    let out = kubectl_exec(&c, None, &["exec-a", "--", "python3", "-c", &probe]);
    let answer = text(&out.stdout);
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("--exec-allowed-from"),
        "{answer}{}",
        text(&out.stderr)
    );

    // A request without a WebSocket upgrade (what a SPDY-only client sends) gets a
    // Status saying why.
    let out = c.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/exec-a/exec?command=true&stdout=true",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("WebSocket only") && err.contains("SPDY"),
        "{err}"
    );

    // The client going away kills the command.
    let mut cmd = c.control.command("kubectl").unwrap();
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["exec", "exec-a", "--", "sleep", "3171"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut kubectl = cmd.spawn().expect("run kubectl exec");
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .any(|c| c == b"sleep\x003171\x00")
    };
    wait_for("the exec'd sleep to run", Duration::from_secs(30), || {
        if sleeping() {
            Ok(())
        } else {
            Err("no sleep 3171".into())
        }
    });
    kubectl.kill().unwrap();
    kubectl.wait().unwrap();
    wait_for(
        "the exec'd sleep to be killed",
        Duration::from_secs(30),
        || {
            if sleeping() {
                Err("sleep 3171 still runs".into())
            } else {
                Ok(())
            }
        },
    );

    // A missing pod: NotFound.
    let out = kubectl_exec(&c, None, &["no-such-pod", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pods \"no-such-pod\" not found"),
        "{}",
        text(&out.stderr)
    );

    // A missing container: named.
    let out = kubectl_exec(&c, None, &["exec-a", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    // A container that is not running: the agent's reason reaches kubectl (in the
    // session, so kubectl does not fall back to SPDY).
    c.apply(
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "exec-idle"},
            "spec": {"nodeName": "node1", "containers": [{"name": "idle", "image": "busybox"}]}
        })
        .to_string(),
    );
    wait_for(
        "exec-idle to report why it cannot start",
        Duration::from_secs(60),
        || {
            let p = c.get_json(&["pod", "exec-idle"]);
            let reason = &p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
            if reason == "CreateContainerConfigError" {
                Ok(())
            } else {
                Err(p["status"].to_string())
            }
        },
    );
    let out = kubectl_exec(&c, None, &["exec-idle", "--", "true"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("container \"idle\" in pod default/exec-idle is not running")
            && !err.contains("SPDY"),
        "{err}"
    );

    // A command that does not exist: a clear error naming it, exit non-zero.
    let out = kubectl_exec(&c, None, &["exec-a", "--", "no-such-command", "x"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-command") && err.contains("No such file"),
        "{err}"
    );
}

/// A minimal WebSocket client: upgrades `argv[3]` on `argv[1]:argv[2]` offering the
/// subprotocol `argv[4]`, prints the response status and chosen subprotocol, then one
/// JSON line per binary message from the server (channel, data) until it closes.
const WS_CLIENT: &str = r#"
import base64, json, os, socket, sys
host, port, path, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=20)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
           f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Protocol: {proto}\r\n\r\n").encode())
f = s.makefile("rb")
status = f.readline().decode().strip()
headers = {}
while True:
    line = f.readline().decode().strip()
    if not line:
        break
    k, v = line.split(":", 1)
    headers[k.strip().lower()] = v.strip()
print(json.dumps({"status": status, "protocol": headers.get("sec-websocket-protocol")}))
if not status.startswith("HTTP/1.1 101"):
    sys.exit(0)
while True:
    h = f.read(2)
    if len(h) < 2:
        break
    op, n = h[0] & 0x0F, h[1] & 0x7F
    if n == 126:
        n = int.from_bytes(f.read(2), "big")
    elif n == 127:
        n = int.from_bytes(f.read(8), "big")
    data = f.read(n)
    if op == 8:
        break
    if op == 2 and data:
        print(json.dumps({"ch": data[0], "data": data[1:].decode(errors="replace")}))
"#;

/// Runs [`WS_CLIENT`] in the control namespace (the API server's address, which the
/// agent accepts) against node 1's agent: (status line, subprotocol, [(channel, data)]).
fn ws_session(c: &Cluster, path: &str, proto: &str) -> (String, String, Vec<(u64, String)>) {
    let out = c
        .control
        .command("python3")
        .unwrap()
        .args(["-c", WS_CLIENT, &c.bed.node(1).addr.to_string(), "10250"])
        .args([path, proto])
        .output()
        .expect("run the WebSocket client");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    let head = lines.next().expect("a response");
    let frames = lines
        .map(|f| {
            (
                f["ch"].as_u64().unwrap(),
                f["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (
        head["status"].as_str().unwrap().to_owned(),
        head["protocol"].as_str().unwrap_or_default().to_owned(),
        frames,
    )
}

#[test]
fn agent_exec_endpoint_speaks_v4_and_refuses_tty_and_unknown_subprotocols() {
    let mut c = Cluster::start(1);
    c.apply(&server_pod("exec-a", "node1").to_string());
    c.wait_ready_pods("default", "app=exec", 1, Duration::from_secs(120));
    let base = "/exec/default/exec-a/web";

    // v4 (no close channel): output, then the exit status on channel 3.
    let (status, proto, frames) = ws_session(
        &c,
        &format!("{base}?command=sh&command=-c&command=echo%20hi%3B%20exit%202&stdout=1"),
        "v4.channel.k8s.io",
    );
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    assert_eq!(proto, "v4.channel.k8s.io");
    assert_eq!(frames.first(), Some(&(1, "hi\n".to_owned())), "{frames:?}");
    let (ch, last) = frames.last().unwrap();
    assert_eq!(*ch, 3);
    let st: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "2");

    // Both offered: v5 wins.
    let (_, proto, frames) = ws_session(
        &c,
        &format!("{base}?command=true&stdout=1"),
        "v4.channel.k8s.io, v5.channel.k8s.io",
    );
    assert_eq!(proto, "v5.channel.k8s.io");
    assert_eq!(
        frames,
        [(3, r#"{"metadata":{},"status":"Success"}"#.to_owned())]
    );

    // A tty is refused with a status saying so.
    let (_, _, frames) = ws_session(
        &c,
        &format!("{base}?command=sh&stdin=1&stdout=1&tty=1"),
        "v5.channel.k8s.io",
    );
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(frames[0].1.contains("tty"), "{frames:?}");

    // Unknown subprotocols, pods and containers are refused before the upgrade.
    let (status, _, _) = ws_session(
        &c,
        &format!("{base}?command=true&stdout=1"),
        "channel.k8s.io",
    );
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let (status, _, _) = ws_session(
        &c,
        "/exec/default/nope/web?command=true&stdout=1",
        "v5.channel.k8s.io",
    );
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _, _) = ws_session(
        &c,
        "/exec/default/exec-a/nope?command=true&stdout=1",
        "v5.channel.k8s.io",
    );
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // With the agent stopped (its pods keep running), kubectl says which agent it could
    // not reach.
    c.stop_agent(1);
    let out = kubectl_exec(&c, None, &["exec-a", "--", "true"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("node agent on node1") && err.contains("refused"),
        "{err}"
    );
}
