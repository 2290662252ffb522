//! The container log endpoint the API server's `pods/log` proxy calls (plain HTTP on
//! `--log-port`, the port published in the Node's daemonEndpoints.kubeletEndpoint):
//!
//! ```text
//! GET /containerLogs/<namespace>/<pod>/<container>[?previous=true][&tailLines=N][&limitBytes=N]
//!     200 text/plain: the log of the current (or previous) instance
//!     404 when the pod, container or log is unknown; 400 for follow=true (not supported)
//! GET /exec/<namespace>/<pod>/<container>?command=..  (WebSocket; see `exec`)
//! GET /healthz  → "ok"
//! ```

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::runtime::PodRuntime;

/// The router, exec refused to everyone (serve it with `axum::serve`).
pub fn router(rt: PodRuntime) -> Router {
    router_with_exec(rt, crate::exec_access::ExecAccess::default())
}

/// The router with exec allowed from `exec`'s peers; serve it with the peer address
/// (`into_make_service_with_connect_info::<SocketAddr>`).
pub fn router_with_exec(rt: PodRuntime, exec: crate::exec_access::ExecAccess) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(crate::exec::exec).post(crate::exec::exec),
        )
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::Extension(std::sync::Arc::new(exec)))
        .with_state(rt)
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn container_logs(
    State(rt): State<PodRuntime>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let num = |k: &str| -> Result<Option<usize>, String> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("{k}={v:?} is not a non-negative integer\n")),
        }
    };
    let (tail, limit) = match (num("tailLines"), num("limitBytes")) {
        (Ok(t), Ok(l)) => (t, l),
        (Err(r), _) | (_, Err(r)) => return text(StatusCode::BAD_REQUEST, r),
    };
    let previous = flag("previous");
    let Some(path) = rt.log_file(&namespace, &pod, &container, previous) else {
        let what = if previous {
            "previous terminated container"
        } else {
            "container"
        };
        return text(
            StatusCode::NOT_FOUND,
            format!("{what} {container:?} in pod {namespace}/{pod} not found on this node\n"),
        );
    };
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("read {}: {e}\n", path.display()),
            );
        }
    };
    let log = String::from_utf8_lossy(&bytes);
    if flag("follow") && !previous {
        let first = select(&log, tail, None);
        return follow(
            rt,
            (namespace, pod, container),
            path,
            bytes.len() as u64,
            first,
        );
    }
    text(StatusCode::OK, select(&log, tail, limit))
}

/// Streams `first`, then whatever the instance appends to `path` from `offset`, until it
/// stops running (or the client goes away).
fn follow(
    rt: PodRuntime,
    who: (String, String, String),
    path: std::path::PathBuf,
    offset: u64,
    first: String,
) -> Response {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let start =
        futures::stream::once(
            async move { Ok::<_, std::io::Error>(axum::body::Bytes::from(first)) },
        );
    let rest = futures::stream::unfold(Some(offset), move |state| {
        let (rt, who, path) = (rt.clone(), who.clone(), path.clone());
        async move {
            let mut offset = state?;
            loop {
                let mut buf = Vec::new();
                if let Ok(mut f) = tokio::fs::File::open(&path).await
                    && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
                {
                    let _ = f.take(64 * 1024).read_to_end(&mut buf).await;
                }
                if !buf.is_empty() {
                    offset += buf.len() as u64;
                    return Some((Ok(axum::body::Bytes::from(buf)), Some(offset)));
                }
                if !rt.logging_to(&who.0, &who.1, &who.2, &path) {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(axum::body::Body::from_stream(start.chain(rest)))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The last `tail` lines, then at most `limit` bytes of them (cut at a char boundary).
pub fn select(log: &str, tail: Option<usize>, limit: Option<usize>) -> String {
    let mut s = log;
    if let Some(n) = tail {
        let body = s.strip_suffix('\n').unwrap_or(s);
        s = if n == 0 {
            ""
        } else {
            match body.match_indices('\n').rev().nth(n - 1) {
                Some((i, _)) => &s[i + 1..],
                None => s,
            }
        };
    }
    if let Some(l) = limit
        && s.len() > l
    {
        let mut end = l;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s = &s[..end];
    }
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_limit() {
        let log = "a\nb\nc\n";
        assert_eq!(select(log, None, None), log);
        assert_eq!(select(log, Some(2), None), "b\nc\n");
        assert_eq!(select(log, Some(5), None), log);
        assert_eq!(select(log, Some(0), None), "");
        assert_eq!(select("a\nb", Some(1), None), "b");
        assert_eq!(select(log, None, Some(3)), "a\nb");
        assert_eq!(select("é", None, Some(1)), "");
    }
}
