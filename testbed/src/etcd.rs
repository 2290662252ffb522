//! A real etcd (Debian's etcd-server) inside the bed: one member, or three for failure
//! tests, each listening only on its own namespace's fabric address.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::log_tail;
use crate::{Daemon, Error, Host, Result};

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd member: its host on the fabric and its process.
#[derive(Debug)]
pub struct EtcdMember {
    /// Member name (`etcd`, `etcd1`..).
    pub name: String,
    /// The host it runs in.
    pub host: Host,
    /// The process; `None` once killed or stopped.
    pub daemon: Option<Daemon>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl EtcdMember {
    /// `http://<addr>:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.host.addr)
    }
}

/// etcd as the bed runs it.
#[derive(Debug)]
pub struct Etcd {
    /// The members, in order.
    pub members: Vec<EtcdMember>,
}

impl Etcd {
    pub(crate) fn start(prefix: &str, state_dir: &Path, hosts: Vec<Host>) -> Result<Etcd> {
        let binary = which("etcd").ok_or_else(|| {
            Error::Etcd("the etcd binary is not installed (run scripts/install-deps.sh: Debian etcd-server)".into())
        })?;
        let initial_cluster = hosts
            .iter()
            .map(|h| format!("{}=http://{}:{PEER_PORT}", h.name, h.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members: Vec::new(),
        };
        for host in hosts {
            let data_dir = state_dir.join(&host.name).join("data");
            let log = state_dir.join(&host.name).join("etcd.log");
            let client = format!("http://{}:{CLIENT_PORT}", host.addr);
            let peer = format!("http://{}:{PEER_PORT}", host.addr);
            let mut cmd = host.command(&binary)?;
            cmd.args(["--name", &host.name])
                .arg("--data-dir")
                .arg(&data_dir)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--initial-cluster-token", prefix])
                .args([
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                    "--log-level",
                    "warn",
                ]);
            let daemon = Daemon::spawn(&format!("etcd {}", host.name), cmd, &log)?;
            etcd.members.push(EtcdMember {
                name: host.name.clone(),
                host,
                daemon: Some(daemon),
                data_dir,
                log,
            });
        }
        // `etcd` is dropped (and every member stopped) if it never becomes healthy.
        etcd.wait_healthy(START_TIMEOUT)?;
        Ok(etcd)
    }

    /// The client URLs of the members that are running, comma-separated (the form of
    /// `--etcd-endpoints` and `--etcd-servers`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.daemon.is_some())
            .map(EtcdMember::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running member answers `/health` with `true`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for m in &mut self.members {
                let Some(d) = m.daemon.as_mut() else { continue };
                if !d.is_running() {
                    return Err(Error::Etcd(format!(
                        "member {} exited; log {}:\n{}",
                        m.name,
                        m.log.display(),
                        log_tail(&m.log, 15)
                    )));
                }
                if !member_healthy(&m.host) {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        format!(
                            "{} ({}):\n{}",
                            m.name,
                            m.log.display(),
                            log_tail(&m.log, 10)
                        )
                    })
                    .collect();
                return Err(Error::Etcd(format!(
                    "not healthy after {timeout:?}; logs:\n{}",
                    logs.join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (0-based) with SIGKILL, as a crash would.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut d) = self.members[i].daemon.take() {
            d.kill();
        }
    }

    /// Stops every member.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut d) = m.daemon.take() {
                d.stop();
            }
        }
    }

    /// `etcdctl` arguments for a client: the API version and the running endpoints.
    pub fn etcdctl(&self, from: &Host) -> Result<std::process::Command> {
        let mut cmd = from.command("etcdctl")?;
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints())
            .args(["--command-timeout", "5s"]);
        Ok(cmd)
    }
}

/// GET `/health` on a member's client URL, from inside its own namespace.
fn member_healthy(host: &Host) -> bool {
    let addr = SocketAddr::from((host.addr, CLIENT_PORT));
    match http_get(host, addr, "/health") {
        Ok((200, body)) => body.contains("\"health\":\"true\""),
        _ => false,
    }
}

/// A minimal HTTP/1.0 GET from inside `from`'s namespace: (status, body).
pub fn http_get(from: &Host, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let stream = from.connect_tcp(addr, Duration::from_secs(2))?;
    let what = format!("GET http://{addr}{path} from {}", from.name);
    let result = (|| -> std::io::Result<(u16, String)> {
        let mut s = stream;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })();
    result.map_err(crate::io_err(what))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/usr/sbin:/bin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
