//! `skeinctl relay`: lets `kubectl` in the user's shell reach the API server inside the
//! cluster's control namespace without adding anything to the root network namespace.
//!
//! ```text
//! kubectl ─► 127.0.0.1:<port> (root netns, listener) ─► per client: a thread that
//!   entered <name>-control connects to 198.51.100.3:6443 ─► bytes copied both ways
//! ```
//!
//! The relay also holds the test-bed lock shared for as long as the cluster lives, so a
//! test that snapshots the root namespace under the exclusive lock waits for it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skein_netns::NetNs;

/// Runs the relay until killed: listens on `listen` (in this process's namespace),
/// writes the bound port to `port_file`, and connects every client to `target` from
/// inside the namespace at `netns`.
pub fn run(
    netns: &Path,
    target: SocketAddr,
    listen: SocketAddr,
    port_file: &Path,
) -> anyhow::Result<()> {
    // `skeinctl up` holds the lock while it waits for the relay: join it, do not queue.
    let _lock = skein_testbed::join_shared_lock().context("take the test-bed lock")?;
    let ns =
        Arc::new(NetNs::open(netns).with_context(|| format!("open netns {}", netns.display()))?);
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    let port = listener.local_addr().context("listener address")?.port();
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, port_file).with_context(|| format!("write {}", port_file.display()))?;
    eprintln!("relay: 127.0.0.1:{port} -> {target} in {}", netns.display());
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("relay: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let ns = Arc::clone(&ns);
        std::thread::spawn(move || {
            if let Err(e) = serve(&ns, client, target) {
                eprintln!("relay: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(ns: &NetNs, client: TcpStream, target: SocketAddr) -> anyhow::Result<()> {
    let upstream = ns
        .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))?
        .with_context(|| format!("connect to {target} in {}", ns.path().display()))?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || pipe(c2, u2));
    pipe(upstream, client);
    let _ = up.join();
    Ok(())
}

/// Copies `from` to `to` until EOF or an error, then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
