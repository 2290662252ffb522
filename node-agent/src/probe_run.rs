//! Running one probe inside the pod: exec (a process in the sandbox's namespaces),
//! tcpSocket (connect from inside the pod's netns), httpGet (a GET from inside the pod's
//! netns; 200-399 passes).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nix::sys::signal::Signal;

use crate::container::ProcessSpec;
use crate::procfs::ProcRef;

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// `namespace/name` for messages.
    pub pod: String,
    /// The sandbox's pause process.
    pub pause: ProcRef,
    /// The pod's netns mount (None: the agent's own, for hostNetwork pods).
    pub netns: Option<PathBuf>,
    /// The default host: the pod IP (or 127.0.0.1).
    pub pod_ip: Option<IpAddr>,
    /// The container's cgroup (exec probes run in it).
    pub cgroup: Option<PathBuf>,
    /// The container's environment (exec probes inherit it).
    pub env: ProcessSpec,
}

/// Starts `argv` as a container process is started: in the sandbox's namespaces (the
/// pod's mount namespace too), the container's cgroup, env, workingDir and user, as the
/// leader of a new session. `stdio` is stdin, stdout, stderr.
pub fn spawn_in_pod(
    argv: &[String],
    t: &ProbeTarget,
    stdio: [Stdio; 3],
    kill_on_drop: bool,
) -> Result<tokio::process::Child, String> {
    let Some(program) = argv.first() else {
        return Err("no command given".into());
    };
    let namespaces =
        crate::sandbox::open_namespaces(&t.pod, &t.pause).map_err(|e| e.to_string())?;
    let cgroup = crate::cgroup::prepare(t.cgroup.as_deref()).map_err(|e| e.to_string())?;
    let [stdin, stdout, stderr] = stdio;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&t.env.env)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    let cwd = t
        .env
        .working_dir
        .as_deref()
        .map(crate::sys::path_cstring)
        .transpose()?;
    crate::sys::join_hooks(&mut cmd, namespaces, cgroup, true, t.env.user, cwd);
    tokio::process::Command::from(cmd)
        .kill_on_drop(kill_on_drop)
        .spawn()
        .map_err(|e| format!("exec {program:?} in pod {}: {e}", t.pod))
}

/// Runs a probe; Ok(()) passes, Err says why it failed.
pub async fn run(
    probe: &Probe,
    c: &Container,
    t: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        return run_exec(exec.command.clone().unwrap_or_default(), t, timeout).await;
    }
    let host = |h: &Option<String>| -> Result<IpAddr, String> {
        match h.as_deref().filter(|s| !s.is_empty()) {
            Some(h) => h
                .parse()
                .map_err(|_| format!("probe host {h:?} is not an IP address")),
            None => Ok(t.pod_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]))),
        }
    };
    if let Some(tcp) = &probe.tcp_socket {
        let addr = SocketAddr::new(host(&tcp.host)?, resolve_port(&tcp.port, c)?);
        return in_netns(t.netns.clone(), move || {
            TcpStream::connect_timeout(&addr, timeout)
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"))
        })
        .await;
    }
    if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
        {
            return Err(format!(
                "httpGet scheme {:?} is not supported (only HTTP)",
                http.scheme
            ));
        }
        let addr = SocketAddr::new(host(&http.host)?, resolve_port(&http.port, c)?);
        let path = http
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or("/".into());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return in_netns(t.netns.clone(), move || {
            http_get(addr, &path, &headers, timeout)
        })
        .await;
    }
    Err("probe has no exec, tcpSocket or httpGet handler (grpc is not supported)".into())
}

/// A named port resolves through the container's ports.
pub fn resolve_port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("container {:?} has no port named {name:?}", c.name))
        }
    }
}

async fn in_netns<F>(netns: Option<PathBuf>, f: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    tokio::task::spawn_blocking(move || match netns {
        Some(p) => skein_netns::NetNs::open(&p)
            .map_err(|e| e.to_string())?
            .run(f)
            .map_err(|e| e.to_string())?,
        None => f(),
    })
    .await
    .map_err(|e| format!("probe task: {e}"))?
}

fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 4096 {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    let code = parse_status(&line)
        .ok_or_else(|| format!("GET http://{addr}{path}: no HTTP status line"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// The status code of an HTTP response's first line.
pub fn parse_status(resp: &str) -> Option<u16> {
    let line = resp.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn run_exec(argv: Vec<String>, t: &ProbeTarget, timeout: Duration) -> Result<(), String> {
    if argv.is_empty() {
        return Err("exec probe has no command".into());
    }
    let mut child = spawn_in_pod(
        &argv,
        t,
        [Stdio::null(), Stdio::null(), Stdio::piped()],
        true,
    )?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!("command {argv:?} exited with {st}")),
        Ok(Err(e)) => Err(format!("wait for {argv:?}: {e}")),
        Err(_) => {
            if let Some(p) = pid.and_then(|p| ProcRef::of(p as i32)) {
                p.signal_group(Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(format!("command {argv:?} timed out after {timeout:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status("HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status("HTTP/1.1 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert!(
            resolve_port(&IntOrString::String("grpc".into()), &c)
                .unwrap_err()
                .contains("no port named")
        );
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }
}
