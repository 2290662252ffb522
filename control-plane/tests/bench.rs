//! The API server benchmark (run by scripts/bench-apiserver.sh, never in `make test`):
//! create/get/list latency with N objects stored (default 10,000) and watch fan-out (one
//! change seen by 100 watchers), each beside the same operation done directly on etcd
//! in the same run; and the server's memory with N pods stored. `tls_benchmark`: GET
//! latency over HTTPS beside plain HTTP from the same server build and etcd.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use support::Api;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn row(what: &str, ours: &mut [Duration], base: &mut [Duration]) {
    println!(
        "{what:<28} {:>10.3} {:>10.3} | {:>10.3} {:>10.3}",
        pct(ours, 0.5).as_secs_f64() * 1e3,
        pct(ours, 0.99).as_secs_f64() * 1e3,
        pct(base, 0.5).as_secs_f64() * 1e3,
        pct(base, 0.99).as_secs_f64() * 1e3
    );
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1.0", "ports": [{"containerPort": 8080}]}]},
    }))
    .unwrap()
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "benchmark: run with scripts/bench-apiserver.sh"]
fn apiserver_benchmark() {
    let n: usize = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let watchers: usize = std::env::var("BENCH_WATCHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let api = Api::start();
    let pid = api.server.lock().unwrap().as_ref().unwrap().pid();
    let rss_empty = rss_kib(pid);
    let url = api.url.clone();
    let etcd_url = api.bed.etcd().members[0].client_url();
    let node = api.bed.node(1);
    println!("skein-apiserver benchmark: {n} objects, {watchers} watchers; milliseconds");
    println!(
        "{:<28} {:>10} {:>10} | {:>10} {:>10}",
        "operation", "api p50", "api p99", "etcd p50", "etcd p99"
    );
    node.in_netns(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
            let mut etcd = etcd_client::Client::connect([etcd_url.as_str()], None)
                .await
                .unwrap();
            // Create: N pods through the API, N same-sized values straight into etcd.
            let pp = PostParams::default();
            let (mut ours, mut base) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let chunks = 16;
            for start in (0..n).step_by(chunks) {
                let futs = (start..(start + chunks).min(n)).map(|i| {
                    let pods = pods.clone();
                    let pp = pp.clone();
                    async move {
                        let t = Instant::now();
                        pods.create(&pp, &pod(i)).await.unwrap();
                        t.elapsed()
                    }
                });
                ours.extend(futures::future::join_all(futs).await);
            }
            let value = serde_json::to_vec(&pod(0)).unwrap();
            for start in (0..n).step_by(chunks) {
                let futs = (start..(start + chunks).min(n)).map(|i| {
                    let mut kv = etcd.kv_client();
                    let value = value.clone();
                    async move {
                        let t = Instant::now();
                        kv.put(format!("/bench/pods/default/bench-{i}"), value, None)
                            .await
                            .unwrap();
                        t.elapsed()
                    }
                });
                base.extend(futures::future::join_all(futs).await);
            }
            row("create (16 in flight)", &mut ours, &mut base);
            // Get: 1000 single reads.
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for k in 0..1000 {
                let i = (k * 7919) % n;
                let t = Instant::now();
                pods.get(&format!("bench-{i}")).await.unwrap();
                ours.push(t.elapsed());
                let t = Instant::now();
                etcd.get(format!("/bench/pods/default/bench-{i}"), None)
                    .await
                    .unwrap();
                base.push(t.elapsed());
            }
            row("get", &mut ours, &mut base);
            // List: the whole collection, and one label-selected tenth.
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let t = Instant::now();
                let l = pods.list(&ListParams::default()).await.unwrap();
                ours.push(t.elapsed());
                assert_eq!(l.items.len(), n);
                let t = Instant::now();
                let r = etcd
                    .kv_client()
                    .max_decoding_message_size(256 << 20)
                    .get(
                        "/bench/pods/",
                        Some(etcd_client::GetOptions::new().with_prefix()),
                    )
                    .await
                    .unwrap();
                base.push(t.elapsed());
                assert_eq!(r.kvs().len(), n);
            }
            row(&format!("list all {n}"), &mut ours, &mut base.clone());
            let mut sel = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let l = pods
                    .list(&ListParams::default().labels("shard=3"))
                    .await
                    .unwrap();
                sel.push(t.elapsed());
                assert_eq!(l.items.len(), (0..n).filter(|i| i % 10 == 3).count());
            }
            row("list labelSelector (1/10)", &mut sel, &mut base);
            // Watch fan-out: one change, seen by every watcher.
            let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "default");
            let rv = cms
                .list(&ListParams::default())
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap();
            let start = Arc::new(std::sync::Mutex::new(None::<Instant>));
            let mut tasks = Vec::new();
            for _ in 0..watchers {
                let mut stream = cms
                    .watch(&WatchParams::default().timeout(60), &rv)
                    .await
                    .unwrap()
                    .boxed();
                let start = start.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(ev) = stream.next().await {
                        if let Ok(WatchEvent::Added(_)) = ev {
                            let t0 = start.lock().unwrap().unwrap();
                            return t0.elapsed();
                        }
                    }
                    Duration::MAX
                }));
            }
            let mut ewatch = Vec::new();
            for _ in 0..watchers {
                let mut w = etcd.watch_client();
                let s = w.watch("/bench/probe", None).await.unwrap();
                ewatch.push(s);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let probe: ConfigMap =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "probe"}})).unwrap();
            *start.lock().unwrap() = Some(Instant::now());
            cms.create(&pp, &probe).await.unwrap();
            let mut ours = Vec::new();
            for t in tasks {
                ours.push(t.await.unwrap());
            }
            let t0 = Instant::now();
            let mut put = etcd.kv_client();
            let etasks: Vec<_> = ewatch
                .into_iter()
                .map(|mut s| {
                    tokio::spawn(async move {
                        loop {
                            match s.message().await {
                                Ok(Some(r)) if !r.events().is_empty() => return t0.elapsed(),
                                Ok(Some(_)) => continue,
                                _ => return Duration::MAX,
                            }
                        }
                    })
                })
                .collect();
            put.put("/bench/probe", "x", None).await.unwrap();
            let mut base = Vec::new();
            for t in etasks {
                base.push(t.await.unwrap());
            }
            row(
                &format!("watch fan-out to {watchers}"),
                &mut ours,
                &mut base,
            );
        });
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(pid);
    println!(
        "memory (VmRSS of skein-apiserver): {} MiB empty, {} MiB with {n} pods stored",
        rss_empty / 1024,
        rss / 1024
    );
    let etcd_pid = api.bed.etcd().members[0].daemon.as_ref().unwrap().pid();
    println!(
        "baseline: etcd itself holds {} MiB with {n} pods + {n} raw values",
        rss_kib(etcd_pid) / 1024
    );
}

/// The latency of one GET of the bench ConfigMap through each client in turn (the same
/// client again and again: a kept-alive connection; fresh clients, each with its own
/// connection pool, built before timing: a new connection, so a TLS handshake, each).
async fn gets(clients: impl Iterator<Item = kube::Client>) -> Vec<Duration> {
    let mut out = Vec::new();
    for c in clients {
        let cms: kube::Api<ConfigMap> = kube::Api::namespaced(c, "default");
        let t = Instant::now();
        cms.get("bench-tls").await.unwrap();
        out.push(t.elapsed());
    }
    out
}

#[test]
#[ignore = "benchmark: run with scripts/bench-apiserver.sh"]
fn tls_benchmark() {
    const PLAIN: u16 = 6444;
    let n: usize = std::env::var("BENCH_TLS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // kubectl asks for a password when an https user has no credentials: use a token.
    let tokens = std::env::temp_dir().join(format!("skein-bench-tokens-{}", std::process::id()));
    std::fs::write(&tokens, "bench-token,bench,1\n").unwrap();
    let api = Api::start_tls(
        &["--token-auth-file", tokens.to_str().unwrap()],
        Some("bench-token"),
    );
    std::fs::remove_file(&tokens).unwrap();
    let _plain = api.spawn_server_with(PLAIN, &[], false);
    api.kubectl(&["create", "configmap", "bench-tls", "--from-literal=k=v"]);
    let kubeconfig = api.kubeconfig.clone();
    let plain_url = format!("http://{}:{PLAIN}", api.bed.node(1).addr);
    println!("skein-apiserver TLS benchmark: {n} GETs each; milliseconds");
    println!(
        "{:<28} {:>10} {:>10} | {:>10} {:>10}",
        "operation", "https p50", "https p99", "http p50", "http p99"
    );
    api.bed
        .node(1)
        .in_netns(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let tls_config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                let plain_config = kube::Config::new(plain_url.parse().unwrap());
                let tls = kube::Client::try_from(tls_config.clone()).unwrap();
                let plain = kube::Client::try_from(plain_config.clone()).unwrap();
                let same = |c: &kube::Client, k: usize| std::iter::repeat_n(c.clone(), k);
                // Warm both paths up.
                gets(same(&tls, 20)).await;
                gets(same(&plain, 20)).await;
                let mut a = gets(same(&tls, n)).await;
                let mut b = gets(same(&plain, n)).await;
                row("GET, kept-alive connection", &mut a, &mut b);
                let fresh = |c: &kube::Config, k: usize| -> Vec<kube::Client> {
                    (0..k)
                        .map(|_| kube::Client::try_from(c.clone()).unwrap())
                        .collect()
                };
                let m = n / 5;
                let mut a = gets(fresh(&tls_config, m).into_iter()).await;
                let mut b = gets(fresh(&plain_config, m).into_iter()).await;
                row("GET, new connection each", &mut a, &mut b);
            })
        })
        .unwrap();
}
