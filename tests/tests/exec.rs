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

    // A command that does not exist: a clear error naming it, exit non-zero.
    let out = kubectl_exec(&c, None, &["exec-a", "--", "no-such-command", "x"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-command") && err.contains("No such file"),
        "{err}"
    );
}
