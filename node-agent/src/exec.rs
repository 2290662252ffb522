//! `kubectl exec`'s node end, served beside the logs on `--log-port` as the kubelet's:
//!
//! ```text
//! GET /exec/<namespace>/<pod>/<container>?command=..&command=..&stdin=1&stdout=1&stderr=1&tty=0
//!     Upgrade: websocket, Sec-WebSocket-Protocol: v5.channel.k8s.io (or v4)
//!   → 101, then the command runs as a container process is started (probe_run::spawn_in_pod:
//!     the sandbox's namespaces, the container's cgroup, env, workingDir, user) and its
//!     stdio is streamed in channel frames (exec_protocol); the last frame is the status
//!   403 a peer not in --exec-allowed-from (default: the API server's address)
//!   404 unknown pod or container; 400 not running, bad query, not a WebSocket (SPDY)
//! ```
//!
//! The command is killed (its whole session) when the client goes away. A tty is not
//! supported: the session answers with a Failure status saying so.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::exec_access::ExecAccess;
use crate::exec_protocol::{self as proto, ExecRequest, Inbound};
use crate::probe_run::{ProbeTarget, spawn_in_pod};
use crate::procfs::ProcRef;
use crate::runtime::{ExecTargetError, PodRuntime};

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body + "\n",
    )
        .into_response()
}

/// Whether the client offers a subprotocol served here.
fn offers_supported_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| proto::PROTOCOLS.contains(&p.trim()))
}

/// The `/exec/{namespace}/{pod}/{container}` handler.
pub async fn exec(
    State(rt): State<PodRuntime>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let (mut parts, _) = req.into_parts();
    let access = parts
        .extensions
        .get::<Arc<ExecAccess>>()
        .cloned()
        .unwrap_or_default();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match peer {
        Some(ip) if access.allows(ip) => {}
        _ => {
            let who = peer.map_or("an unknown peer".to_owned(), |ip| ip.to_string());
            return text(
                StatusCode::FORBIDDEN,
                format!("exec from {who} is refused: --exec-allowed-from is {access}"),
            );
        }
    }
    let headers = parts.headers.clone();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "skein-agent serves exec over WebSocket only (subprotocols {}); SPDY is not supported: {e}",
                    proto::PROTOCOLS.join(", ")
                ),
            );
        }
    };
    if !offers_supported_protocol(&headers) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported WebSocket subprotocol offered (skein-agent serves {})",
                proto::PROTOCOLS.join(", ")
            ),
        );
    }
    let req = match ExecRequest::from_pairs(&pairs) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let target = match rt.exec_target(&namespace, &pod, &container) {
        Ok(t) => t,
        Err(ExecTargetError::NotFound(m)) => return text(StatusCode::NOT_FOUND, m),
        Err(ExecTargetError::NotRunning(m)) => return text(StatusCode::BAD_REQUEST, m),
    };
    tracing::info!(pod = %target.pod, %container, command = ?req.command, "exec");
    ws.protocols(proto::PROTOCOLS)
        .on_upgrade(move |socket| session(socket, req, target))
}

/// Runs the command and streams it; the final status goes out on channel 3, then the
/// connection closes.
async fn session(socket: WebSocket, req: ExecRequest, target: ProbeTarget) {
    let (mut sink, mut inbound) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::Binary(m.into())).await.is_err() {
                return;
            }
        }
        let close = CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    if let Some(status) = run(&req, &target, &tx, &mut inbound).await {
        let _ = tx
            .send(proto::frame(proto::ERROR, status.to_string().as_bytes()))
            .await;
    }
    drop(tx);
    let _ = writer.await;
}

type ClientStream = futures::stream::SplitStream<WebSocket>;

/// What the client sent, as far as the session cares.
enum FromClient {
    Stdin(Vec<u8>),
    CloseStdin,
    Gone,
    Nothing,
}

async fn next_from_client(inbound: &mut ClientStream) -> FromClient {
    match inbound.next().await {
        Some(Ok(Message::Binary(b))) => match proto::parse_inbound(&b) {
            Inbound::Stdin(d) => FromClient::Stdin(d.to_vec()),
            Inbound::Close(proto::STDIN) => FromClient::CloseStdin,
            _ => FromClient::Nothing,
        },
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => FromClient::Gone,
        Some(Ok(_)) => FromClient::Nothing,
    }
}

/// The command's final status, or None when the client went away (the command is
/// killed then).
async fn run(
    req: &ExecRequest,
    target: &ProbeTarget,
    tx: &mpsc::Sender<Vec<u8>>,
    inbound: &mut ClientStream,
) -> Option<Value> {
    if req.tty {
        return Some(proto::failure_status(
            "skein-agent does not support a tty for exec: run kubectl exec without -t",
        ));
    }
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let mut child = match spawn_in_pod(
        &req.command,
        target,
        [pipe(req.stdin), pipe(req.stdout), pipe(req.stderr)],
        true,
    ) {
        Ok(c) => c,
        Err(e) => return Some(proto::failure_status(&e)),
    };
    let group = child.id().and_then(|p| ProcRef::of(p as i32));
    let kill = || {
        if let Some(g) = &group {
            g.signal_group(Signal::SIGKILL);
        }
    };
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(o, proto::STDOUT, tx.clone())));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(e, proto::STDERR, tx.clone())));
    }
    let mut stdin = child.stdin.take();
    let exit = loop {
        tokio::select! {
            st = child.wait() => break st,
            m = next_from_client(inbound) => match m {
                FromClient::Stdin(d) => {
                    if let Some(s) = stdin.as_mut()
                        && s.write_all(&d).await.is_err()
                    {
                        stdin = None;
                    }
                }
                FromClient::CloseStdin => stdin = None,
                FromClient::Gone => {
                    kill();
                    let _ = child.wait().await;
                    return None;
                }
                FromClient::Nothing => {}
            },
        }
    };
    drop(stdin);
    // The output the command wrote before it exited (and what its children still
    // write to the same pipes, as a container runtime's exec does).
    let drained = futures::future::join_all(pumps);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            _ = &mut drained => break,
            m = next_from_client(inbound) => if let FromClient::Gone = m {
                kill();
                return None;
            },
        }
    }
    Some(match exit {
        Ok(st) => proto::exit_status(&req.command, proto::exit_code(st)),
        Err(e) => proto::failure_status(&format!("wait for {:?}: {e}", req.command)),
    })
}

async fn pump(mut r: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(proto::frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_offers_are_read_from_every_header() {
        let mut h = HeaderMap::new();
        assert!(!offers_supported_protocol(&h));
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "channel.k8s.io, base64.channel.k8s.io".parse().unwrap(),
        );
        assert!(!offers_supported_protocol(&h));
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "v4.channel.k8s.io".parse().unwrap(),
        );
        assert!(offers_supported_protocol(&h));
    }
}
