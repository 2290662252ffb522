//! The test bed itself: the ground every other end-to-end test stands on.

use std::process::Command;
use std::time::Duration;

use skein_e2e::require_root;
use skein_testbed::snapshot::RootSnapshot;
use skein_testbed::{Config, EtcdMode, TestBed};

#[test]
fn node_to_node_tcp_both_directions() {
    require_root();
    let bed = TestBed::start(Config {
        nodes: 3,
        etcd: EtcdMode::None,
        ..Config::default()
    })
    .unwrap();
    let mut port = 7100;
    for from in &bed.nodes {
        for to in &bed.nodes {
            if from.name != to.name {
                port += 1;
                TestBed::tcp_check(from, to, port)
                    .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.name, to.name));
            }
        }
        TestBed::tcp_check(bed.outside(), from, 7200).unwrap();
        TestBed::tcp_check(from, bed.outside(), 7201).unwrap();
    }
}

#[test]
fn hosts_are_isolated_from_the_root_namespace() {
    require_root();
    let bed = TestBed::start(Config {
        nodes: 1,
        etcd: EtcdMode::None,
        outside: false,
        ..Config::default()
    })
    .unwrap();
    // The node has exactly lo and eth0, with the fabric address.
    let links = bed.node(1).run("ip", &["-o", "link", "show"]).unwrap();
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap())
        .collect();
    assert_eq!(names, ["lo", "eth0"]);
    let addrs = bed
        .node(1)
        .run("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addrs.contains("198.51.100.11/24"), "{addrs}");
    // And no default route: nothing in a node can reach beyond the fabric.
    let routes = bed.node(1).run("ip", &["-4", "route"]).unwrap();
    assert!(!routes.contains("default"), "{routes}");
}

#[test]
fn etcd_put_get_from_every_node() {
    require_root();
    let bed = TestBed::start(Config::default()).unwrap();
    let etcd = bed.etcd();
    for n in &bed.nodes {
        let key = format!("/test/{}", n.name);
        skein_testbed::run_checked(etcd.etcdctl(n).unwrap().args([
            "put",
            &key,
            &n.addr.to_string(),
        ]))
        .unwrap();
    }
    // Every node reads what every node wrote.
    for reader in &bed.nodes {
        for writer in &bed.nodes {
            let key = format!("/test/{}", writer.name);
            let got = skein_testbed::run_checked(etcd.etcdctl(reader).unwrap().args([
                "get",
                &key,
                "--print-value-only",
            ]))
            .unwrap();
            assert_eq!(
                got.trim(),
                writer.addr.to_string(),
                "{} reading {key}",
                reader.name
            );
        }
    }
    // etcd listens only on its namespace address: the fabric address answers, and no
    // node can reach a port 2379 on its own loopback.
    let err = bed
        .node(1)
        .connect_tcp("127.0.0.1:2379".parse().unwrap(), Duration::from_secs(1));
    assert!(
        err.is_err(),
        "etcd must not be reachable on a node's loopback"
    );
}

#[test]
fn etcd_cluster_stays_writable_when_a_member_is_killed() {
    require_root();
    let mut bed = TestBed::start(Config {
        nodes: 1,
        etcd: EtcdMode::Cluster3,
        outside: false,
        ..Config::default()
    })
    .unwrap();
    assert_eq!(bed.etcd().members.len(), 3);
    let members = skein_testbed::run_checked(
        bed.etcd()
            .etcdctl(bed.node(1))
            .unwrap()
            .args(["member", "list"]),
    )
    .unwrap();
    assert_eq!(members.lines().count(), 3, "{members}");
    skein_testbed::run_checked(
        bed.etcd()
            .etcdctl(bed.node(1))
            .unwrap()
            .args(["put", "/before", "1"]),
    )
    .unwrap();

    let killed_pid = bed.etcd().members[0].daemon.as_ref().unwrap().pid();
    bed.etcd_mut().kill_member(0);
    assert!(
        !std::path::Path::new(&format!("/proc/{killed_pid}")).exists(),
        "member 1 still running"
    );

    // endpoints() now lists only the two survivors; a write needs their quorum.
    let node = bed.node(1);
    let etcd = bed.etcd();
    let mut last_err = None;
    for _ in 0..50 {
        match skein_testbed::run_checked(etcd.etcdctl(node).unwrap().args(["put", "/after", "2"])) {
            Ok(_) => {
                last_err = None;
                break;
            }
            Err(e) => {
                last_err = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert!(
        last_err.is_none(),
        "write after killing a member failed: {last_err:?}"
    );
    for key in ["/before", "/after"] {
        let got = skein_testbed::run_checked(etcd.etcdctl(node).unwrap().args([
            "get",
            key,
            "--print-value-only",
        ]))
        .unwrap();
        assert!(!got.trim().is_empty(), "{key} lost");
    }
}

#[test]
fn teardown_leaves_the_root_namespace_as_it_was() {
    require_root();
    // No other bed may exist meanwhile, or its namespaces would show in the snapshots.
    let _lock = skein_testbed::exclusive_lock().unwrap();
    let before = RootSnapshot::take().unwrap();

    let (prefix, pids, state_dir, cgroup) = {
        let mut bed = TestBed::start(Config::default()).unwrap();
        // A daemon the bed knows about, and a stray process it was never told about: both
        // must be gone after teardown.
        let mut sleep = bed.node(1).command("sleep").unwrap();
        sleep.arg("1000");
        let log = bed.node(1).dirs.log_dir.join("sleep.log");
        let daemon = bed.node(1).spawn("sleep", sleep, &log).unwrap();
        bed.adopt(daemon);
        let mut stray = bed.node(2).command("sleep").unwrap();
        let stray = stray.arg("1001").spawn().unwrap();
        let mut pids = bed.started_pids();
        pids.push(stray.id() as i32);
        assert!(pids.len() >= 3, "etcd, the daemon and the stray: {pids:?}");
        for p in &pids {
            assert!(std::path::Path::new(&format!("/proc/{p}")).exists());
        }
        let during = RootSnapshot::take().unwrap();
        assert!(
            during.netns.iter().any(|n| n.starts_with(bed.prefix())),
            "the bed's namespaces are listed"
        );
        assert_eq!(
            during.links, before.links,
            "a test bed must add no link to the root namespace"
        );
        assert_eq!(
            during.routes, before.routes,
            "a test bed must add no route to the root namespace"
        );
        // Keep the stray child's handle alive past teardown so we can reap it after.
        std::mem::forget(stray);
        (
            bed.prefix().to_owned(),
            pids,
            bed.state_dir().to_owned(),
            bed.node(1).dirs.cgroup.clone(),
        )
    };

    let after = RootSnapshot::take().unwrap();
    assert_eq!(
        before.diff(&after),
        Vec::<String>::new(),
        "root namespace changed by the bed {prefix}"
    );
    for p in pids {
        assert!(!running(p), "process {p} outlived the teardown");
    }
    assert!(!state_dir.exists(), "{} left behind", state_dir.display());
    if let Some(cg) = cgroup {
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }
}

#[test]
fn teardown_runs_after_a_panic() {
    require_root();
    let result = std::thread::spawn(|| {
        let bed = TestBed::start(Config {
            nodes: 2,
            etcd: EtcdMode::None,
            ..Config::default()
        })
        .unwrap();
        let prefix = bed.prefix().to_owned();
        std::fs::write(std::env::temp_dir().join(format!("{prefix}.name")), &prefix).unwrap();
        panic!("a test step failed in bed {prefix}");
    })
    .join();
    let msg = result.expect_err("the thread panicked");
    let msg = msg.downcast_ref::<String>().unwrap();
    let prefix = msg.rsplit(' ').next().unwrap().to_owned();
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{prefix}.name")));
    let left: Vec<String> = skein_netns::list_named()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left after a panic: {left:?}");
    assert!(
        !std::path::Path::new(skein_testbed::STATE_ROOT)
            .join(&prefix)
            .exists()
    );
}

#[test]
fn a_failed_step_removes_what_was_made() {
    require_root();
    // A bed whose prefix is taken fails, and must not touch the existing bed.
    let bed = TestBed::start(Config {
        nodes: 1,
        etcd: EtcdMode::None,
        outside: false,
        ..Config::default()
    })
    .unwrap();
    let clash = TestBed::start(Config {
        prefix: Some(bed.prefix().to_owned()),
        nodes: 1,
        ..Config::default()
    });
    let err = clash.expect_err("a second bed with the same prefix");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(
        bed.state_dir().exists(),
        "the failed start removed the existing bed's state"
    );
    TestBed::tcp_check(bed.node(1), bed.node(1), 7300).unwrap();

    // A step failing half-way leaves no namespace behind: the name is fine for a
    // namespace but too long for the veth that follows.
    let ours = || -> Vec<String> {
        let all = skein_netns::list_named().unwrap();
        all.into_iter()
            .filter(|n| n.starts_with(bed.prefix()))
            .collect()
    };
    let before = ours();
    let err = bed
        .add_host(
            "a-host-name-too-long-for-a-link",
            "198.51.100.99".parse().unwrap(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("a-host-name-too-long-for-a-link"),
        "{err}"
    );
    assert_eq!(ours(), before);
    let dup = bed
        .add_host("node1", "198.51.100.99".parse().unwrap())
        .unwrap_err();
    assert!(dup.to_string().contains("already exists"), "{dup}");
    assert_eq!(ours(), before);

    // Bad input names the problem.
    let err = TestBed::start(Config {
        prefix: Some("Bad_Name".into()),
        ..Config::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("Bad_Name"), "{err}");
}

#[test]
fn skeinctl_down_removes_a_bed_left_by_a_crashed_process() {
    require_root();
    let prefix = skein_testbed::unique_prefix();
    let bed = TestBed::start(Config {
        prefix: Some(prefix.clone()),
        nodes: 2,
        ..Config::default()
    })
    .unwrap();
    let etcd_pid = bed.started_pids()[0];
    // Simulate a crash: the process dies without running the bed's teardown.
    std::mem::forget(bed);
    let status = Command::new(skein_e2e::binary("skeinctl"))
        .args(["down", "--name", &prefix])
        .status();
    let status = status.unwrap();
    assert!(status.success());
    assert!(!running(etcd_pid), "etcd of the crashed bed still running");
    let left: Vec<String> = skein_netns::list_named()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn running(pid: i32) -> bool {
    // Reap it if it is our child, so a zombie does not count as running.
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
