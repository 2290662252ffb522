//! The container log endpoint the API server's `pods/log` proxy calls (plain HTTP on
//! `--log-port`, the port published in the Node's daemonEndpoints.kubeletEndpoint):
//!
//! ```text
//! GET /containerLogs/<namespace>/<pod>/<container>[?previous=true][&tailLines=N][&limitBytes=N]
//!     200 text/plain: the log of the current (or previous) instance
//!     404 when the pod, container or log is unknown; 400 for follow=true (not supported)
//! GET /healthz  → "ok"
//! ```

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::runtime::PodRuntime;

/// The router (serve it with `axum::serve`).
pub fn router(rt: PodRuntime) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/healthz", get(|| async { "ok" }))
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
    if flag("follow") {
        return text(
            StatusCode::BAD_REQUEST,
            "follow=true is not supported by skein-agent; omit -f\n".into(),
        );
    }
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
    match tokio::fs::read(&path).await {
        Ok(bytes) => text(
            StatusCode::OK,
            select(&String::from_utf8_lossy(&bytes), tail, limit),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("read {}: {e}\n", path.display()),
        ),
    }
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
