//! List and watch: selectors, resourceVersion semantics, limit/continue, Table output,
//! and the watch stream (history, live events, bookmarks, 410 when too old).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;
use crate::request::{Query, Target};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::Stored;
use crate::table;
use crate::watch::{Event, Kind, Msg};

/// Selectors of a list or watch.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Namespace (None: all).
    pub namespace: Option<String>,
    /// Labels.
    pub labels: LabelSelector,
    /// Fields.
    pub fields: FieldSelector,
}

impl Filter {
    /// From the request.
    pub fn new(t: &Target, q: &Query) -> ApiResult<Filter> {
        Ok(Filter {
            namespace: if t.res.namespaced {
                t.namespace.clone()
            } else {
                None
            },
            labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
                .map_err(ApiError::BadRequest)?,
            fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), t.res.kind)
                .map_err(ApiError::BadRequest)?,
        })
    }

    /// Whether an object passes.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(&obj["metadata"]["labels"]) && self.fields.matches(obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let raw = serde_json::to_vec(&Continue {
        rv,
        start: start.to_owned(),
    })
    .unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> ApiResult<Continue> {
    let bad = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// A list result.
#[derive(Debug)]
pub struct Listed {
    /// Matching objects.
    pub items: Vec<Value>,
    /// The revision read.
    pub rv: i64,
    /// A continue token when more objects follow.
    pub cont: Option<String>,
}

impl App {
    /// Lists objects under the filter with the request's RV semantics and paging.
    pub async fn list(&self, t: &Target, filter: &Filter, q: &Query) -> ApiResult<Listed> {
        let res = t.res;
        let prefix = res.scope_prefix(&self.store.prefix, filter.namespace.as_deref());
        let limit = q.int("limit")?.unwrap_or(0).max(0);
        let (mut rev, mut start) = (0, None);
        if let Some(c) = q.get("continue") {
            let c = decode_continue(c)?;
            if !c.start.starts_with(&prefix) {
                return Err(ApiError::BadRequest(
                    "continue key does not belong to this list".into(),
                ));
            }
            rev = c.rv;
            start = Some(c.start);
        } else if let Some(rv) = q.rv("resourceVersion")? {
            match q.get("resourceVersionMatch") {
                Some("Exact") => rev = rv,
                Some("NotOlderThan") | None => {}
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "resourceVersionMatch {other:?} is not Exact or NotOlderThan"
                    )));
                }
            }
            if rv > 0 && q.get("resourceVersionMatch") != Some("Exact") {
                let current = self.store.revision().await?;
                if rv > current {
                    return Err(ApiError::Gone(format!(
                        "Too large resource version: {rv}, current: {current}"
                    )));
                }
            }
        }
        let mut items = Vec::new();
        let mut page_rev;
        loop {
            let want = if limit > 0 {
                (limit - items.len() as i64).max(1) * 2
            } else {
                0
            };
            let page = self
                .store
                .list(&prefix, start.as_deref(), rev, want)
                .await
                .map_err(|e| match e {
                    ApiError::Gone(m) if q.get("continue").is_some() => ApiError::Gone(format!("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter: {m}")),
                    other => other,
                })?;
            page_rev = if rev > 0 { rev } else { page.rev };
            rev = page_rev;
            let last_key = page.items.last().map(|s| s.key.clone());
            let more = page.more;
            for Stored { obj, key, .. } in page.items {
                if filter.matches(&obj) {
                    items.push(obj);
                    if limit > 0 && items.len() as i64 == limit {
                        let next = format!("{key}\0");
                        let has_more = more || Some(&key) != last_key.as_ref();
                        return Ok(Listed {
                            items,
                            rv: page_rev,
                            cont: has_more.then(|| encode_continue(page_rev, &next)),
                        });
                    }
                }
            }
            match (more, last_key) {
                (true, Some(k)) => start = Some(format!("{k}\0")),
                _ => break,
            }
        }
        Ok(Listed {
            items,
            rv: page_rev,
            cont: None,
        })
    }
}

/// A list as JSON (`<Kind>List`) or Table.
pub fn render_list(res: &Resource, l: &Listed, as_table: bool, q: &Query) -> Value {
    if as_table {
        return table::table(
            res.columns,
            &l.items,
            &l.rv.to_string(),
            l.cont.as_deref(),
            q.get("includeObject").unwrap_or("Metadata"),
            true,
        );
    }
    let mut meta = json!({"resourceVersion": l.rv.to_string()});
    if let Some(c) = &l.cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": meta,
        "items": l.items,
    })
}

/// How the watch renders objects.
#[derive(Debug, Clone)]
struct Render {
    res: &'static Resource,
    table: bool,
    include: String,
}

impl Render {
    fn object(&self, obj: &Value, first: &mut bool) -> Value {
        if self.table {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let t = table::table(
                self.res.columns,
                std::slice::from_ref(obj),
                &rv,
                None,
                &self.include,
                *first,
            );
            *first = false;
            t
        } else {
            obj.clone()
        }
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(res: &Resource, rv: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta}),
    )
}

fn gone(msg: &str) -> Bytes {
    line(
        "ERROR",
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": msg, "reason": "Expired", "code": 410,
        }),
    )
}

/// Starts a watch and returns the streaming body.
pub async fn watch(app: Arc<App>, t: &Target, q: &Query, as_table: bool) -> ApiResult<Body> {
    let res = t.res;
    let filter = Filter::new(t, q)?;
    let hub = app.hub(res.plural).clone();
    if !hub.is_ready() {
        hub.wait_for(0, Duration::from_secs(5)).await;
    }
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let max = app.config.max_watch_seconds;
    let timeout = q
        .int("timeoutSeconds")?
        .map_or(max, |s| (s.max(1) as u64).min(max));
    let rv = q.rv("resourceVersion")?;
    let render = Render {
        res,
        table: as_table,
        include: q.get("includeObject").unwrap_or("Metadata").to_owned(),
    };
    // Where to start: from the given revision, or from a fresh list whose objects are
    // sent first as ADDED (resourceVersion unset or "0", or sendInitialEvents).
    let mut initial = Vec::new();
    let from = match rv {
        Some(r) if r > 0 && !send_initial => r,
        _ => {
            let l = app
                .list(
                    &Target {
                        name: None,
                        ..t.clone()
                    },
                    &filter,
                    &Query::default(),
                )
                .await?;
            hub.wait_for(l.rv, Duration::from_secs(5)).await;
            initial = l.items;
            l.rv
        }
    };
    // Like kube-apiserver: a too-old resourceVersion is a 200 response whose only event
    // is an ERROR with code 410, which is what makes informers relist.
    let sub = match hub.subscribe(from) {
        Ok(s) => s,
        Err(floor) => {
            let msg = format!("too old resource version: {from} ({floor})");
            tracing::debug!(
                resource = res.plural,
                from,
                floor,
                "watch from a compacted or evicted revision: 410"
            );
            return Ok(Body::from(gone(&msg)));
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut first = true;
        let mut last = from;
        for obj in &initial {
            if tx
                .send(Ok(line("ADDED", render.object(obj, &mut first))))
                .await
                .is_err()
            {
                return;
            }
        }
        if send_initial && bookmarks {
            let _ = tx.send(Ok(bookmark(res, from, true))).await;
        }
        let mut rx = sub.rx;
        for ev in sub.backlog {
            if ev.rev > from && !emit(&tx, &filter, &render, &ev, &mut first).await {
                return;
            }
            last = last.max(ev.rev);
        }
        last = last.max(sub.latest);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(res, last, false))).await.is_err() { return; }
                }
                msg = rx.recv() => match msg {
                    Ok(Msg::Event(ev)) => {
                        if ev.rev > from && !emit(&tx, &filter, &render, &ev, &mut first).await { return; }
                        last = last.max(ev.rev);
                    }
                    Ok(Msg::Progress(r)) => last = last.max(r),
                    Ok(Msg::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(gone("the watch fell behind or its history was compacted; relist"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(Body::from_stream(tokio_stream_from(rx)))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends one event through the filter: an object that stops matching is DELETED for
/// this watcher, one that starts matching is ADDED.
async fn emit(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    filter: &Filter,
    render: &Render,
    ev: &Event,
    first: &mut bool,
) -> bool {
    let now = filter.matches(&ev.obj);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
    let kind = match ev.kind {
        Kind::Added if now => Kind::Added,
        Kind::Deleted if now || before => Kind::Deleted,
        Kind::Modified if now && before => Kind::Modified,
        Kind::Modified if now => Kind::Added,
        Kind::Modified if before => Kind::Deleted,
        _ => return true,
    };
    tx.send(Ok(line(kind.as_str(), render.object(&ev.obj, first))))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/pods/default/web\0");
        let c = decode_continue(&t).unwrap();
        assert_eq!(
            (c.rv, c.start.as_str()),
            (42, "/registry/pods/default/web\0")
        );
        assert!(decode_continue("zz").is_err());
        assert!(decode_continue("abc").is_err());
    }
}
