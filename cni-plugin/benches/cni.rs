//! Benchmark: skein-cni against the reference bridge + host-local plugins, measured in
//! the same run on the same test-bed node. Prints ADD/DEL p50/p99 over sequential pods
//! and the wall time of concurrent ADDs, side by side, and the p50 ADD ratio.
//!
//! Run with `scripts/bench-cni.sh` (or `cargo bench -p skein-cni --bench cni --profile dev`).
//! `SKEIN_CNI_BENCH_PODS` and `SKEIN_CNI_BENCH_CONCURRENT` change the counts (default 100
//! and 20); `SKEIN_CNI_BIN` measures another skein-cni binary (a release build).

#[path = "../tests/cni/driver.rs"]
#[allow(dead_code, reason = "shared with the integration tests")]
mod driver;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skein_testbed::Host;
use skein_testbed::stats::percentile;

use driver::{Call, Pod, answer, configure};

struct Subject {
    label: &'static str,
    bin: PathBuf,
    conf: Value,
}

fn spawn(node: &Host, bin: &Path, call: &Call<'_>, conf: &Value) -> Child {
    let mut cmd = node.command(bin).expect("command in node netns");
    configure(&mut cmd, call);
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

/// Runs one invocation; returns its wall time and the CPU time (user + system) of the
/// plugin and everything it ran (host-local, for the reference), which a busy machine
/// does not inflate the way it inflates wall time.
fn run(node: &Host, s: &Subject, call: &Call<'_>) -> (Duration, Duration) {
    use std::io::Read;
    let t = Instant::now();
    let mut child = spawn(node, &s.bin, call, &s.conf);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let (status, cpu) = rusage::wait_with_rusage(child);
    let took = t.elapsed();
    assert_eq!(status, 0, "{} {}: {stdout} {stderr}", s.label, call.command);
    (took, cpu)
}

/// The bench's only unsafe code: reaping a child with its resource usage.
mod rusage {
    use std::process::Child;
    use std::time::Duration;

    /// Reaps `child` with wait4(2): its exit code and the CPU time of it and its children.
    pub(crate) fn wait_with_rusage(child: Child) -> (i32, Duration) {
        let pid = child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        let mut ru: libc::rusage = zeroed_rusage();
        // SAFETY: wait4 writes only into the two locals passed by pointer, which live for the
        // call; `pid` is our own unreaped child (std's Child never waited for it).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
        std::mem::forget(child);
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        (code, tv(ru.ru_utime) + tv(ru.ru_stime))
    }

    fn zeroed_rusage() -> libc::rusage {
        // SAFETY: rusage is a plain C struct of integers, for which all-zero bytes are valid.
        unsafe { std::mem::zeroed() }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n: usize = std::env::var("SKEIN_CNI_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let c: usize = std::env::var("SKEIN_CNI_BENCH_CONCURRENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ours = std::env::var("SKEIN_CNI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| driver::skein_cni());

    let bed = driver::bed(1, false);
    let node = bed.node(1);
    let data = node.dirs.ipam_data_dir.clone();
    let subjects = [
        Subject {
            label: "reference bridge+host-local",
            bin: PathBuf::from("/usr/lib/cni/bridge"),
            conf: json!({
                "cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cniref",
                "isGateway": true, "isDefaultGateway": true, "mtu": 1450,
                "ipam": {"type": "host-local", "subnet": "10.245.0.0/20", "dataDir": data,
                         "routes": [{"dst": "10.245.0.0/16"}]},
            }),
        },
        Subject {
            label: "skein-cni",
            bin: ours.clone(),
            conf: driver::flannel_conf(node, "1.0.0"),
        },
    ];
    println!(
        "skein-cni benchmark: {n} sequential pods, {c} concurrent ADDs; skein-cni = {}",
        ours.display()
    );

    // Warm up: bridges exist, page cache is hot.
    for (i, s) in subjects.iter().enumerate() {
        let pod = Pod::new(&bed, &format!("w{i}"));
        run(node, s, &pod.call("ADD"));
        run(node, s, &pod.call("DEL"));
    }

    // Sequential: alternate the two so that drift on a shared machine hits both alike.
    let pods: Vec<[Pod; 2]> = (0..n)
        .map(|i| {
            [
                Pod::new(&bed, &format!("r{i}")),
                Pod::new(&bed, &format!("s{i}")),
            ]
        })
        .collect();
    let mut add = [Vec::new(), Vec::new()];
    let mut del = [Vec::new(), Vec::new()];
    let mut add_cpu = [Vec::new(), Vec::new()];
    for pair in &pods {
        for (k, s) in subjects.iter().enumerate() {
            let (wall, cpu) = run(node, s, &pair[k].call("ADD"));
            add[k].push(wall);
            add_cpu[k].push(cpu);
        }
    }
    for pair in &pods {
        for (k, s) in subjects.iter().enumerate() {
            del[k].push(run(node, s, &pair[k].call("DEL")).0);
        }
    }
    drop(pods);

    // Concurrent ADDs: wall time from the first spawn to the last exit.
    let mut wall = [Duration::ZERO; 2];
    for (k, s) in subjects.iter().enumerate() {
        let pods: Vec<Pod> = (0..c)
            .map(|i| Pod::new(&bed, &format!("c{k}x{i}")))
            .collect();
        let t = Instant::now();
        let children: Vec<Child> = pods
            .iter()
            .map(|p| spawn(node, &s.bin, &p.call("ADD"), &s.conf))
            .collect();
        for ch in children {
            let a = answer(ch.wait_with_output().unwrap());
            assert_eq!(
                a.status, 0,
                "{} concurrent ADD: {} {}",
                s.label, a.stdout, a.stderr
            );
        }
        wall[k] = t.elapsed();
        for p in &pods {
            run(node, s, &p.call("DEL"));
        }
    }

    for v in add
        .iter_mut()
        .chain(del.iter_mut())
        .chain(add_cpu.iter_mut())
    {
        v.sort();
    }
    println!();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine load average (1/5/15 min): {} (wall times grow with it; CPU times do not)",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<30} {:>28} {:>12} {:>16}",
        "", subjects[0].label, subjects[1].label, "reference/skein"
    );
    let row = |what: &str, a: Duration, b: Duration| {
        println!(
            "{what:<30} {:>28} {:>12} {:>16}",
            ms(a),
            ms(b),
            format!("x{:.2}", a.as_secs_f64() / b.as_secs_f64())
        );
    };
    row(
        "ADD p50",
        percentile(&add[0], 0.5),
        percentile(&add[1], 0.5),
    );
    row(
        "ADD p99",
        percentile(&add[0], 0.99),
        percentile(&add[1], 0.99),
    );
    row(
        "ADD CPU time p50",
        percentile(&add_cpu[0], 0.5),
        percentile(&add_cpu[1], 0.5),
    );
    row(
        "DEL p50",
        percentile(&del[0], 0.5),
        percentile(&del[1], 0.5),
    );
    row(
        "DEL p99",
        percentile(&del[0], 0.99),
        percentile(&del[1], 0.99),
    );
    row(&format!("{c} concurrent ADDs (wall)"), wall[0], wall[1]);
    let ratio = percentile(&add[1], 0.5).as_secs_f64() / percentile(&add[0], 0.5).as_secs_f64();
    println!();
    println!(
        "p50 ADD ratio skein-cni/reference = {ratio:.2} (goal <= 0.50: {})",
        if ratio <= 0.5 { "met" } else { "NOT met" }
    );
}
