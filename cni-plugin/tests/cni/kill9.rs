//! A plugin killed with SIGKILL in the middle of ADD, followed by the runtime's DEL,
//! leaves nothing behind; a retried ADD then works.

use std::io::Write;
use std::time::Instant;

use crate::driver::*;

#[test]
fn kill_9_mid_add_then_del_leaves_nothing() {
    let bed = bed(1, false);
    let node = bed.node(1);
    let conf = flannel_conf(node, "1.0.0");
    // How long a whole ADD takes here (the fastest of three: a busy machine makes some
    // slow), to spread the kills over it.
    let probe = Pod::new(&bed, "probe");
    let mut full = std::time::Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        cni(node, &probe.call("ADD"), &conf).ok();
        full = full.min(t.elapsed());
        cni(node, &probe.call("DEL"), &conf).ok();
    }

    let mut partial_seen = 0;
    // Bounded: at most ROUNDS kills, stopping early once a few landed mid-ADD.
    const ROUNDS: u32 = 40;
    for round in 0..ROUNDS {
        if partial_seen >= 4 {
            break;
        }
        let pod = Pod::new(&bed, &format!("k{round}"));
        let mut cmd = node.command(skein_cni()).unwrap();
        configure(&mut cmd, &pod.call("ADD"));
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        // Delays sweep 0..full, eight steps, again and again.
        std::thread::sleep(full * (round % 8) / 8);
        let _ = child.kill(); // SIGKILL; it may have finished already.
        let status = child.wait().unwrap();
        let files = ipam_files(node, "cbr0");
        let held = files.iter().any(|f| f.starts_with("10.244."));
        let veth = node_links(node).iter().any(|l| l.starts_with("veth"));
        if !status.success() && (held || veth) {
            partial_seen += 1;
        }
        // The runtime's reaction to a failed ADD: DEL.
        cni(node, &pod.call("DEL"), &conf).ok();
        assert_no_allocations(node, "cbr0");
        assert_no_veths(node);
        assert_eq!(pod.links(), vec!["lo"], "round {round}: pod interface left");
        // And the pod can be attached afresh.
        cni(node, &pod.call("ADD"), &conf).ok();
        cni(node, &pod.call("DEL"), &conf).ok();
        assert_no_veths(node);
    }
    eprintln!("{partial_seen} kills (at most {ROUNDS}) left partial state (full ADD {full:?})");
    assert!(
        partial_seen > 0,
        "no kill landed mid-ADD in {ROUNDS} rounds (full ADD takes {full:?}); the test proved nothing"
    );
}
