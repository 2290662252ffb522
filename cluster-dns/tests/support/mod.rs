//! Shared by the skein-dns integration tests: test beds, starting the binary inside a
//! node's namespace, and a DNS client (hickory-proto messages over std sockets) that runs
//! inside another namespace.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use skein_testbed::{Config, Daemon, EtcdMode, Host, TestBed};

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces); run it as root"
    );
}

pub fn bed(nodes: usize, etcd: EtcdMode) -> TestBed {
    require_root();
    TestBed::start(Config {
        prefix: None,
        nodes,
        outside: false,
        etcd,
        cgroups: false,
    })
    .expect("start test bed")
}

pub const DNS_BIN: &str = env!("CARGO_BIN_EXE_skein-dns");

pub fn write_objects(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write objects file");
    path
}

/// Starts skein-dns in `host`'s namespace on `host.addr:53`.
pub fn start_dns(host: &Host, log: &Path, args: &[&str]) -> Daemon {
    let mut cmd = host.command(DNS_BIN).expect("command in netns");
    cmd.args(["--listen", &format!("{}:53", host.addr)])
        .args(args)
        .env("RUST_LOG", "debug");
    host.spawn("skein-dns", cmd, log).expect("spawn skein-dns")
}

/// One query from inside `client`'s namespace, over UDP or TCP. Timeouts are generous
/// (2 s UDP, 5 s TCP: longer than the server's 2 s upstream timeout) for a loaded machine.
pub fn query(
    client: &Host,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    tcp: bool,
) -> std::io::Result<Message> {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    let bytes = msg.to_vec().expect("encode query");
    let reply = client
        .in_netns(move || -> std::io::Result<Vec<u8>> {
            if tcp {
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(&(bytes.len() as u16).to_be_bytes())?;
                s.write_all(&bytes)?;
                let mut len = [0u8; 2];
                s.read_exact(&mut len)?;
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut buf)?;
                Ok(buf)
            } else {
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                sock.send_to(&bytes, server)?;
                let mut buf = [0u8; 4096];
                let (n, _) = sock.recv_from(&mut buf)?;
                Ok(buf[..n].to_vec())
            }
        })
        .expect("enter client netns")?;
    let answer = Message::from_vec(&reply).map_err(std::io::Error::other)?;
    assert_eq!(
        answer.metadata.id, msg.metadata.id,
        "answer id matches the query"
    );
    Ok(answer)
}

pub fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0x1234);
    N.fetch_add(7919, Ordering::Relaxed)
}

/// Queries until the server answers (it is starting), at most 15 s.
pub fn wait_ready(client: &Host, server: SocketAddr, daemon: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if query(
            client,
            server,
            "web.default.svc.cluster.local.",
            RecordType::A,
            false,
        )
        .is_ok()
        {
            return;
        }
        assert!(
            daemon.is_running(),
            "skein-dns exited; log:\n{}",
            daemon.log_tail(30)
        );
        assert!(
            Instant::now() < deadline,
            "skein-dns did not answer on {server} within 15 s; log:\n{}",
            daemon.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn addrs(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// Queries until `pred` holds for the answer, at most `within`; panics with the last
/// answer and the server's log otherwise.
pub fn eventually(
    client: &Host,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    within: Duration,
    dns: &Daemon,
    pred: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + within;
    loop {
        let last = query(client, server, name, rtype, false);
        if let Ok(m) = &last
            && pred(m)
        {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} {rtype} never matched within {within:?}; last answer {last:?}; log:\n{}",
            dns.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CNAME targets in an answer.
pub fn cnames(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.to_ascii()),
            _ => None,
        })
        .collect()
}
