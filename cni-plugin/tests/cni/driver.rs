//! The test driver: calls CNI plugins exactly as a container runtime does (exec in the
//! node's namespace, `CNI_*` in a clean environment, the config on stdin, JSON read back
//! from stdout), a conflist runner that chains plugins with `prevResult`, and pods as
//! throwaway namespaces.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use skein_netns::NetNs;
use skein_netns::netlink::Netlink;
use skein_testbed::{Config, EtcdMode, Host, Node, TestBed};

/// Debian's reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// The cluster network and this node's subnet, as flanneld would write them.
pub const CLUSTER_NET: &str = "10.244.0.0/16";
/// Node 1's pod subnet gateway.
pub const GATEWAY: &str = "10.244.1.1";

/// Our binary, as cargo built it for these tests.
pub fn skein_cni() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skein-cni"))
}

/// `CNI_PATH`: our binary's dir, then the reference plugins.
pub fn cni_path() -> String {
    format!(
        "{}:{REFERENCE_DIR}",
        skein_cni().parent().unwrap().display()
    )
}

/// What a plugin answered.
#[derive(Debug)]
pub struct Answer {
    /// Exit status.
    pub status: i32,
    /// Stdout parsed as JSON (`Null` when empty).
    pub json: Value,
    /// Raw stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Answer {
    /// Panics unless the plugin succeeded.
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status, 0,
            "plugin failed: stdout {} stderr {}",
            self.stdout, self.stderr
        );
        self.json
    }

    /// Panics unless the plugin failed with the spec's error JSON and `code`; returns msg.
    pub fn err(self, code: u64) -> String {
        assert_ne!(self.status, 0, "plugin succeeded: {}", self.stdout);
        assert_eq!(
            self.json["code"].as_u64(),
            Some(code),
            "wrong code: stdout {} stderr {}",
            self.stdout,
            self.stderr
        );
        assert!(self.json["msg"].is_string(), "no msg: {}", self.stdout);
        let mut m = self.json["msg"].as_str().unwrap().to_owned();
        if let Some(d) = self.json["details"].as_str() {
            m.push_str(" / ");
            m.push_str(d);
        }
        m
    }
}

/// One invocation's environment.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    /// CNI_COMMAND.
    pub command: &'a str,
    /// CNI_CONTAINERID.
    pub container_id: &'a str,
    /// CNI_NETNS.
    pub netns: Option<&'a Path>,
    /// CNI_IFNAME.
    pub ifname: &'a str,
    /// CNI_PATH, when not [`cni_path`].
    pub path: Option<&'a str>,
}

/// Execs `plugin` in `node`'s namespace with `call`'s environment and `config` on stdin.
pub fn exec(node: &Host, plugin: &Path, call: &Call<'_>, stdin: &[u8]) -> Answer {
    let mut cmd = node.command(plugin).expect("command in node netns");
    configure(&mut cmd, call);
    let mut child = cmd.spawn().expect("spawn plugin");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().expect("wait for plugin");
    answer(out)
}

/// Sets up a plugin command as a runtime does.
pub fn configure(cmd: &mut Command, call: &Call<'_>) {
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_PATH", call.path.map_or_else(cni_path, str::to_owned))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !call.container_id.is_empty() {
        cmd.env("CNI_CONTAINERID", call.container_id);
    }
    if !call.ifname.is_empty() {
        cmd.env("CNI_IFNAME", call.ifname);
    }
    if let Some(ns) = call.netns {
        cmd.env("CNI_NETNS", ns);
    }
}

/// Reads a finished plugin's output.
pub fn answer(out: std::process::Output) -> Answer {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {stdout:?}"))
    };
    Answer {
        status: out.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Calls skein-cni.
pub fn cni(node: &Host, call: &Call<'_>, config: &Value) -> Answer {
    exec(node, &skein_cni(), call, config.to_string().as_bytes())
}

/// Runs a conflist as libcni does: ADD through the plugins in order, each getting the
/// previous result as `prevResult`; returns the final result.
pub fn conflist_add(
    node: &Host,
    list: &Value,
    call: &Call<'_>,
    runtime: &Value,
) -> Result<Value, Answer> {
    let mut prev: Option<Value> = None;
    for plugin in list["plugins"].as_array().expect("plugins") {
        let conf = plugin_conf(list, plugin, prev.as_ref(), runtime);
        let bin = find_plugin(plugin["type"].as_str().unwrap());
        let a = exec(
            node,
            &bin,
            &Call {
                command: "ADD",
                ..call.clone()
            },
            conf.to_string().as_bytes(),
        );
        if a.status != 0 {
            return Err(a);
        }
        prev = Some(a.json);
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// DEL through the plugins in reverse order with the cached result as `prevResult`.
pub fn conflist_del(node: &Host, list: &Value, call: &Call<'_>, runtime: &Value, cached: &Value) {
    for plugin in list["plugins"].as_array().expect("plugins").iter().rev() {
        let conf = plugin_conf(list, plugin, Some(cached), runtime);
        let bin = find_plugin(plugin["type"].as_str().unwrap());
        exec(
            node,
            &bin,
            &Call {
                command: "DEL",
                ..call.clone()
            },
            conf.to_string().as_bytes(),
        )
        .ok();
    }
}

fn plugin_conf(list: &Value, plugin: &Value, prev: Option<&Value>, runtime: &Value) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    // runtimeConfig carries only the capabilities the plugin declares.
    if let Some(caps) = plugin["capabilities"].as_object() {
        let mut rc = serde_json::Map::new();
        for (cap, on) in caps {
            if on.as_bool() == Some(true) && !runtime[cap].is_null() {
                rc.insert(cap.clone(), runtime[cap].clone());
            }
        }
        conf["runtimeConfig"] = Value::Object(rc);
    }
    conf
}

fn find_plugin(kind: &str) -> PathBuf {
    for dir in cni_path().split(':') {
        let p = Path::new(dir).join(kind);
        if p.is_file() {
            return p;
        }
    }
    panic!("plugin {kind} not found in {}", cni_path());
}

/// A pod sandbox: a namespace with a unique name, deleted on drop.
#[derive(Debug)]
pub struct Pod {
    /// Its namespace.
    pub ns: Option<NetNs>,
    /// Its path.
    pub path: PathBuf,
    /// The container ID used for it.
    pub id: String,
}

impl Pod {
    /// A new sandbox named after the bed's prefix.
    pub fn new(bed: &TestBed, tag: &str) -> Pod {
        let name = format!("{}-pod-{tag}", bed.prefix());
        let ns = NetNs::create(&name).expect("create pod netns");
        Pod {
            path: ns.path().to_owned(),
            ns: Some(ns),
            id: format!("{}{tag}", bed.prefix()),
        }
    }

    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        self.ns.as_ref().expect("pod netns deleted")
    }

    /// The ADD/DEL call for this pod.
    pub fn call<'a>(&'a self, command: &'a str) -> Call<'a> {
        Call {
            command,
            container_id: &self.id,
            netns: Some(&self.path),
            ifname: "eth0",
            path: None,
        }
    }

    /// Deletes the namespace now (to test DEL after the sandbox is gone).
    pub fn delete(&mut self) {
        self.ns = None;
        NetNs::delete_at(&self.path).expect("delete pod netns");
    }

    /// Names of the links inside the pod.
    pub fn links(&self) -> Vec<String> {
        let mut nl = Netlink::open_in(self.ns()).unwrap();
        nl.links().unwrap().into_iter().map(|l| l.name).collect()
    }

    /// Opens a TCP connection from inside the pod.
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        self.ns()
            .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
            .unwrap()
    }

    /// Listens inside the pod.
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        self.ns().run(|| TcpListener::bind(addr)).unwrap().unwrap()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.ns = None;
        let _ = NetNs::delete_at(&self.path);
    }
}

/// A bed with `nodes` nodes (no etcd), the subnet file written for node 1.
pub fn bed(nodes: usize, outside: bool) -> TestBed {
    let bed = TestBed::start(Config {
        nodes,
        outside,
        etcd: EtcdMode::None,
        cgroups: false,
        ..Default::default()
    })
    .expect("start test bed");
    write_subnet_file(bed.node(1), true);
    bed
}

/// Writes node's subnet file as flanneld does.
pub fn write_subnet_file(node: &Node, ipmasq: bool) {
    std::fs::write(
        &node.dirs.subnet_file,
        format!(
            "FLANNEL_NETWORK={CLUSTER_NET}\nFLANNEL_SUBNET={GATEWAY}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={ipmasq}\n"
        ),
    )
    .unwrap();
}

/// A flannel-style config for `node` (subnet from the subnet file).
pub fn flannel_conf(node: &Node, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "cbr0",
        "type": "skein-cni",
        "subnetFile": node.dirs.subnet_file,
        "ipam": { "type": "host-local", "dataDir": node.dirs.ipam_data_dir },
    })
}

/// Files in the node's IPAM dir for network `name`, sorted.
pub fn ipam_files(node: &Node, name: &str) -> Vec<String> {
    let dir = node.dirs.ipam_data_dir.join(name);
    let mut v: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Asserts the IPAM dir holds no allocation (only `lock` and `last_reserved_ip.*`).
pub fn assert_no_allocations(node: &Node, name: &str) {
    let files = ipam_files(node, name);
    let left: Vec<&String> = files
        .iter()
        .filter(|f| *f != "lock" && !f.starts_with("last_reserved_ip."))
        .collect();
    assert!(left.is_empty(), "allocations left in {name}: {left:?}");
}

/// Links in the node's namespace.
pub fn node_links(node: &Host) -> Vec<String> {
    let mut nl = Netlink::open_in(&node.netns).unwrap();
    nl.links().unwrap().into_iter().map(|l| l.name).collect()
}

/// Asserts no veth (nor anything but lo, eth0 and the bridge) is left on the node.
pub fn assert_no_veths(node: &Host) {
    let left: Vec<String> = node_links(node)
        .into_iter()
        .filter(|n| !["lo", "eth0", "cni0"].contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "links left on {}: {left:?}", node.name);
}

/// The pod's first address from a result.
pub fn pod_ip(result: &Value) -> IpAddr {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    a.split('/').next().unwrap().parse().unwrap()
}

/// Accepts one connection on `listener` in a thread, echoing "pong" for "ping";
/// returns the peer address it saw.
pub fn serve_once(listener: TcpListener) -> std::thread::JoinHandle<std::io::Result<SocketAddr>> {
    use std::io::Read;
    std::thread::spawn(move || {
        let (mut s, peer) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        s.write_all(b"pong")?;
        Ok(peer)
    })
}

/// Sends "ping", expects "pong".
pub fn ping_pong(mut s: TcpStream) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

/// TCP from `from` to a listener in `to` at `addr`.
pub fn pod_to_pod(from: &Pod, to: &Pod, addr: SocketAddr) {
    let l = to.listen(addr);
    let server = serve_once(l);
    ping_pong(
        from.connect(addr)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}")),
    );
    server.join().unwrap().unwrap();
}
