//! etcd unreachable for 20 s: a TCP stream between pods on two nodes keeps flowing, and
//! once etcd is back the daemons resync (a node that joins afterwards is routed).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn pod_stream_keeps_flowing_through_a_20s_etcd_outage() {
    let mut bed = bed(3, false);
    put_config(&bed, VXLAN_CONFIG);
    let d1 = start_flanneld(&bed, 1, &[]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    let p1 = wire_pods(&bed, 1, &env1, 1);
    let p2 = wire_pods(&bed, 2, &env2, 1);
    tcp_eventually(&p1[0].host, &p2[0].host, 24000, Duration::from_secs(20));

    let addr = SocketAddr::from((p2[0].host.addr, 24001));
    let listener = p2[0].host.listen_tcp(addr).expect("listen");
    let mut client = p1[0]
        .host
        .connect_tcp(addr, Duration::from_secs(3))
        .expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let reader = std::thread::spawn(move || -> (usize, Duration) {
        let mut total = 0;
        let mut buf = [0u8; 4096];
        let mut last = Instant::now();
        let mut max_gap = Duration::ZERO;
        loop {
            match server.read(&mut buf) {
                Ok(0) => return (total, max_gap),
                Ok(n) => {
                    total += n;
                    max_gap = max_gap.max(last.elapsed());
                    last = Instant::now();
                }
                Err(_) => return (total, max_gap),
            }
        }
    });

    // Freeze etcd: it neither answers nor closes connections, like a partition.
    let etcd_pid = {
        let m = &bed.etcd().members[0];
        let d = m.daemon.as_ref().expect("etcd running");
        d.signal(Signal::SIGSTOP);
        d.pid()
    };
    let started = Instant::now();
    let mut sent = 0usize;
    let chunk = [7u8; 1024];
    while started.elapsed() < Duration::from_secs(20) {
        client
            .write_all(&chunk)
            .expect("stream write during the outage");
        sent += chunk.len();
        std::thread::sleep(Duration::from_millis(50));
    }
    bed.etcd().members[0]
        .daemon
        .as_ref()
        .expect("etcd")
        .signal(Signal::SIGCONT);
    let _ = etcd_pid;
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let (received, max_gap) = reader.join().expect("reader");
    assert_eq!(received, sent, "bytes lost during the outage");
    assert!(
        max_gap < Duration::from_secs(3),
        "the stream stalled for {max_gap:?} during the outage"
    );
    assert!(
        d1.log_tail(200).contains("reconnecting") || d2.log_tail(200).contains("reconnecting"),
        "the daemons never noticed the outage:\n{}",
        d1.log_tail(40)
    );

    // etcd is back: a new node's lease reaches the old nodes, so they resynced.
    bed.etcd_mut()
        .wait_healthy(Duration::from_secs(20))
        .expect("etcd healthy again");
    let d3 = start_flanneld(&bed, 3, &[]);
    let env3 = wait_subnet_file(bed.node(3), &d3);
    for i in [1, 2] {
        let node = bed.node(i);
        wait_for(
            "the route to node3 after the outage",
            Duration::from_secs(30),
            || (!route_to(node, &env3.cidr()).is_empty()).then_some(()),
        );
    }
    let p3 = wire_pods(&bed, 3, &env3, 1);
    tcp_eventually(&p1[0].host, &p3[0].host, 24002, Duration::from_secs(20));
    for d in [d1, d2, d3] {
        bed.adopt(d);
    }
}

#[test]
fn a_lease_that_expires_during_an_outage_is_taken_again_with_the_same_subnet() {
    let mut bed = bed(2, false);
    put_config(&bed, VXLAN_CONFIG);
    let d1 = start_flanneld(&bed, 1, &["--subnet-lease-ttl", "4"]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let _ = wait_subnet_file(bed.node(2), &d2);
    let etcd = bed.etcd().members[0].daemon.as_ref().expect("etcd");
    etcd.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(10));
    etcd.signal(Signal::SIGCONT);
    bed.etcd_mut()
        .wait_healthy(Duration::from_secs(20))
        .expect("etcd healthy again");
    wait_for(
        "node1 to take its lease again",
        Duration::from_secs(30),
        || d1.log_tail(100).contains("lease taken again").then_some(()),
    );
    let value = etcdctl(
        &bed,
        &bed.node(2).host,
        &["get", &env1.key(), "--print-value-only"],
    );
    assert!(
        value.contains(&format!("\"PublicIP\":\"{}\"", bed.node(1).addr)),
        "{value}"
    );
    assert_eq!(wait_subnet_file(bed.node(1), &d1), env1);
    wait_for("node2's route to node1", Duration::from_secs(10), || {
        (!route_to(bed.node(2), &env1.cidr()).is_empty()).then_some(())
    });
    for d in [d1, d2] {
        bed.adopt(d);
    }
}

#[test]
fn losing_one_member_of_a_three_member_etcd_changes_nothing() {
    require_root();
    let mut bed = skein_testbed::TestBed::start(skein_testbed::Config {
        nodes: 3,
        outside: false,
        etcd: skein_testbed::EtcdMode::Cluster3,
        cgroups: false,
        ..skein_testbed::Config::default()
    })
    .expect("start test bed");
    put_config(&bed, VXLAN_CONFIG);
    // Every flanneld gets all three endpoints.
    let d1 = start_flanneld(&bed, 1, &[]);
    let d2 = start_flanneld(&bed, 2, &[]);
    let env1 = wait_subnet_file(bed.node(1), &d1);
    let env2 = wait_subnet_file(bed.node(2), &d2);
    let p1 = wire_pods(&bed, 1, &env1, 1);
    let p2 = wire_pods(&bed, 2, &env2, 1);
    tcp_eventually(&p1[0].host, &p2[0].host, 27000, Duration::from_secs(20));

    bed.etcd_mut().kill_member(0);
    bed.etcd_mut()
        .wait_healthy(Duration::from_secs(30))
        .expect("the two remaining members serve");
    // A node joining now (it also lists the dead member first) is routed everywhere.
    let d3 = start_flanneld(&bed, 3, &[]);
    let env3 = wait_subnet_file(bed.node(3), &d3);
    for i in [1, 2] {
        let node = bed.node(i);
        wait_for("the route to node3", Duration::from_secs(30), || {
            (!route_to(node, &env3.cidr()).is_empty()).then_some(())
        });
    }
    let p3 = wire_pods(&bed, 3, &env3, 1);
    tcp_eventually(&p3[0].host, &p1[0].host, 27001, Duration::from_secs(20));
    tcp_eventually(&p2[0].host, &p3[0].host, 27002, Duration::from_secs(20));
    for d in [d1, d2, d3] {
        bed.adopt(d);
    }
}
