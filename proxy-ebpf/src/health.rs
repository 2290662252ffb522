//! healthCheckNodePort servers: for each Service with externalTrafficPolicy: Local and a
//! healthCheckNodePort, an HTTP server on that port answering 200 with the number of
//! local endpoints, or 503 when there is none (so an external load balancer only sends
//! to nodes that have a backend), in kube-proxy's JSON shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::task::JoinHandle;

type Table = Arc<Mutex<HashMap<u16, (String, String, usize)>>>;

/// The set of health servers, one per port.
#[derive(Debug, Default)]
pub struct HealthServers {
    table: Table,
    tasks: HashMap<u16, JoinHandle<()>>,
    by_service: HashMap<String, u16>,
}

/// The answer for one port: status and JSON body.
pub fn answer(namespace: &str, name: &str, local: usize) -> (StatusCode, String) {
    let body = serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": local,
        "serviceProxyHealthy": true,
    })
    .to_string();
    let code = if local > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn serve(State((table, port)): State<(Table, u16)>) -> impl IntoResponse {
    let entry = table
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&port)
        .cloned();
    match entry {
        Some((ns, name, n)) => {
            let (code, body) = answer(&ns, &name, n);
            (code, [("content-type", "application/json")], body)
        }
        None => (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            "{}".to_owned(),
        ),
    }
}

impl HealthServers {
    /// Sets (or with `None` removes) the health port of Service `namespace/name`.
    pub fn set(&mut self, namespace: &str, name: &str, port_and_count: Option<(u16, usize)>) {
        let key = format!("{namespace}/{name}");
        let old = self.by_service.get(&key).copied();
        let new = port_and_count.map(|(p, _)| p);
        if let Some(p) = old.filter(|p| Some(*p) != new) {
            self.by_service.remove(&key);
            self.table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p);
            if let Some(t) = self.tasks.remove(&p) {
                t.abort();
            }
        }
        let Some((port, count)) = port_and_count else {
            return;
        };
        self.by_service.insert(key, port);
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, (namespace.to_owned(), name.to_owned(), count));
        if self.tasks.contains_key(&port) {
            return;
        }
        let table = self.table.clone();
        self.tasks.insert(
            port,
            tokio::spawn(async move {
                let app = axum::Router::new()
                    .fallback(serve)
                    .with_state((table, port));
                match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::warn!(port, error = %e, "health check server stopped");
                        }
                    }
                    Err(e) => tracing::warn!(port, error = %e, "bind healthCheckNodePort"),
                }
            }),
        );
    }

    /// Stops every server.
    pub fn stop(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_200_with_local_endpoints_and_503_without() {
        let (c, body) = answer("default", "web", 2);
        assert_eq!(c, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["localEndpoints"], 2);
        assert_eq!(v["service"]["name"], "web");
        assert_eq!(
            answer("default", "web", 0).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
