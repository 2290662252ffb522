//! A running skein-apiserver for tests: a TestBed with etcd, the server inside node1's
//! namespace on 198.51.100.11:6443, and kubectl run inside that namespace with a
//! kubeconfig in the bed's state dir. Nothing talks to the root namespace.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use skein_testbed::{Config, Daemon, EtcdMode, TestBed};

pub const PORT: u16 = 6443;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces); run `make test` as root"
    );
}

/// The built server binary next to the test executable.
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("skein-apiserver");
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build -p skein-control-plane` first",
        p.display()
    );
    p
}

pub struct Api {
    pub bed: TestBed,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub token: Option<String>,
    pub server: std::sync::Mutex<Option<Daemon>>,
    extra_args: Vec<String>,
    /// The certificates of an HTTPS server.
    pub pki: Option<Pki>,
}

impl Api {
    /// A bed and a server with anonymous access.
    pub fn start() -> Api {
        Api::start_with(&[], None)
    }

    /// A bed and a server with extra flags; `token` goes into the kubeconfig.
    pub fn start_with(extra: &[&str], token: Option<&str>) -> Api {
        Api::start_inner(extra, token, false, false)
    }

    /// A bed and an HTTPS server: a CA and a server certificate for node1's address are
    /// made with the openssl CLI in the bed's state dir (see [`Pki`]), the kubeconfig
    /// trusts the CA and carries `token`.
    pub fn start_tls(extra: &[&str], token: Option<&str>) -> Api {
        Api::start_inner(extra, token, true, false)
    }

    /// [`Api::start_tls`] with `--client-ca-file` set to the test CA.
    pub fn start_tls_client_ca(extra: &[&str], token: Option<&str>) -> Api {
        Api::start_inner(extra, token, true, true)
    }

    fn start_inner(extra: &[&str], token: Option<&str>, tls: bool, client_ca: bool) -> Api {
        require_root();
        let bed = TestBed::start(Config {
            nodes: 1,
            outside: false,
            etcd: EtcdMode::Single,
            cgroups: false,
            prefix: None,
        })
        .expect("test bed");
        let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let pki =
            tls.then(|| Pki::make(&bed.state_dir().join("pki"), &bed.node(1).addr.to_string()));
        if let Some(p) = &pki {
            extra_args.extend([
                "--tls-cert-file".to_owned(),
                p.server_cert.display().to_string(),
                "--tls-private-key-file".to_owned(),
                p.server_key.display().to_string(),
            ]);
            if client_ca {
                extra_args.extend([
                    "--client-ca-file".to_owned(),
                    p.ca_cert.display().to_string(),
                ]);
            }
        }
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{}:{PORT}", bed.node(1).addr);
        let kubeconfig = bed.state_dir().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_text(&url, pki.as_ref().map(|p| p.ca_cert.as_path()), token),
        )
        .unwrap();
        let api = Api {
            bed,
            kubeconfig,
            url,
            token: token.map(str::to_owned),
            server: std::sync::Mutex::new(None),
            extra_args,
            pki,
        };
        api.start_server();
        api
    }

    pub fn start_server(&self) {
        let d = self.spawn_server(PORT);
        *self.server.lock().unwrap() = Some(d);
    }

    /// Starts one more server on `port` (same etcd) and waits until it answers.
    pub fn spawn_server(&self, port: u16) -> Daemon {
        self.spawn_server_with(port, &self.extra_args, self.pki.is_some())
    }

    /// Starts one more server on `port` with exactly `args` as extra flags; `tls` says
    /// whether those make it serve HTTPS (for the readiness probe).
    pub fn spawn_server_with(&self, port: u16, args: &[String], tls: bool) -> Daemon {
        let node = self.bed.node(1);
        let mut cmd = node.command(server_binary()).unwrap();
        cmd.args(["--etcd-servers", &self.bed.etcd().members[0].client_url()])
            .args([
                "--bind-address",
                &node.addr.to_string(),
                "--port",
                &port.to_string(),
            ])
            .args(args)
            .env("RUST_LOG", "info,skein_control_plane=debug");
        let log = node.dirs.log_dir.join(format!("apiserver-{port}.log"));
        let mut d = node.spawn("skein-apiserver", cmd, &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The server listens only once etcd answered and bootstrap is done, so for
            // HTTPS an accepted TCP connection means ready (raw HTTP cannot probe it).
            if tls {
                if node
                    .connect_tcp(SocketAddr::from((node.addr, port)), Duration::from_secs(1))
                    .is_ok()
                {
                    break;
                }
            } else if let Ok((code, _)) = self.http_to(port, "GET", "/readyz", None, None)
                && (code == 200 || code == 401)
            {
                break;
            }
            assert!(
                d.is_running(),
                "skein-apiserver exited:\n{}",
                d.log_tail(30)
            );
            assert!(
                Instant::now() < deadline,
                "skein-apiserver not ready after 30s:\n{}",
                d.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub fn stop_server(&self) {
        if let Some(mut d) = self.server.lock().unwrap().take() {
            d.stop();
        }
    }

    pub fn log_tail(&self) -> String {
        self.server
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| d.log_tail(40))
            .unwrap_or_default()
    }

    /// One HTTP/1.0 request from inside node1; returns (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> std::io::Result<(u16, String)> {
        self.http_auth(method, path, body, self.token.as_deref())
    }

    pub fn http_auth(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        self.http_to(PORT, method, path, body, token)
    }

    pub fn http_to(
        &self,
        port: u16,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let node = self.bed.node(1);
        let addr = SocketAddr::from((node.addr, port));
        let mut s = node
            .connect_tcp(addr, Duration::from_secs(3))
            .map_err(std::io::Error::other)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut req =
            format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some((ct, b)) = body {
            req.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, body.to_owned()))
    }

    /// Sends raw request bytes from inside node1 and reads the reply.
    pub fn http_raw(&self, request: &str) -> std::io::Result<(u16, String)> {
        let node = self.bed.node(1);
        let addr = SocketAddr::from((node.addr, PORT));
        let mut s = node
            .connect_tcp(addr, Duration::from_secs(3))
            .map_err(std::io::Error::other)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, body.to_owned()))
    }

    /// Runs kubectl inside node1 with the bed's kubeconfig.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let node = self.bed.node(1);
        let mut cmd = node.command("kubectl").unwrap();
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.bed.state_dir())
            .args(["--request-timeout", "20s"])
            .args(args);
        if let Some(input) = stdin {
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        } else {
            cmd.stdin(std::process::Stdio::null());
            cmd.output().unwrap()
        }
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl with stdin that must succeed.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, Some(stdin));
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns stderr.
    pub fn kubectl_fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A JSON object via kubectl get -o json.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).unwrap()
    }

    /// The repository's tests/fixtures dir.
    pub fn fixture(name: &str) -> String {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        p.display().to_string()
    }
}

/// A kubeconfig for `url`, trusting `ca` when given, with `token` when given.
pub fn kubeconfig_text(url: &str, ca: Option<&Path>, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("  user:\n    token: {t}\n"),
        None => "  user: {}\n".to_owned(),
    };
    let ca = ca
        .map(|p| format!("    certificate-authority: {}\n", p.display()))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skein\n  cluster:\n    server: {url}\n{ca}users:\n- name: u\n{user}contexts:\n- name: skein\n  context:\n    cluster: skein\n    user: u\n    namespace: default\ncurrent-context: skein\n"
    )
}

/// A kubeconfig for `url` trusting `ca` whose user presents a client certificate.
pub fn kubeconfig_cert(url: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skein\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: skein\n  context:\n    cluster: skein\n    user: u\n    namespace: default\ncurrent-context: skein\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// A test CA and a server certificate signed by it, made with the openssl CLI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    /// The server key in SEC1 form (`EC PRIVATE KEY`).
    pub server_key: PathBuf,
    /// The same key as PKCS#8 (`PRIVATE KEY`).
    pub server_key_pkcs8: PathBuf,
    /// A client certificate the CA signed: CN=admin, O=system:masters.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A self-signed client certificate no CA vouches for.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

impl Pki {
    /// Makes the files in `dir` for a server reached at IP address `ip`.
    pub fn make(dir: &Path, ip: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl CLI (apt-get install openssl) makes the test certificates");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A new P-256 key in `key` and for `subj` a certificate request in `out`, or with
        // `self_signed` a certificate valid for 2 days; `extra` arguments appended.
        let new_key = |key: &str, out: &str, subj: &str, self_signed: bool, extra: &[&str]| {
            let mut args = vec!["req"];
            if self_signed {
                args.extend(["-x509", "-days", "2"]);
            }
            args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
            args.extend(["-nodes", "-keyout", key, "-out", out, "-subj", subj]);
            args.extend_from_slice(extra);
            openssl(&args);
        };
        // The CA signs request `csr` into `crt`, valid for 2 days, with the extensions
        // `ext` (written to `<crt>.ext`).
        let sign = |csr: &str, crt: &str, ext: &str| {
            let ext_file = format!("{crt}.ext");
            std::fs::write(dir.join(&ext_file), ext).unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                crt,
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ]);
        };
        new_key(
            "ca.key",
            "ca.crt",
            "/CN=skein-test-ca",
            true,
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        new_key(
            "server.pkcs8.key",
            "server.csr",
            "/CN=skein-apiserver",
            false,
            &[],
        );
        sign(
            "server.csr",
            "server.crt",
            &format!(
                "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            ),
        );
        openssl(&["ec", "-in", "server.pkcs8.key", "-out", "server.key"]);
        new_key(
            "client.key",
            "client.csr",
            "/O=system:masters/CN=admin",
            false,
            &[],
        );
        sign("client.csr", "client.crt", "extendedKeyUsage=clientAuth\n");
        new_key("rogue.key", "rogue.crt", "/CN=admin", true, &[]);
        let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
        assert!(key.contains("BEGIN EC PRIVATE KEY"), "{key}");
        Pki {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            server_key_pkcs8: dir.join("server.pkcs8.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            rogue_cert: dir.join("rogue.crt"),
            rogue_key: dir.join("rogue.key"),
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop_server();
    }
}
