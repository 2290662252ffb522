//! The HTTP front: authentication, then one handler that routes discovery, OpenAPI,
//! health and resource requests by path and method.

use std::sync::Arc;

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::App;
use crate::auth::{self, Verdict};
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Filter};
use crate::objects::{DeleteOptions, scale_of};
use crate::request::{self, MAX_BODY, Query, Target};

/// The router of the whole API.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response();
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(h) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let version = req.version();
    let started = std::time::Instant::now();
    let resp = match serve(app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, %uri, ?version, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

async fn serve(app: Arc<App>, req: Request) -> ApiResult<Response> {
    let (mut parts, body) = req.into_parts();
    let auth_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::client_cert::Peer>>();
    let cert_user = peer
        .and_then(|p| p.0.cert_user.as_ref())
        .map(|u| u.name.as_str());
    if auth::authenticate(
        &app.tokens,
        cert_user,
        auth_header,
        app.config.anonymous_auth,
    ) == Verdict::Denied
    {
        return Err(ApiError::Unauthorized);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::TooLarge(format!(
            "the request body is larger than {MAX_BODY} bytes"
        )));
    }
    let path = parts.uri.path().to_owned();
    let q = Query::parse(&parts.uri)?;
    let body = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::TooLarge(format!("the request body is larger than {MAX_BODY} bytes"))
    })?;
    let method = parts.method.clone();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == Method::GET {
        match segs.as_slice() {
            ["healthz"] | ["readyz"] | ["livez"] => {
                return Ok((StatusCode::OK, "ok").into_response());
            }
            ["version"] => return ok(discovery::version()),
            ["api"] => {
                let addr = format!("{}:{}", app.config.bind_address, app.config.port);
                return ok(discovery::core_versions(&addr));
            }
            ["apis"] => return ok(discovery::groups()),
            ["api", v] => return discovery::resources("", v).map_or(Err(ApiError::NoSuchPath), ok),
            ["apis", g] => return discovery::group(g).map_or(Err(ApiError::NoSuchPath), ok),
            ["apis", g, v] => {
                return discovery::resources(g, v).map_or(Err(ApiError::NoSuchPath), ok);
            }
            ["openapi", "v3"] => return ok(discovery::openapi_index()),
            ["openapi", "v3", rest @ ..] => {
                return discovery::openapi_doc(&rest.join("/"))
                    .map_or(Err(ApiError::NoSuchPath), ok);
            }
            _ => {}
        }
    }
    let Some(t) = request::parse_path(&path)? else {
        return Err(ApiError::NoSuchPath);
    };
    if t.sub.as_deref() == Some("exec") && t.name.is_some() {
        if !matches!(method, Method::GET | Method::POST) {
            return Err(ApiError::MethodNotAllowed(format!(
                "{method} is not supported on pods/exec"
            )));
        }
        return crate::exec::proxy(&app, &t, &mut parts).await;
    }
    resource(app, t, method, &parts.headers, q, &body).await
}

async fn resource(
    app: Arc<App>,
    t: Target,
    method: Method,
    headers: &HeaderMap,
    q: Query,
    body: &[u8],
) -> ApiResult<Response> {
    let as_table = request::wants_table(headers);
    let media = request::content_type(headers);
    let mut warnings = Vec::new();
    let sub = t.sub.clone();
    let reply = |code: StatusCode, v: Value, w: &[String]| Ok(json_response(code, &v, w));
    match (method, t.name.is_some(), sub.as_deref()) {
        (Method::GET, false, None) => {
            if q.flag("watch") {
                let body = list::watch(app.clone(), &t, &q, as_table).await?;
                let ct = if as_table {
                    "application/json;as=Table;v=v1;g=meta.k8s.io"
                } else {
                    "application/json"
                };
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, ct)
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(body)
                    .map_err(|e| ApiError::Internal(e.to_string()));
            }
            let filter = Filter::new(&t, &q)?;
            let l = app.list(&t, &filter, &q).await?;
            reply(
                StatusCode::OK,
                list::render_list(t.res, &l, as_table, &q),
                &[],
            )
        }
        (Method::POST, false, None) => {
            let obj = request::decode_body(body, &media)?;
            let created = app.create(&t, obj, &q, &mut warnings).await?;
            reply(StatusCode::CREATED, created, &warnings)
        }
        (Method::DELETE, false, None) => {
            let filter = Filter::new(&t, &q)?;
            let l = app.list(&t, &filter, &Query::default()).await?;
            let opts = DeleteOptions::parse(parse_optional(body, &media)?.as_ref(), &q)?;
            let mut out = Vec::new();
            for item in &l.items {
                let one = Target {
                    name: item["metadata"]["name"].as_str().map(str::to_owned),
                    namespace: item["metadata"]["namespace"].as_str().map(str::to_owned),
                    ..t.clone()
                };
                match app.delete(&one, &opts).await {
                    Ok(o) => out.push(o),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let listed = list::Listed {
                items: out,
                rv: l.rv,
                cont: None,
            };
            reply(
                StatusCode::OK,
                list::render_list(t.res, &listed, false, &q),
                &[],
            )
        }
        (Method::GET, true, None) => {
            let o = app
                .get_obj(
                    t.res,
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or(""),
                )
                .await?
                .obj;
            if as_table {
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                return reply(
                    StatusCode::OK,
                    crate::table::table(
                        t.res.columns,
                        &[o],
                        &rv,
                        None,
                        q.get("includeObject").unwrap_or("Metadata"),
                        true,
                    ),
                    &[],
                );
            }
            reply(StatusCode::OK, o, &[])
        }
        (Method::GET, true, Some("status")) => {
            let o = app
                .get_obj(
                    t.res,
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or(""),
                )
                .await?
                .obj;
            reply(StatusCode::OK, o, &[])
        }
        (Method::GET, true, Some("scale")) => {
            let o = app
                .get_obj(
                    t.res,
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or(""),
                )
                .await?
                .obj;
            reply(StatusCode::OK, scale_of(t.res, &o)?, &[])
        }
        (Method::GET, true, Some("log")) => crate::logs::proxy(&app, &t, &q).await,
        (Method::PUT, true, Some("scale")) => {
            let scale = request::decode_body(body, &media)?;
            if scale["kind"].as_str().is_some_and(|k| k != "Scale") {
                return Err(ApiError::BadRequest(
                    "the body of a scale update must be a Scale".into(),
                ));
            }
            let mut view = scale.clone();
            view["metadata"] = scale["metadata"].clone();
            let o = app.update(&t, view, &q, &mut warnings).await?;
            reply(StatusCode::OK, scale_of(t.res, &o)?, &warnings)
        }
        (Method::PUT, true, _) => {
            let obj = request::decode_body(body, &media)?;
            let o = app.update(&t, obj, &q, &mut warnings).await?;
            reply(StatusCode::OK, o, &warnings)
        }
        (Method::PATCH, true, _) => {
            let o = app.patch(&t, body, &media, &q, &mut warnings).await?;
            let code = if o["metadata"]["resourceVersion"].is_null() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            reply(code, o, &warnings)
        }
        (Method::DELETE, true, None) => {
            let opts = DeleteOptions::parse(parse_optional(body, &media)?.as_ref(), &q)?;
            let o = app.delete(&t, &opts).await?;
            if t.res.kind == "Namespace"
                && let Some(name) = &t.name
            {
                tokio::spawn(crate::lifecycle::finish_namespace(
                    app.clone(),
                    name.clone(),
                ));
            }
            reply(StatusCode::OK, o, &[])
        }
        (Method::POST, true, Some("binding")) => {
            let b = request::decode_body(body, &media)?;
            let s = app.bind(&t, b).await?;
            reply(StatusCode::CREATED, s, &[])
        }
        (m, _, s) => Err(ApiError::MethodNotAllowed(format!(
            "{m} is not supported on {}{}",
            t.res.qualified(),
            s.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

fn parse_optional(body: &[u8], media: &str) -> ApiResult<Option<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        request::decode_body(body, media).map(Some)
    }
}

/// Serves on a bound listener until the process ends.
pub async fn serve_on(app: Arc<App>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small responses go out at once instead of waiting for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(app)).await
}

/// Serves HTTPS on a TLS listener until the process ends; each request carries its
/// connection's [`crate::client_cert::Peer`].
pub async fn serve_tls_on(app: Arc<App>, listener: crate::tls::TlsListener) -> std::io::Result<()> {
    let service = router(app).into_make_service_with_connect_info::<crate::client_cert::Peer>();
    axum::serve(listener, service).await
}
