//! Watches: `kubectl get -w --output-watch-events`, and a kube-rs watcher that survives an
//! etcd compaction (410 → relist) without missing an object.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use support::Api;

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cm(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{watched: \"yes\"}}\ndata:\n  v: \"{value}\"\n"
    )
}

#[test]
fn kubectl_get_watch_prints_added_modified_deleted() {
    let api = Api::start();
    api.kubectl_in(&["apply", "-f", "-"], &cm("before", "1"));
    let node = api.bed.node(1);
    let out_path = api.bed.state_dir().join("watch.out");
    let mut cmd = node.command("kubectl").unwrap();
    cmd.env("KUBECONFIG", &api.kubeconfig)
        .env("HOME", api.bed.state_dir())
        .args([
            "get",
            "configmaps",
            "-l",
            "watched=yes",
            "-w",
            "--output-watch-events",
        ]);
    let mut watcher = node.spawn("kubectl-watch", cmd, &out_path).unwrap();
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    wait_until("the initial ADDED line", 20, || read().contains("before"));
    api.kubectl_in(&["apply", "-f", "-"], &cm("during", "1"));
    api.kubectl_in(&["apply", "-f", "-"], &cm("during", "2"));
    api.kubectl(&["delete", "configmap", "during"]);
    // Not matching the selector: never printed.
    api.kubectl_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hidden\n",
    );
    wait_until("the DELETED line", 20, || {
        read()
            .lines()
            .any(|l| l.starts_with("DELETED") && l.contains("during"))
    });
    watcher.stop();
    let text = read();
    let events: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .filter(|(e, _)| *e != "EVENT")
        .collect();
    assert_eq!(
        events,
        [
            ("ADDED", "before"),
            ("ADDED", "during"),
            ("MODIFIED", "during"),
            ("DELETED", "during")
        ],
        "{text}"
    );
    assert!(
        text.lines().next().unwrap().contains("DATA"),
        "the Table header comes first: {text}"
    );
}

#[derive(Default)]
struct Seen {
    /// The watcher's view: names it believes exist.
    names: BTreeSet<String>,
    pending: BTreeSet<String>,
}

#[test]
fn kube_rs_watcher_relists_after_compaction_without_missing_objects() {
    let api = Api::start();
    let url = api.url.clone();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let inits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let node = api.bed.node(1);
    api.kubectl_in(&["apply", "-f", "-"], &cm("first", "1"));
    let (seen2, inits2, stop2) = (seen.clone(), inits.clone(), stop.clone());
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            node.in_netns(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let config = kube::Config::new(url.parse().unwrap());
                    let client = kube::Client::try_from(config).unwrap();
                    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
                    let cfg = watcher::Config::default().labels("watched=yes").timeout(3);
                    let mut stream = watcher::watcher(cms, cfg).default_backoff().boxed();
                    while !stop2.load(Ordering::SeqCst) {
                        let next =
                            tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                        let Ok(Some(ev)) = next else { continue };
                        let Ok(ev) = ev else { continue };
                        let mut s = seen2.lock().unwrap();
                        match ev {
                            Event::Init => {
                                inits2.fetch_add(1, Ordering::SeqCst);
                                s.pending.clear();
                            }
                            Event::InitApply(o) => {
                                s.pending.insert(o.metadata.name.unwrap());
                            }
                            Event::InitDone => s.names = std::mem::take(&mut s.pending),
                            Event::Apply(o) => {
                                s.names.insert(o.metadata.name.unwrap());
                            }
                            Event::Delete(o) => {
                                s.names.remove(&o.metadata.name.unwrap());
                            }
                        }
                    }
                });
            })
            .unwrap();
        });
        // Stops the watcher thread also when an assertion below fails.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop_guard = StopOnDrop(stop.clone());
        let names = || seen.lock().unwrap().names.clone();
        wait_until("the watcher's initial list", 20, || {
            names().contains("first")
        });
        api.kubectl_in(&["apply", "-f", "-"], &cm("live", "1"));
        wait_until("a live ADDED", 20, || names().contains("live"));
        assert_eq!(inits.load(Ordering::SeqCst), 1);

        // The server goes away; through a second server, objects change and etcd is
        // compacted past the watcher's resourceVersion.
        api.stop_server();
        let mut other = api.spawn_server(support::PORT + 1);
        let other_url = format!("http://{}:{}", api.bed.node(1).addr, support::PORT + 1);
        let out = api.kubectl_output(
            &["--server", &other_url, "apply", "-f", "-"],
            Some(&cm("while-away", "1")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = api.kubectl_output(
            &["--server", &other_url, "delete", "configmap", "first"],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let etcd = api.bed.etcd();
        let status = skein_testbed::run_checked(etcd.etcdctl(api.bed.node(1)).unwrap().args([
            "get",
            "/registry/",
            "--prefix",
            "--keys-only",
            "-w",
            "json",
        ]))
        .unwrap();
        let rev = serde_json::from_str::<serde_json::Value>(&status).unwrap()["header"]["revision"]
            .as_i64()
            .unwrap();
        skein_testbed::run_checked(
            etcd.etcdctl(api.bed.node(1))
                .unwrap()
                .args(["compact", &rev.to_string()]),
        )
        .unwrap();
        api.start_server();
        // The watcher's resume point is compacted: 410, relist, and the view is exact.
        let want = BTreeSet::from(["live".to_owned(), "while-away".to_owned()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while names() != want {
            if Instant::now() > deadline {
                panic!(
                    "the watcher did not converge after the compaction: it sees {:?}\nserver log:\n{}",
                    names(),
                    api.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(inits.load(Ordering::SeqCst) >= 2, "the watcher relisted");
        // And it keeps following live changes afterwards.
        api.kubectl_in(&["apply", "-f", "-"], &cm("after", "1"));
        wait_until("a live ADDED after the relist", 20, || {
            names().contains("after")
        });
        other.stop();
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap();
    });
    let log = std::fs::read_to_string(
        api.bed
            .node(1)
            .dirs
            .log_dir
            .join(format!("apiserver-{}.log", support::PORT)),
    )
    .unwrap();
    assert!(
        log.contains("watch from a compacted or evicted revision: 410"),
        "the restarted server answered the stale watch with 410"
    );
}
