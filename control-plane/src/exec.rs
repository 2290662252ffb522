//! `pods/<name>/exec` (`kubectl exec`): a WebSocket upgrade forwarded to the node agent
//! of the pod's node, then the two upgraded connections spliced both ways.
//!
//! ```text
//! kubectl ──GET .../pods/p/exec?command=..  Upgrade: websocket──> apiserver
//!   checks: pod exists, bound, not completed, container valid, WebSocket (not SPDY)
//! apiserver ──GET /exec/<ns>/<pod>/<container>?<same query>  (same key, subprotocols)──> agent
//!   agent 101 → apiserver answers 101 with the agent's accept/subprotocol headers,
//!               then bytes flow kubectl <-> agent untouched (copy_bidirectional)
//!   agent 4xx → the apiserver accepts the client's WebSocket itself and sends a Failure
//!               Status with the agent's message on channel 3 (an HTTP error would make
//!               kubectl fall back to SPDY and hide the reason)
//! ```

use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::logs::agent_address;
use crate::request::{Query, Target};

/// The subprotocols the node agent serves.
pub const PROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io";

/// The longest an agent may take to answer the upgrade.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The container exec runs in: the requested one (which must exist), else the one named
/// by the `kubectl.kubernetes.io/default-container` annotation, else the first.
pub fn choose_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let wanted = requested.or_else(|| {
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str()
    });
    match wanted {
        Some(c) if names.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => names
            .first()
            .map(|c| (*c).to_owned())
            .ok_or_else(|| ApiError::BadRequest(format!("pod {name} has no containers"))),
    }
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The upgrade request sent to the agent: the client's WebSocket key, version and
/// subprotocols, on the agent's path.
pub fn agent_request(host: &str, path_and_query: &str, headers: &HeaderMap) -> String {
    let mut req = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    );
    for h in [
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        for v in headers.get_all(&h) {
            if let Ok(v) = v.to_str() {
                req.push_str(&format!("{h}: {v}\r\n"));
            }
        }
    }
    req.push_str("\r\n");
    req
}

/// The status code and headers of an HTTP/1.1 response head (without the blank line).
pub fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    let mut parts = status.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((code, headers))
}

/// Proxies `kubectl exec` to the node agent of the pod's node.
pub async fn proxy(app: &App, t: &Target, parts: &mut Parts) -> ApiResult<Response> {
    let name = t.name.clone().unwrap_or_default();
    let namespace = t.namespace.clone().unwrap_or_default();
    let q = Query::parse(&parts.uri)?;
    let pod = app.get_obj(t.res, Some(&namespace), &name).await?.obj;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} is not scheduled to a node yet"
        )));
    }
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        return Err(ApiError::BadRequest(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let container = choose_container(&pod, q.get("container"))?;
    if !is_websocket(&parts.headers) {
        return Err(ApiError::BadRequest(format!(
            "skein-apiserver serves pods/exec over WebSocket only (subprotocols {PROTOCOLS}); SPDY is not supported (kubectl 1.30 or newer uses WebSocket; a SPDY request follows a failed WebSocket upgrade, see the apiserver log)"
        )));
    }
    if parts
        .extensions
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return Err(ApiError::BadRequest(
            "this connection cannot be upgraded (HTTP/1.1 required)".into(),
        ));
    }
    let (ip, port) = match agent_address(app, &node_name).await {
        Ok(a) => a,
        Err(e) => return refuse_in_band(parts, e.code().as_u16(), e.to_string()).await,
    };
    let path = format!(
        "/exec/{namespace}/{name}/{container}{}",
        parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    let agent = format!("node agent on {node_name} ({ip}:{port})");
    let answer = tokio::time::timeout(AGENT_TIMEOUT, async {
        let s = TcpStream::connect((ip.as_str(), port)).await?;
        let _ = s.set_nodelay(true);
        let mut s = BufReader::new(s);
        s.write_all(agent_request(&format!("{ip}:{port}"), &path, &parts.headers).as_bytes())
            .await?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await? == 0 || line == "\r\n" || head.len() > 16 * 1024 {
                break;
            }
            head.push_str(&line);
        }
        let bad = || std::io::Error::other("not an HTTP/1.1 response");
        let (code, headers) = parse_head(head.trim_end()).ok_or_else(bad)?;
        Ok::<_, std::io::Error>((code, headers, s))
    })
    .await
    .map_err(|_| ApiError::Unavailable(format!("{agent} did not answer the exec upgrade")))
    .and_then(|r| r.map_err(|e| ApiError::Unavailable(format!("{agent}: {e}"))));
    let (code, headers, stream) = match answer {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "exec: no agent");
            return refuse_in_band(parts, 503, e.to_string()).await;
        }
    };
    if code != 101 {
        // The agent keeps the connection open: read the body by its length.
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(64 * 1024);
        let mut raw = vec![0u8; len];
        let mut s = stream;
        let _ = tokio::time::timeout(AGENT_TIMEOUT, s.read_exact(&mut raw)).await;
        let body = String::from_utf8_lossy(&raw);
        let msg = format!("{agent} answered {code}: {}", body.trim());
        tracing::warn!(pod = %format!("{namespace}/{name}"), %msg, "exec upgrade refused");
        return refuse_in_band(parts, code, msg).await;
    }
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::Internal("the upgrade went missing".into()))?;
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in &headers {
        if matches!(
            k.as_str(),
            "upgrade" | "connection" | "sec-websocket-accept" | "sec-websocket-protocol"
        ) && let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp = resp.header(k, v);
        }
    }
    let who = format!("{namespace}/{name}/{container}");
    tokio::spawn(async move {
        let mut agent_side = stream;
        match on_upgrade.await {
            Ok(up) => {
                let mut client = TokioIo::new(up);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent_side).await {
                    tracing::debug!(exec = %who, error = %e, "exec stream ended");
                }
            }
            Err(e) => tracing::warn!(exec = %who, error = %e, "exec upgrade failed"),
        }
    });
    resp.body(axum::body::Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The status frame (channel 3) that reports an agent's refusal inside the session.
pub fn refusal_frame(code: u16, message: &str) -> Vec<u8> {
    let reason = match code {
        404 => "NotFound",
        403 => "Forbidden",
        400 => "BadRequest",
        _ => "ServiceUnavailable",
    };
    let status = serde_json::json!({
        "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    let mut frame = vec![3u8];
    frame.extend_from_slice(status.to_string().as_bytes());
    frame
}

/// The agent refused the upgrade: accept the client's WebSocket here and report the
/// refusal as the session's status, so that kubectl prints it (an HTTP error would
/// make it fall back to SPDY, which is not served, and hide the reason).
async fn refuse_in_band(parts: &mut Parts, code: u16, msg: String) -> ApiResult<Response> {
    use axum::extract::FromRequestParts;
    use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
    let ws = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::BadRequest(format!("{msg} (and the WebSocket upgrade: {e})")))?;
    let frame = refusal_frame(code, &msg);
    Ok(ws
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |mut socket| async move {
            let _ = socket.send(Message::Binary(frame.into())).await;
            let close = CloseFrame {
                code: 1000,
                reason: "".into(),
            };
            let _ = socket.send(Message::Close(Some(close))).await;
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_defaults_to_the_annotation_then_the_first() {
        let mut pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        });
        assert_eq!(choose_container(&pod, None).unwrap(), "a");
        assert_eq!(choose_container(&pod, Some("b")).unwrap(), "b");
        let e = choose_container(&pod, Some("c")).unwrap_err();
        assert_eq!(e.to_string(), "container c is not valid for pod p");
        pod["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/default-container": "b"});
        assert_eq!(choose_container(&pod, None).unwrap(), "b");
    }

    #[test]
    fn the_agent_gets_the_clients_key_and_subprotocols() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZQ==".parse().unwrap(),
        );
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
        );
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(is_websocket(&h));
        let r = agent_request("10.0.0.1:10250", "/exec/ns/p/c?command=ls&stdout=1", &h);
        assert!(r.starts_with("GET /exec/ns/p/c?command=ls&stdout=1 HTTP/1.1\r\n"));
        assert!(r.contains("sec-websocket-key: dGhlIHNhbXBsZQ==\r\n"), "{r}");
        assert!(r.contains("sec-websocket-protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n"));
        assert!(r.contains("Upgrade: websocket\r\n") && r.ends_with("\r\n\r\n"));
        assert!(
            !r.contains("secret"),
            "credentials stay at the API server: {r}"
        );
        let mut spdy = HeaderMap::new();
        spdy.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        assert!(!is_websocket(&spdy));
    }

    #[test]
    fn response_heads_parse() {
        let (code, h) = parse_head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io",
        )
        .unwrap();
        assert_eq!(code, 101);
        assert!(h.contains(&("sec-websocket-protocol".into(), "v5.channel.k8s.io".into())));
        assert_eq!(parse_head("HTTP/1.1 404 Not Found").unwrap().0, 404);
        assert!(parse_head("SSH-2.0").is_none());
    }

    #[test]
    fn refusals_become_a_status_frame() {
        let f = refusal_frame(400, "container \"web\" is not running");
        assert_eq!(f[0], 3);
        let s: Value = serde_json::from_slice(&f[1..]).unwrap();
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "BadRequest");
        assert_eq!(s["code"], 400);
        assert!(s["message"].as_str().unwrap().contains("not running"));
    }
}
