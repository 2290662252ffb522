//! A minimal stand-in for the Kubernetes API, just enough for kube-rs watchers on
//! Services and EndpointSlices: list (with a resourceVersion) and watch (chunked JSON
//! events, each object carrying its resourceVersion). Used only until the real API
//! server is on main; it lets the daemon's watch -> reconcile -> maps path run for real.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String), Value>,
    watchers: Vec<(Kind, Sender<String>)>,
    /// Every event, so a watch from resourceVersion N first gets what came after N.
    log: Vec<(u64, Kind, String)>,
    /// Watches from before this resourceVersion get 410 Gone (history compacted).
    compacted: u64,
}

const EXPIRE: &str = "\u{0}expire";
const GONE: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Slice,
}

impl Kind {
    fn of_path(path: &str) -> Option<Kind> {
        if path.starts_with("/api/v1/services") {
            Some(Kind::Service)
        } else if path.starts_with("/apis/discovery.k8s.io/v1/endpointslices") {
            Some(Kind::Slice)
        } else {
            None
        }
    }
    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Kind::Service => ("ServiceList", "v1"),
            Kind::Slice => ("EndpointSliceList", "discovery.k8s.io/v1"),
        }
    }
}

/// The fake API server; serves until the test process exits.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
}

impl FakeApi {
    /// Serves on `listener` (bound by the caller, e.g. inside a node's namespace).
    pub fn serve(listener: TcpListener) -> FakeApi {
        let addr = listener.local_addr().unwrap();
        let api = FakeApi {
            state: Arc::default(),
            addr,
        };
        let a = api.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let a = a.clone();
                std::thread::spawn(move || a.handle(s));
            }
        });
        api
    }

    fn handle(&self, s: TcpStream) {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let Some(kind) = Kind::of_path(path) else {
                let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;
                let _ = write!(
                    w,
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                continue;
            };
            if query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1")
            {
                let since = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("resourceVersion="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.watch(kind, since, w);
                return;
            }
            let st = self.state.lock().unwrap();
            let items: Vec<&Value> = st
                .objects
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|(_, v)| v)
                .collect();
            let (lk, av) = kind.list_kind();
            let body = json!({"kind": lk, "apiVersion": av,
                "metadata": {"resourceVersion": st.rv.max(1).to_string()}, "items": items})
            .to_string();
            drop(st);
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    }

    fn watch(&self, kind: Kind, since: u64, mut w: TcpStream) {
        let (tx, rx): (Sender<String>, Receiver<String>) = channel();
        {
            // Replay and subscribe under one lock: no event is lost or sent twice.
            let mut st = self.state.lock().unwrap();
            if since < st.compacted {
                let _ = tx.send(EXPIRE.to_owned());
            } else {
                for (rv, k, ev) in &st.log {
                    if *rv > since && *k == kind {
                        let _ = tx.send(ev.clone());
                    }
                }
                st.watchers.push((kind, tx));
            }
        }
        if write!(
            w,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        for ev in rx {
            let expire = ev == EXPIRE;
            let ev = if expire { GONE.to_owned() } else { ev };
            let line = format!("{ev}\n");
            if write!(w, "{:x}\r\n{line}\r\n", line.len()).is_err() || w.flush().is_err() {
                return;
            }
            if expire {
                let _ = write!(w, "0\r\n\r\n");
                return;
            }
        }
    }

    fn publish(st: &mut State, kind: Kind, typ: &str, obj: &Value) {
        let ev = json!({"type": typ, "object": obj}).to_string();
        let rv = st.rv;
        st.log.push((rv, kind, ev.clone()));
        st.watchers
            .retain(|(k, tx)| *k != kind || tx.send(ev.clone()).is_ok());
    }

    fn put(&self, kind: Kind, mut obj: Value) {
        let name = format!(
            "{}/{}",
            obj["metadata"]["namespace"].as_str().unwrap_or("default"),
            obj["metadata"]["name"].as_str().unwrap()
        );
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let typ = match st.objects.insert((kind, name), obj.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        Self::publish(&mut st, kind, typ, &obj);
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        if let Some(mut o) = st.objects.remove(&(kind, format!("{namespace}/{name}"))) {
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            Self::publish(&mut st, kind, "DELETED", &o);
        }
    }

    /// Compacts the history: every open watch gets 410 Gone and ends, so watchers must
    /// list again (what a real API server does after etcd compaction).
    pub fn expire_watches(&self) {
        let mut st = self.state.lock().unwrap();
        st.compacted = st.rv;
        st.log.clear();
        for (_, tx) in st.watchers.drain(..) {
            let _ = tx.send(EXPIRE.to_owned());
        }
    }

    /// Removes a Service without telling any watcher (an event the client missed).
    pub fn delete_service_unseen(&self, namespace: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        st.objects
            .remove(&(Kind::Service, format!("{namespace}/{name}")));
    }

    /// Creates or replaces a Service (a core/v1 Service JSON object).
    pub fn put_service(&self, obj: Value) {
        self.put(Kind::Service, obj);
    }
    /// Deletes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.delete(Kind::Service, namespace, name);
    }
    /// Creates or replaces an EndpointSlice.
    pub fn put_slice(&self, obj: Value) {
        self.put(Kind::Slice, obj);
    }
    /// Deletes an EndpointSlice.
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        self.delete(Kind::Slice, namespace, name);
    }
}

/// A ClusterIP/NodePort Service object.
pub fn service(name: &str, vip: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": vip, "clusterIPs": [vip], "ports": ports}})
}

/// An EndpointSlice for Service `svc` with ready endpoints `(ip, node)` and `ports`.
pub fn slice(svc: &str, endpoints: &[(String, &str)], ports: Value) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": ports,
        "endpoints": endpoints.iter().map(|(ip, node)| json!({
            "addresses": [ip], "nodeName": node, "conditions": {"ready": true}})).collect::<Vec<_>>()})
}
