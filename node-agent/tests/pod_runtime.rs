//! The pod runtime on a test-bed node with Debian's reference CNI plugins (bridge +
//! host-local + portmap): sandboxes, CNI, containers, restarts, probes, deletion and
//! re-adoption after an agent restart. Needs root; every test builds its own bed.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction, Pod, PodSpec, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skein_node_agent::backoff::Backoff;
use skein_node_agent::{PodRuntime, PodSnapshot, RuntimeConfig, status};
use skein_testbed::{Config, EtcdMode, TestBed};

const NET: &str = "skein-test";
const PYTHON: &str = "/usr/bin/python3";

struct Env {
    bed: TestBed,
    cfg: RuntimeConfig,
}

fn env() -> Env {
    env_with(false)
}

/// A bed with node1 (and the `outside` host when asked).
fn env_with(outside: bool) -> Env {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (they create namespaces and run CNI plugins)"
    );
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        assert!(
            Path::new("/usr/lib/cni").join(p).is_file(),
            "/usr/lib/cni/{p} is missing: install Debian's containernetworking-plugins (scripts/install-deps.sh)"
        );
    }
    assert!(Path::new(PYTHON).is_file(), "{PYTHON} is missing");
    let bed = TestBed::start(Config {
        nodes: 1,
        outside,
        etcd: EtcdMode::None,
        cgroups: true,
        prefix: None,
    })
    .expect("test bed");
    let d = &bed.node(1).dirs;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]],
                      // The fabric only (no default route): replies to the outside
                      // host find their way, anything else stays unreachable.
                      "routes": [{"dst": "198.51.100.0/24", "gw": "10.244.1.1"}],

                      "dataDir": d.ipam_data_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(
        d.cni_conf_dir.join("10-skein-test.conflist"),
        conf.to_string(),
    )
    .unwrap();
    let cfg = RuntimeConfig {
        state_dir: d.root.join("agent"),
        cni_conf_dir: d.cni_conf_dir.clone(),
        cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        cgroup_root: d.cgroup.clone(),
        pause_exe: PathBuf::from(env!("CARGO_BIN_EXE_skein-agent")),
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            reset_after: Duration::from_secs(60),
        },
        node_ip: Some(IpAddr::V4(bed.node(1).addr)),
        sync_period: Duration::from_millis(100),
        dns: Default::default(),
    };
    Env { bed, cfg }
}

impl Env {
    /// Runs the async test body on a thread inside node1's namespace (where the agent
    /// runs on a real node), on a single-threaded tokio runtime.
    fn run<T: Send>(&self, f: impl Future<Output = T> + Send) -> T {
        self.bed
            .node(1)
            .in_netns(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f)
            })
            .expect("enter node netns")
    }

    fn ipam_ips(&self) -> Vec<String> {
        let dir = self.bed.node(1).dirs.ipam_data_dir.join(NET);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn uid() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        r.random::<u32>(),
        r.random::<u64>() & 0xffff_ffff_ffff
    )
}

fn pod(name: &str, containers: Vec<Container>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(uid());
    p.spec = Some(PodSpec {
        containers,
        termination_grace_period_seconds: Some(2),
        ..Default::default()
    });
    p
}

fn container(name: &str, argv: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some("debian:12".into()),
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

/// A python HTTP server on :8080 serving `dir`.
fn web(dir: &Path) -> Container {
    let mut c = container(
        "web",
        &[PYTHON, "-m", "http.server", "8080", "--bind", "0.0.0.0"],
    );
    c.working_dir = Some(dir.display().to_string());
    c.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: 8080,
        ..Default::default()
    }]);
    c
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

fn snap(rt: &PodRuntime, p: &Pod) -> PodSnapshot {
    rt.snapshot(&uid_of(p)).expect("pod known to the runtime")
}

fn pid_of(rt: &PodRuntime, p: &Pod, c: &str) -> Option<i32> {
    snap(rt, p)
        .record
        .containers
        .get(c)?
        .running
        .as_ref()
        .map(|r| r.proc.pid)
}

fn ready(rt: &PodRuntime, p: &Pod) -> bool {
    let st = status::pod_status(&snap(rt, p), None, std::time::SystemTime::now());
    st.conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn running_ip(rt: &PodRuntime, p: &Pod) -> IpAddr {
    wait_for("pod running with an IP", Duration::from_secs(30), || {
        let s = snap(rt, p);
        let st = status::pod_status(&s, None, std::time::SystemTime::now());
        (st.phase.as_deref() == Some("Running"))
            .then(|| st.pod_ip.and_then(|ip| ip.parse().ok()))
            .flatten()
    })
    .await
}

/// GET http://ip:port/path from inside `netns` (a pod's namespace mount).
fn http_get_in(netns: &Path, addr: SocketAddr, path: &str) -> Result<String, String> {
    skein_netns::NetNs::open(netns)
        .map_err(|e| e.to_string())?
        .run(|| -> Result<String, String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        })
        .map_err(|e| e.to_string())?
}

fn in_subnet(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 244, 1])
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn pods_get_ips_hostnames_and_talk_tcp() {
    let env = env();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("marker.txt"), "hello-from-server").unwrap();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let server = pod("server", vec![web(www.path())]);
        rt.apply(server.clone()).unwrap();
        let server_ip = running_ip(&rt, &server).await;
        assert!(in_subnet(server_ip), "server IP {server_ip} outside 10.244.1.0/24");

        // The client pod fetches the marker from the server pod over TCP, and prints
        // its hostname, which must be its pod name.
        let script = "hostname; for i in $(seq 100); do \
                      python3 -c \"import urllib.request,sys; print(urllib.request.urlopen('http://'+sys.argv[1]+':8080/marker.txt').read().decode())\" $SERVER && break; \
                      sleep 0.2; done; exec sleep 600";
        let mut c = container("client", &["/bin/sh", "-c", script]);
        c.env = Some(vec![EnvVar {
            name: "SERVER".into(),
            value: Some(server_ip.to_string()),
            ..Default::default()
        }]);
        let client = pod("client-pod", vec![c]);
        rt.apply(client.clone()).unwrap();
        let client_ip = running_ip(&rt, &client).await;
        assert!(in_subnet(client_ip));
        assert_ne!(client_ip, server_ip);
        let log = snap(&rt, &client).record.containers["client"].running.as_ref().unwrap().log.clone();
        wait_for("client log shows the server's reply", Duration::from_secs(30), || {
            log_text(&log).contains("hello-from-server").then_some(())
        })
        .await;
        assert!(log_text(&log).starts_with("client-pod\n"), "hostname: {}", log_text(&log));
        assert!(rt.log_file("default", "client-pod", "client", false).is_some());

        // The status carries what a user reads with kubectl.
        let st = status::pod_status(&snap(&rt, &server), None, std::time::SystemTime::now());
        assert_eq!(st.pod_ip.as_deref(), Some(server_ip.to_string().as_str()));
        assert_eq!(st.host_ip.as_deref(), Some("198.51.100.11"));
        let cs = &st.container_statuses.unwrap()[0];
        assert!(cs.ready && cs.state.as_ref().unwrap().running.is_some());
        assert_eq!(cs.image, "debian:12");

        // lo is up in the pod (containerd's loopback network): reach the server on 127.0.0.1.
        let netns = snap(&rt, &server).record.sandbox.unwrap().netns.unwrap();
        let body = http_get_in(&netns, "127.0.0.1:8080".parse().unwrap(), "/marker.txt").unwrap();
        assert!(body.contains("hello-from-server"), "{body}");

        // One cached CNI result per attachment (pod network + loopback), in libcni's layout.
        let results: Vec<String> = std::fs::read_dir(env.cfg.state_dir.join("cni/results"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(results.iter().filter(|n| n.starts_with("skein-test-") && n.ends_with("-eth0")).count(), 2, "{results:?}");
        assert_eq!(results.iter().filter(|n| n.starts_with("cni-loopback-")).count(), 2, "{results:?}");
        assert_eq!(env.ipam_ips().len(), 2);

        // CHECK with the cached result passes against the real bridge plugin, and fails
        // once the pod's interface is gone.
        let cni = skein_node_agent::cni::Cni {
            bin_dirs: env.cfg.cni_bin_dirs.clone(),
            cache_dir: env.cfg.state_dir.join("cni"),
        };
        let list = skein_node_agent::cni::load_dir(&env.cfg.cni_conf_dir).unwrap();
        let sb = snap(&rt, &server).record.sandbox.unwrap();
        let att = skein_node_agent::cni::Attachment {
            container_id: sb.id.clone(),
            netns: netns.clone(),
            ifname: "eth0".into(),
            args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Default::default(),
        };
        cni.check(&list, &att).await.unwrap();
        let ns = skein_netns::NetNs::open(&netns).unwrap();
        let out = ns.command("ip").unwrap().args(["link", "del", "eth0"]).status().unwrap();
        assert!(out.success());
        let e = cni.check(&list, &att).await.unwrap_err().to_string();
        assert!(e.contains("CHECK"), "{e}");

        for p in [&server, &client] {
            rt.delete(&uid_of(p), Duration::from_secs(2)).await.unwrap();
        }
        assert!(env.ipam_ips().is_empty(), "{:?}", env.ipam_ips());
    });
}

#[test]
fn killed_container_restarts_with_growing_count() {
    let env = env();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let p = pod("crashy", vec![container("main", &["/bin/sleep", "600"])]);
        rt.apply(p.clone()).unwrap();
        running_ip(&rt, &p).await;
        let mut last_pid = pid_of(&rt, &p, "main").unwrap();
        for round in 1..=3u32 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(last_pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let (pid, count) = wait_for("container restarted", Duration::from_secs(20), || {
                let s = snap(&rt, &p);
                let c = &s.record.containers["main"];
                c.running
                    .as_ref()
                    .filter(|r| r.proc.pid != last_pid)
                    .map(|r| (r.proc.pid, c.restart_count))
            })
            .await;
            assert_eq!(count, round, "restart count after kill #{round}");
            last_pid = pid;
            let st = status::pod_status(&snap(&rt, &p), None, std::time::SystemTime::now());
            let cs = &st.container_statuses.unwrap()[0];
            assert_eq!(cs.restart_count, round as i32);
            let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert_eq!((last.exit_code, last.signal), (137, Some(9)));
        }
        // The back-off shows while the container waits (second and later restarts).
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(last_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let reason = wait_for("CrashLoopBackOff", Duration::from_secs(10), || {
            let st = status::pod_status(&snap(&rt, &p), None, std::time::SystemTime::now());
            st.container_statuses.unwrap()[0]
                .state
                .as_ref()?
                .waiting
                .as_ref()?
                .reason
                .clone()
        })
        .await;
        assert_eq!(reason, "CrashLoopBackOff");
        rt.delete(&uid_of(&p), Duration::from_secs(2))
            .await
            .unwrap();
    });
}

#[test]
fn restart_policy_never_and_exit_codes_set_the_phase() {
    let env = env();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let mut ok = pod(
            "job-ok",
            vec![container("main", &["/bin/sh", "-c", "echo done"])],
        );
        ok.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        let mut bad = pod(
            "job-bad",
            vec![container("main", &["/bin/sh", "-c", "exit 3"])],
        );
        bad.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
        let nocmd = pod(
            "no-command",
            vec![Container {
                name: "nginx".into(),
                image: Some("nginx:1.27".into()),
                ..Default::default()
            }],
        );
        let mut who = pod(
            "whoami",
            vec![container(
                "main",
                &["/bin/sh", "-c", "echo $(id -u):$(id -g)"],
            )],
        );
        let spec = who.spec.as_mut().unwrap();
        spec.restart_policy = Some("Never".into());
        spec.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
            run_as_user: Some(65534),
            run_as_group: Some(65533),
            ..Default::default()
        });
        for p in [&ok, &bad, &nocmd, &who] {
            rt.apply(p.clone()).unwrap();
        }
        wait_for("whoami Succeeded", Duration::from_secs(20), || {
            (status::pod_status(&snap(&rt, &who), None, std::time::SystemTime::now())
                .phase
                .as_deref()
                == Some("Succeeded"))
            .then_some(())
        })
        .await;
        assert_eq!(
            log_text(&rt.log_file("default", "whoami", "main", false).unwrap()),
            "65534:65533\n",
            "runAsUser/runAsGroup apply"
        );
        rt.delete(&uid_of(&who), Duration::from_secs(1))
            .await
            .unwrap();
        let phase = |p: &Pod| {
            status::pod_status(&snap(&rt, p), None, std::time::SystemTime::now())
                .phase
                .unwrap()
        };
        wait_for("job-ok Succeeded", Duration::from_secs(20), || {
            (phase(&ok) == "Succeeded").then_some(())
        })
        .await;
        wait_for("job-bad restarted twice", Duration::from_secs(20), || {
            (snap(&rt, &bad).record.containers["main"].restart_count >= 2).then_some(())
        })
        .await;
        assert_eq!(
            phase(&bad),
            "Running",
            "OnFailure keeps restarting a failing container"
        );
        // A finished pod gives back its sandbox and IP but still reports the IP.
        wait_for("job-ok sandbox released", Duration::from_secs(10), || {
            snap(&rt, &ok).record.finished.clone()
        })
        .await;
        assert!(snap(&rt, &ok).record.sandbox.is_none());
        assert_eq!(
            env.ipam_ips().len(),
            2,
            "bad and no-command still hold IPs: {:?}",
            env.ipam_ips()
        );
        let st = status::pod_status(&snap(&rt, &ok), None, std::time::SystemTime::now());
        assert!(st.pod_ip.is_some_and(|ip| ip.starts_with("10.244.1.")));
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        let st = status::pod_status(&snap(&rt, &nocmd), None, std::time::SystemTime::now());
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let w = st.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
        assert!(w.message.unwrap().contains("has no command"));
        assert_eq!(
            log_text(&rt.log_file("default", "job-ok", "main", false).unwrap()),
            "done\n"
        );
        for p in [&ok, &bad, &nocmd] {
            rt.delete(&uid_of(p), Duration::from_secs(2)).await.unwrap();
        }
    });
}

#[test]
fn probes_drive_readiness_and_liveness() {
    let env = env();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("ready.txt"), "ok").unwrap();
    std::fs::write(www.path().join("alive"), "").unwrap();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let mut c = web(www.path());
        let quick = |p: Probe| Probe {
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..p
        };
        c.readiness_probe = Some(quick(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready.txt".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        }));
        c.startup_probe = Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(30),
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            ..Default::default()
        });
        c.liveness_probe = Some(quick(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("test -f {}/alive", www.path().display()),
                ]),
            }),
            ..Default::default()
        }));
        let p = pod("probed", vec![c]);
        rt.apply(p.clone()).unwrap();
        running_ip(&rt, &p).await;
        wait_for("ready", Duration::from_secs(20), || {
            ready(&rt, &p).then_some(())
        })
        .await;
        std::fs::remove_file(www.path().join("ready.txt")).unwrap();
        wait_for(
            "not ready after readiness fails",
            Duration::from_secs(20),
            || (!ready(&rt, &p)).then_some(()),
        )
        .await;
        assert_eq!(
            snap(&rt, &p).record.containers["web"].restart_count,
            0,
            "readiness never restarts"
        );
        std::fs::write(www.path().join("ready.txt"), "ok").unwrap();
        wait_for("ready again", Duration::from_secs(20), || {
            ready(&rt, &p).then_some(())
        })
        .await;

        // Liveness failure kills and restarts the container.
        let pid = pid_of(&rt, &p, "web").unwrap();
        std::fs::remove_file(www.path().join("alive")).unwrap();
        wait_for("liveness restart", Duration::from_secs(30), || {
            (snap(&rt, &p).record.containers["web"].restart_count >= 1).then_some(())
        })
        .await;
        std::fs::write(www.path().join("alive"), "").unwrap();
        let new_pid = wait_for("restarted web", Duration::from_secs(20), || {
            pid_of(&rt, &p, "web")
        })
        .await;
        assert_ne!(pid, new_pid);
        wait_for("ready after restart", Duration::from_secs(20), || {
            ready(&rt, &p).then_some(())
        })
        .await;
        rt.delete(&uid_of(&p), Duration::from_secs(2))
            .await
            .unwrap();
    });
}

#[test]
fn delete_removes_processes_ipam_namespaces_and_state() {
    let env = env();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        // A container that ignores SIGTERM: SIGKILL after the grace period ends it.
        let c = container(
            "stubborn",
            &[
                "/bin/sh",
                "-c",
                "trap '' TERM; echo trapped; sleep 600 & wait; sleep 600",
            ],
        );
        let p = pod("doomed", vec![c]);
        rt.apply(p.clone()).unwrap();
        running_ip(&rt, &p).await;
        let s = snap(&rt, &p);
        let sb = s.record.sandbox.clone().unwrap();
        let netns = sb.netns.clone().unwrap();
        let proc = s.record.containers["stubborn"]
            .running
            .as_ref()
            .unwrap()
            .proc;
        let cgroup = env
            .cfg
            .cgroup_root
            .as_ref()
            .unwrap()
            .join(format!("pod-{}", uid_of(&p)));
        assert!(cgroup.join("ctr-stubborn").is_dir());
        assert_eq!(env.ipam_ips().len(), 1);
        let ino = skein_netns::NetNs::open(&netns).unwrap().inode().unwrap();

        let log = s.record.containers["stubborn"]
            .running
            .as_ref()
            .unwrap()
            .log
            .clone();
        wait_for("SIGTERM trap installed", Duration::from_secs(10), || {
            log_text(&log).contains("trapped").then_some(())
        })
        .await;
        // The operator removes the CNI config: DEL still works from the cached config.
        for e in std::fs::read_dir(&env.cfg.cni_conf_dir).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
        let started = Instant::now();
        rt.delete(&uid_of(&p), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "grace period honoured"
        );
        assert!(rt.snapshot(&uid_of(&p)).is_none());
        assert!(!sb.pause.alive(), "pause process gone");
        assert!(!proc.alive(), "container process gone");
        assert!(
            skein_netns::pids_in(ino).is_empty(),
            "no process left in the pod netns"
        );
        assert!(!netns.exists(), "netns mount removed");
        assert!(!cgroup.exists(), "pod cgroup removed");
        assert!(
            env.ipam_ips().is_empty(),
            "IPAM files released: {:?}",
            env.ipam_ips()
        );
        assert!(!env.cfg.state_dir.join("pods").join(uid_of(&p)).exists());
        let left: Vec<_> = std::fs::read_dir(env.cfg.state_dir.join("cni/results"))
            .unwrap()
            .flatten()
            .collect();
        assert!(left.is_empty(), "cni cache emptied: {left:?}");
        // Deleting again is fine.
        rt.delete(&uid_of(&p), Duration::from_secs(1))
            .await
            .unwrap();
    });
}

#[test]
fn agent_restart_readopts_pods_and_rebuilds_broken_sandboxes() {
    let env = env();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("marker.txt"), "still-here").unwrap();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let keep = pod("keep", vec![web(www.path())]);
        let broken = pod("broken", vec![container("main", &["/bin/sleep", "600"])]);
        rt.apply(keep.clone()).unwrap();
        rt.apply(broken.clone()).unwrap();
        let keep_ip = running_ip(&rt, &keep).await;
        let broken_ip = running_ip(&rt, &broken).await;
        let keep_pid = wait_for("web pid", Duration::from_secs(10), || {
            pid_of(&rt, &keep, "web")
        })
        .await;
        let keep_sb = snap(&rt, &keep).record.sandbox.unwrap();
        let keep_pause = keep_sb.pause;
        let keep_netns = keep_sb.netns.unwrap();
        wait_for("web server answers", Duration::from_secs(20), || {
            http_get_in(&keep_netns, SocketAddr::new(keep_ip, 8080), "/marker.txt").ok()
        })
        .await;
        let broken_sb = snap(&rt, &broken).record.sandbox.unwrap();

        // The agent goes away; its pods stay.
        rt.detach_all().await;
        drop(rt);
        assert!(keep_pause.alive());
        // Meanwhile one sandbox dies.
        broken_sb.pause.signal(nix::sys::signal::Signal::SIGKILL);
        wait_for("broken pause gone", Duration::from_secs(5), || {
            (!broken_sb.pause.alive()).then_some(())
        })
        .await;

        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let s = snap(&rt, &keep);
        assert_eq!(
            s.record.sandbox.as_ref().unwrap().pause,
            keep_pause,
            "same sandbox"
        );
        assert_eq!(
            s.record.sandbox.as_ref().unwrap().ips,
            vec![keep_ip],
            "same IP"
        );
        assert_eq!(
            pid_of(&rt, &keep, "web"),
            Some(keep_pid),
            "same container process"
        );
        let netns = s.record.sandbox.unwrap().netns.unwrap();
        let body = http_get_in(&netns, SocketAddr::new(keep_ip, 8080), "/marker.txt").unwrap();
        assert!(body.contains("still-here"));
        // The broken pod's old attachment was garbage-collected and the pod rebuilt.
        let stale = env
            .cfg
            .state_dir
            .join(format!("cni/results/{NET}-{}-eth0", broken_sb.id));
        assert!(!stale.exists(), "stale attachment {stale:?} collected");
        wait_for(
            "broken pod gets a new sandbox",
            Duration::from_secs(20),
            || {
                snap(&rt, &broken)
                    .record
                    .sandbox
                    .filter(|sb| sb.id != broken_sb.id)
            },
        )
        .await;
        let new_ip = running_ip(&rt, &broken).await;
        assert!(!env.ipam_ips().contains(&broken_ip.to_string()) || new_ip == broken_ip);
        assert_eq!(env.ipam_ips().len(), 2, "{:?}", env.ipam_ips());

        // An adopted container (not the agent's child) is still watched and restarted.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(keep_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_for(
            "adopted container restarted",
            Duration::from_secs(20),
            || pid_of(&rt, &keep, "web").filter(|p| *p != keep_pid),
        )
        .await;
        assert_eq!(snap(&rt, &keep).record.containers["web"].restart_count, 1);

        for p in [&keep, &broken] {
            rt.delete(&uid_of(p), Duration::from_secs(2)).await.unwrap();
        }
        assert!(env.ipam_ips().is_empty());
    });
}

#[test]
fn host_network_pod_skips_cni() {
    let env = env();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let mut p = pod("hostnet", vec![container("main", &["/bin/sleep", "600"])]);
        p.spec.as_mut().unwrap().host_network = Some(true);
        rt.apply(p.clone()).unwrap();
        let ip = running_ip(&rt, &p).await;
        assert_eq!(
            ip.to_string(),
            "198.51.100.11",
            "hostNetwork pod IP is the node IP"
        );
        let pid = wait_for("pid", Duration::from_secs(10), || pid_of(&rt, &p, "main")).await;
        let node_ino = skein_netns::NetNs::current().unwrap().inode().unwrap();
        let pod_ino = skein_netns::NetNs::open(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .inode()
            .unwrap();
        assert_eq!(node_ino, pod_ino, "container shares the node's netns");
        assert!(env.ipam_ips().is_empty(), "no IP allocated");
        assert!(snap(&rt, &p).record.sandbox.unwrap().netns.is_none());
        rt.delete(&uid_of(&p), Duration::from_secs(2))
            .await
            .unwrap();
    });
}

async fn http_get_async(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn log_endpoint_serves_current_and_previous_container_logs() {
    let env = env();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let script = "echo line1; echo line2; echo line3; sleep 600";
        let p = pod(
            "talker",
            vec![container("main", &["/bin/sh", "-c", script])],
        );
        rt.apply(p.clone()).unwrap();
        running_ip(&rt, &p).await;
        let listener = tokio::net::TcpListener::bind("198.51.100.11:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let router = skein_node_agent::logs::router(rt.clone());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let url = "/containerLogs/default/talker/main";
        let resp = wait_for_async(|| http_get_async(addr, url), |r| r.contains("line3")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("line1\nline2\nline3\n"), "{resp}");
        let tail = http_get_async(addr, &format!("{url}?tailLines=1")).await;
        assert!(tail.ends_with("\r\n\r\nline3\n"), "{tail}");
        let missing = http_get_async(addr, "/containerLogs/default/talker/nope").await;
        assert!(
            missing.starts_with("HTTP/1.1 404") && missing.contains("\"nope\""),
            "{missing}"
        );
        let prev = http_get_async(addr, &format!("{url}?previous=true")).await;
        assert!(
            prev.starts_with("HTTP/1.1 404"),
            "no previous instance yet: {prev}"
        );
        // follow=true streams what a running instance writes and ends when it stops.
        let mut ticker = pod(
            "ticker",
            vec![container(
                "main",
                &[
                    "/bin/sh",
                    "-c",
                    "for i in 1 2 3 4 5; do echo tick$i; sleep 0.3; done",
                ],
            )],
        );
        ticker.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        rt.apply(ticker.clone()).unwrap();
        wait_for("ticker running", Duration::from_secs(20), || {
            pid_of(&rt, &ticker, "main")
        })
        .await;
        let followed = tokio::time::timeout(
            Duration::from_secs(20),
            http_get_async(addr, "/containerLogs/default/ticker/main?follow=true"),
        )
        .await
        .expect("follow ends when the container stops");
        assert!(followed.starts_with("HTTP/1.1 200"), "{followed}");
        for i in 1..=5 {
            assert!(followed.contains(&format!("tick{i}")), "{followed}");
        }
        rt.delete(&uid_of(&ticker), Duration::from_secs(2))
            .await
            .unwrap();
        server.abort();
        rt.delete(&uid_of(&p), Duration::from_secs(2))
            .await
            .unwrap();
    });
}

async fn wait_for_async<F, Fut>(mut get: F, ok: impl Fn(&str) -> bool) -> String
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get().await;
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out; last response: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let o = order.display().to_string();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let st = |p: &Pod| status::pod_status(&snap(&rt, p), None, std::time::SystemTime::now());
        let cond = |p: &Pod, ty: &str| {
            st(p)
                .conditions
                .unwrap()
                .into_iter()
                .find(|c| c.type_ == ty)
                .unwrap()
                .status
        };

        let mut good = pod(
            "with-init",
            vec![container(
                "app",
                &["/bin/sh", "-c", &format!("cat {o}; exec sleep 600")],
            )],
        );
        good.spec.as_mut().unwrap().init_containers = Some(vec![
            container(
                "first",
                &["/bin/sh", "-c", &format!("sleep 0.3; echo first > {o}")],
            ),
            container("second", &["/bin/sh", "-c", &format!("echo second >> {o}")]),
        ]);
        let mut fails = pod("init-fails", vec![container("app", &["/bin/sleep", "600"])]);
        fails.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        fails.spec.as_mut().unwrap().init_containers =
            Some(vec![container("broken", &["/bin/sh", "-c", "exit 1"])]);
        let mut retries = pod(
            "init-retries",
            vec![container("app", &["/bin/sleep", "600"])],
        );
        retries.spec.as_mut().unwrap().init_containers =
            Some(vec![container("broken", &["/bin/sh", "-c", "exit 2"])]);
        for p in [&good, &fails, &retries] {
            rt.apply(p.clone()).unwrap();
        }

        running_ip(&rt, &good).await;
        let log = wait_for("app started", Duration::from_secs(20), || {
            snap(&rt, &good)
                .record
                .containers
                .get("app")?
                .running
                .as_ref()
                .map(|r| r.log.clone())
        })
        .await;
        wait_for(
            "app printed the init output",
            Duration::from_secs(10),
            || (!log_text(&log).is_empty()).then_some(()),
        )
        .await;
        assert_eq!(
            log_text(&log),
            "first\nsecond\n",
            "init containers ran in order, before the app"
        );
        assert_eq!(cond(&good, "Initialized"), "True");
        let inits = st(&good).init_container_statuses.unwrap();
        assert_eq!(inits.len(), 2);
        for s in &inits {
            let t = s.state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        }

        wait_for("init-fails Failed", Duration::from_secs(20), || {
            (st(&fails).phase.as_deref() == Some("Failed")).then_some(())
        })
        .await;
        assert!(
            snap(&rt, &fails)
                .record
                .containers
                .get("app")
                .is_none_or(|c| c.running.is_none() && c.terminated.is_none())
        );

        wait_for(
            "failing init container retried",
            Duration::from_secs(20),
            || (snap(&rt, &retries).record.containers["broken"].restart_count >= 2).then_some(()),
        )
        .await;
        assert_eq!(st(&retries).phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&retries, "Initialized"), "False");
        assert!(
            snap(&rt, &retries)
                .record
                .containers
                .get("app")
                .is_none_or(|c| c.running.is_none())
        );
        let app = st(&retries).container_statuses.unwrap().remove(0);
        assert_eq!(
            app.state.unwrap().waiting.unwrap().reason.as_deref(),
            Some("PodInitializing")
        );

        for p in [&good, &fails, &retries] {
            rt.delete(&uid_of(p), Duration::from_secs(1)).await.unwrap();
        }
        assert!(env.ipam_ips().is_empty());
    });
}

#[test]
fn host_port_reaches_the_pod_through_portmap() {
    let env = env_with(true);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("marker.txt"), "via-hostport").unwrap();
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let mut c = web(www.path());
        c.ports.as_mut().unwrap()[0].host_port = Some(18080);
        let p = pod("hostport", vec![c]);
        rt.apply(p.clone()).unwrap();
        running_ip(&rt, &p).await;
        let netns = snap(&rt, &p).record.sandbox.unwrap().netns.unwrap();
        let ip = snap(&rt, &p).record.sandbox.unwrap().ips[0];
        wait_for("web server answers", Duration::from_secs(20), || {
            http_get_in(&netns, SocketAddr::new(ip, 8080), "/marker.txt").ok()
        })
        .await;
        // From the outside host, node1's address and the hostPort reach the pod.
        let outside = env.bed.outside().netns.path().to_owned();
        let body = http_get_in(
            &outside,
            "198.51.100.11:18080".parse().unwrap(),
            "/marker.txt",
        )
        .unwrap();
        assert!(body.contains("via-hostport"), "{body}");
        rt.delete(&uid_of(&p), Duration::from_secs(2))
            .await
            .unwrap();
        let gone = http_get_in(
            &outside,
            "198.51.100.11:18080".parse().unwrap(),
            "/marker.txt",
        );
        assert!(gone.is_err(), "hostPort closed after delete: {gone:?}");
    });
}

/// The text of container `c`'s current log.
fn current_log(rt: &PodRuntime, p: &Pod, c: &str) -> String {
    snap(rt, p).record.containers[c]
        .running
        .as_ref()
        .map(|r| log_text(&r.log))
        .unwrap_or_default()
}

#[test]
fn pods_get_their_own_resolv_conf_and_hosts_kept_across_agent_restarts() {
    let mut env = env();
    let node = tempfile::tempdir().unwrap();
    let node_resolv = node.path().join("resolv.conf");
    std::fs::write(&node_resolv, "nameserver 192.0.2.53\nsearch node.example\n").unwrap();
    env.cfg.dns = skein_node_agent::pod_dns::DnsSettings {
        cluster_dns: vec!["10.96.0.10".parse().unwrap()],
        cluster_domain: "cluster.local".into(),
        resolv_conf: node_resolv,
        ..Default::default()
    };
    let machine_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let machine_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    // What a container sees, through a real resolver client (getent) for its hostname.
    let script = "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; \
                  getent hosts \"$(hostname)\"; echo end; exec sleep 600";
    env.run(async {
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        let mut cluster = pod("cf", vec![container("main", &["/bin/sh", "-c", script])]);
        cluster.metadata.namespace = Some("shop".into());
        let mut default = pod("df", vec![container("main", &["/bin/sh", "-c", script])]);
        default.spec.as_mut().unwrap().dns_policy = Some("Default".into());
        let mut hostnet = pod("hn", vec![container("main", &["/bin/sh", "-c", script])]);
        let spec = hostnet.spec.as_mut().unwrap();
        spec.host_network = Some(true);
        spec.dns_policy = Some("ClusterFirstWithHostNet".into());
        rt.apply(cluster.clone()).unwrap();
        rt.apply(default.clone()).unwrap();
        rt.apply(hostnet.clone()).unwrap();
        let ip = running_ip(&rt, &cluster).await;
        let log = wait_for("the ClusterFirst pod's files", Duration::from_secs(20), || {
            let t = current_log(&rt, &cluster, "main");
            t.contains("end\n").then_some(t)
        })
        .await;
        let want_resolv = "nameserver 10.96.0.10\n\
                           search shop.svc.cluster.local svc.cluster.local cluster.local node.example\n\
                           options ndots:5\n---\n";
        assert!(log.starts_with(want_resolv), "{log}");
        assert!(log.contains("# Kubernetes-managed hosts file.\n"), "{log}");
        assert!(log.contains(&format!("\n{ip}\tcf\n")), "{log}");
        let resolved = log.split("---\n").nth(2).unwrap_or("");
        assert!(
            resolved.starts_with(&format!("{ip}")) && resolved.contains("cf"),
            "getent hosts cf in the pod: {resolved:?}"
        );
        let dlog = wait_for("the Default pod's files", Duration::from_secs(20), || {
            let t = current_log(&rt, &default, "main");
            t.contains("end\n").then_some(t)
        })
        .await;
        assert!(
            dlog.starts_with("nameserver 192.0.2.53\nsearch node.example\n---\n"),
            "{dlog}"
        );
        // A hostNetwork pod: the cluster resolver when it asks for it, the node's hosts.
        let hlog = wait_for("the hostNetwork pod's files", Duration::from_secs(20), || {
            let t = current_log(&rt, &hostnet, "main");
            t.contains("end\n").then_some(t)
        })
        .await;
        assert!(
            hlog.starts_with("nameserver 10.96.0.10\nsearch default.svc.cluster.local "),
            "{hlog}"
        );
        assert!(
            hlog.contains(&format!(
                "---\n# Kubernetes-managed hosts file (host network).\n{machine_hosts}"
            )),
            "{hlog}"
        );
        // The node's own files are untouched.
        assert_eq!(
            std::fs::read_to_string("/etc/resolv.conf").unwrap(),
            machine_resolv
        );
        assert_eq!(std::fs::read_to_string("/etc/hosts").unwrap(), machine_hosts);

        // A restarted agent re-adopts the pod unchanged; a container it starts later joins
        // the same mount namespace and sees the same files.
        let sb = snap(&rt, &cluster).record.sandbox.unwrap();
        let pid = pid_of(&rt, &cluster, "main").unwrap();
        rt.detach_all().await;
        drop(rt);
        let rt = PodRuntime::start(env.cfg.clone()).await.unwrap();
        assert_eq!(snap(&rt, &cluster).record.sandbox.unwrap().pause, sb.pause);
        assert_eq!(pid_of(&rt, &cluster, "main"), Some(pid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let again = wait_for("restarted container's files", Duration::from_secs(20), || {
            let p = pid_of(&rt, &cluster, "main").filter(|p| *p != pid)?;
            let t = current_log(&rt, &cluster, "main");
            (t.contains("end\n")).then_some((p, t))
        })
        .await;
        assert!(again.1.starts_with(want_resolv), "{}", again.1);
        let mnt = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
        assert_eq!(mnt(again.0), mnt(sb.pause.pid), "container in the pod's mount ns");
        assert_ne!(mnt(again.0), mnt(std::process::id() as i32));
        for p in [&cluster, &default, &hostnet] {
            rt.delete(&uid_of(p), Duration::from_secs(2)).await.unwrap();
        }
    });
}
