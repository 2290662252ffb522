//! Teardown by name: everything a bed (or a local cluster) made is named or placed under
//! its prefix, so it can be removed completely even after the process that made it died.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use skein_netns::{NETNS_RUN_DIR, NetNs};

use crate::{STATE_ROOT, cgroup2_mount};

/// What a sweep did and what it could not do.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Things removed (namespaces, dirs, pins, processes), for the user.
    pub removed: Vec<String>,
    /// Failures; the sweep goes on past each one.
    pub errors: Vec<String>,
}

/// Removes everything under `prefix`: stops every process inside its namespaces and
/// cgroups, unmounts and deletes its namespaces, removes its BPF pins, cgroups and
/// state dir. Keeps going past failures and reports all of them.
pub fn sweep(prefix: &str) -> SweepReport {
    let mut report = SweepReport::default();
    let state_dir = Path::new(STATE_ROOT).join(prefix);
    let named: Vec<PathBuf> = skein_netns::list_named()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(|n| Path::new(NETNS_RUN_DIR).join(n))
        .collect();
    let mounts_under_state = mounts_under(&state_dir);

    // 1. Processes in our namespaces (named ones and pod namespaces mounted under the
    //    state dir). Processes that live only in our cgroups (a cluster's relay, which
    //    holds the bed lock for it) go after the namespaces, so that a test waiting for
    //    the exclusive lock never sees a half-removed bed.
    let mut inodes = Vec::new();
    for path in named.iter().chain(mounts_under_state.iter()) {
        if let Ok(ns) = NetNs::open(path)
            && let Ok(ino) = ns.inode()
        {
            inodes.push(ino);
        }
    }
    let cgroup_base = cgroup2_mount().ok().map(|m| m.join("skein").join(prefix));
    let mut pids: Vec<i32> = inodes
        .iter()
        .flat_map(|ino| skein_netns::pids_in(*ino))
        .collect();
    let me = std::process::id() as i32;
    pids.retain(|p| *p != me);
    pids.sort_unstable();
    pids.dedup();
    stop_pids(&pids, &mut report);

    // 2. Mounts under the state dir (pod namespaces, ...), deepest first, then namespaces.
    for m in mounts_under_state.iter().rev() {
        if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            report.errors.push(format!("unmount {}: {e}", m.display()));
        }
    }
    for path in &named {
        match NetNs::delete_at(path) {
            Ok(()) => report.removed.push(format!("netns {}", path.display())),
            Err(e) => report.errors.push(e.to_string()),
        }
    }

    // 3. BPF pins.
    let bpf_root = Path::new("/sys/fs/bpf/skein");
    if let Ok(dir) = std::fs::read_dir(bpf_root) {
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                remove_tree(&e.path(), &mut report);
            }
        }
        let _ = std::fs::remove_dir(bpf_root); // only when empty: other beds may use it
    }

    // 4. What is left in our cgroups, then the cgroups themselves.
    if let Some(base) = &cgroup_base {
        let mut rest = cgroup_pids(base);
        rest.retain(|p| *p != me);
        rest.sort_unstable();
        rest.dedup();
        stop_pids(&rest, &mut report);
    }
    if let Some(base) = cgroup_base.as_ref().filter(|b| b.exists()) {
        remove_cgroup_tree(base, &mut report);
        if let Some(parent) = base.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }

    // 5. The state dir.
    if state_dir.exists() {
        match std::fs::remove_dir_all(&state_dir) {
            Ok(()) => report
                .removed
                .push(format!("state {}", state_dir.display())),
            Err(e) => report
                .errors
                .push(format!("remove {}: {e}", state_dir.display())),
        }
    }
    report
}

/// Sweeps every bed and cluster with state under `/run/skein`, and namespaces that carry
/// a test bed's generated prefix but lost their state dir.
pub fn sweep_all() -> SweepReport {
    let mut prefixes: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    for n in skein_netns::list_named().unwrap_or_default() {
        if let Some((p, _)) = n.split_once('-')
            && p.len() == 9
            && p.starts_with("skt")
        {
            prefixes.push(p.to_owned());
        }
    }
    prefixes.sort();
    prefixes.dedup();
    let mut all = SweepReport::default();
    for p in prefixes {
        let r = sweep(&p);
        all.removed.extend(r.removed);
        all.errors.extend(r.errors);
    }
    all
}

fn stop_pids(pids: &[i32], report: &mut SweepReport) {
    if pids.is_empty() {
        return;
    }
    for p in pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let alive = |p: &i32| is_alive(*p);
    while pids.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pids.iter().filter(|p| alive(p)) {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    report.removed.push(format!("processes {pids:?}"));
}

/// Running (a zombie counts as gone: it only waits for its parent to reap it).
fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Mount points at or under `dir`, in mount-table order (parents before children).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|mp| PathBuf::from(mp.replace("\\040", " ")))
        .filter(|mp| mp.starts_with(dir))
        .collect()
}

fn cgroup_pids(base: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![base.to_owned()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    pids
}

fn remove_cgroup_tree(dir: &Path, report: &mut SweepReport) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path(), report);
            }
        }
    }
    // cgroup dirs hold only virtual files: rmdir removes them.
    for attempt in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            // EBUSY while the kernel finishes moving out exiting tasks.
            Err(e) if attempt < 49 && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("remove cgroup {}: {e}", dir.display()));
                return;
            }
        }
    }
}

fn remove_tree(path: &Path, report: &mut SweepReport) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => report.removed.push(format!("pins {}", path.display())),
        Err(e) => report
            .errors
            .push(format!("remove {}: {e}", path.display())),
    }
}
