//! `pods/<name>/log`: proxied to the node agent of the pod's node, at the address the
//! Node reports (InternalIP, `status.daemonEndpoints.kubeletEndpoint.Port`, default
//! 10250), path `/containerLogs/<namespace>/<pod>/<container>` as the kubelet serves it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::registry;
use crate::request::{Query, Target};

/// The node agent's address of a node: its InternalIP and the port in
/// `status.daemonEndpoints.kubeletEndpoint` (default 10250).
pub(crate) async fn agent_address(app: &App, node_name: &str) -> ApiResult<(String, u16)> {
    let nodes = registry::find("", "v1", "nodes").ok_or(ApiError::NoSuchPath)?;
    let node = app.get_obj(nodes, None, node_name).await?.obj;
    let ip = node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| ApiError::Unavailable(format!("node {node_name} reports no InternalIP")))?
        .to_owned();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10250);
    Ok((ip, port))
}

/// Fetches a container's log from its node agent.
pub async fn proxy(app: &App, t: &Target, q: &Query) -> ApiResult<Response> {
    let name = t.name.clone().unwrap_or_default();
    let pod = app.get_obj(t.res, t.namespace.as_deref(), &name).await?.obj;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} is not scheduled to a node yet"
        )));
    }
    let container = match q.get("container") {
        Some(c) => c.to_owned(),
        None => {
            let cs = pod["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if cs.len() != 1 {
                return Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}"
                )));
            }
            cs[0]["name"].as_str().unwrap_or("").to_owned()
        }
    };
    let (ip, port) = agent_address(app, &node_name).await?;
    let mut query: Vec<String> = Vec::new();
    for k in [
        "tailLines",
        "timestamps",
        "sinceSeconds",
        "limitBytes",
        "previous",
    ] {
        if let Some(v) = q.get(k) {
            query.push(format!("{k}={v}"));
        }
    }
    let path = format!(
        "/containerLogs/{}/{name}/{container}{}",
        t.namespace.as_deref().unwrap_or(""),
        if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        }
    );
    let unavailable = |e: std::io::Error| {
        ApiError::Unavailable(format!("node agent on {node_name} ({ip}:{port}): {e}"))
    };
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect((ip.as_str(), port)),
    )
    .await
    .map_err(|_| {
        ApiError::Unavailable(format!(
            "node agent on {node_name} ({ip}:{port}) did not answer"
        ))
    })?
    .map_err(unavailable)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .await
        .map_err(unavailable)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(unavailable)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(502);
    if code != 200 {
        return Err(ApiError::BadRequest(format!(
            "node agent on {node_name} answered {code}: {}",
            body.trim()
        )));
    }
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        body.to_owned(),
    )
        .into_response())
}
