//! Writes: create, update (main, status and scale), patch, delete, bind. Each one
//! admits the object (types, names, labels, unknown fields), fills what the server owns
//! (uid, creationTimestamp, generation), and writes with an etcd transaction that fails
//! on a concurrent change; allocations of Services ride in the same transaction.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::{ApiError, ApiResult, Cause};
use crate::patch;
use crate::registry::{self, Resource};
use crate::request::{Query, Target};
use crate::selectors::LabelSelector;
use crate::services::{self, Explicit, Ranges};
use crate::store::{Stored, Write, set_rv};
use crate::validate;

/// How many times a write is retried after losing a race with another writer.
const RETRIES: usize = 16;

/// "now" as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    Timestamp::from_second(crate::table::unix_now())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn now_plus(secs: i64) -> String {
    Timestamp::from_second(crate::table::unix_now() + secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A 422 for `res`/`name`.
pub fn invalid(res: &Resource, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        kind: res.kind.to_owned(),
        group: res.group.to_owned(),
        name: name.to_owned(),
        causes,
    }
}

fn not_found(res: &Resource, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: res.qualified(),
        name: name.to_owned(),
    }
}

fn conflict(res: &Resource, name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
        res.qualified()
    ))
}

/// Parsed DeleteOptions (from the body or the query).
#[derive(Debug, Default)]
pub struct DeleteOptions {
    /// gracePeriodSeconds.
    pub grace: Option<i64>,
    /// propagationPolicy: Orphan, Background, Foreground.
    pub propagation: Option<String>,
    /// preconditions.uid.
    pub uid: Option<String>,
    /// preconditions.resourceVersion.
    pub rv: Option<String>,
}

impl DeleteOptions {
    /// From an optional body and the query.
    pub fn parse(body: Option<&Value>, q: &Query) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions {
            grace: q.int("gracePeriodSeconds")?,
            propagation: q.get("propagationPolicy").map(str::to_owned),
            ..Default::default()
        };
        if let Some(b) = body {
            if let Some(g) = b.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
                o.grace = Some(g.as_i64().ok_or_else(|| {
                    ApiError::BadRequest("gracePeriodSeconds must be an integer".into())
                })?);
            }
            if let Some(p) = b["propagationPolicy"].as_str() {
                o.propagation = Some(p.to_owned());
            }
            if b["orphanDependents"] == true {
                o.propagation = Some("Orphan".into());
            }
            o.uid = b["preconditions"]["uid"].as_str().map(str::to_owned);
            o.rv = b["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_owned);
        }
        if let Some(p) = &o.propagation
            && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
        {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy {p:?} is not one of Orphan, Background, Foreground"
            )));
        }
        if o.grace.is_some_and(|g| g < 0) {
            return Err(ApiError::BadRequest(
                "gracePeriodSeconds must be 0 or more".into(),
            ));
        }
        Ok(o)
    }
}

impl App {
    /// Reads one object (404 when absent).
    pub async fn get_obj(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Stored> {
        let key = res.key(&self.store.prefix, ns, name);
        self.store
            .get(&key)
            .await?
            .ok_or_else(|| not_found(res, name))
    }

    /// Checks the type, names, labels and unknown fields of an incoming object and
    /// returns its normalized form (unknown fields dropped).
    pub fn admit(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        mut obj: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::BadRequest(format!(
                "the body must be a {} object",
                res.kind
            )));
        };
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), json!(res.api_version()));
            }
            Some(v) if v == res.api_version() => {}
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({v}) does not match the expected API version ({})",
                    res.api_version()
                )));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), json!(res.kind));
            }
            Some(k) if k == res.kind => {}
            Some(k) => {
                return Err(ApiError::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                    res.kind,
                    res.qualified()
                )));
            }
        }
        if !map.get("metadata").is_some_and(Value::is_object) {
            map.insert("metadata".into(), json!({}));
        }
        let meta_ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        if res.namespaced {
            match (meta_ns.as_deref(), ns) {
                (Some(a), Some(b)) if a != b => {
                    return Err(ApiError::BadRequest("the namespace of the provided object does not match the namespace sent on the request".into()));
                }
                (_, Some(b)) => obj["metadata"]["namespace"] = json!(b),
                _ => {}
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let typed = (res.roundtrip)(&obj).map_err(|e| {
            ApiError::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                res.kind, res.version, res.kind
            ))
        })?;
        let unknown = validate::unknown_fields(&obj, &typed);
        if !unknown.is_empty() {
            let msgs: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            match q.get("fieldValidation").unwrap_or("Warn") {
                "Strict" => {
                    return Err(ApiError::BadRequest(format!(
                        "strict decoding error: {}",
                        msgs.join(", ")
                    )));
                }
                "Ignore" => {}
                _ => warnings.extend(msgs),
            }
        }
        let mut causes = Vec::new();
        validate::metadata(&typed["metadata"], &mut causes);
        if !causes.is_empty() {
            let name = typed["metadata"]["name"].as_str().unwrap_or("").to_owned();
            return Err(invalid(res, &name, causes));
        }
        Ok(typed)
    }

    async fn namespace_open(&self, ns: &str) -> ApiResult<()> {
        let nsr = registry::find("", "v1", "namespaces").ok_or(ApiError::NoSuchPath)?;
        let n = self.get_obj(nsr, None, ns).await?;
        if n.obj["status"]["phase"] == "Terminating" {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Creates an object (POST to a collection).
    pub async fn create(
        &self,
        t: &Target,
        body: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let res = t.res;
        if res.namespaced && t.namespace.is_none() {
            return Err(ApiError::BadRequest(format!(
                "{} must be created in a namespace",
                res.qualified()
            )));
        }
        let ns = t.namespace.as_deref();
        let mut obj = self.admit(res, ns, body, q, warnings)?;
        let gen_name = obj["metadata"]["generateName"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let given = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if given.is_empty() && gen_name.is_empty() {
            return Err(invalid(res, "", vec![Cause::required("metadata.name")]));
        }
        if !given.is_empty()
            && let Err(e) = validate::name(res.name_rule, &given)
        {
            return Err(invalid(
                res,
                &given,
                vec![Cause::invalid("metadata.name", e)],
            ));
        }
        if given.is_empty()
            && let Err(e) = validate::name(res.name_rule, &format!("{gen_name}abcde"))
        {
            return Err(invalid(
                res,
                &gen_name,
                vec![Cause::invalid("metadata.generateName", e)],
            ));
        }
        if let Some(ns) = ns {
            self.namespace_open(ns).await?;
        }
        self.defaults_on_create(res, &mut obj);
        let causes = self.validate_kind(res, &obj);
        if !causes.is_empty() {
            return Err(invalid(res, &given, causes));
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or(ApiError::Internal("metadata".into()))?;
        meta.insert("uid".into(), json!(uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        let dry_run = q.get("dryRun") == Some("All");
        for _ in 0..RETRIES {
            let mut o = obj.clone();
            let name = if given.is_empty() {
                format!("{gen_name}{}", random_suffix())
            } else {
                given.clone()
            };
            o["metadata"]["name"] = json!(name);
            let mut ex = Explicit::default();
            let claims = if res.kind == "Service" {
                self.ranges
                    .prepare(&mut o, None, &mut ex)
                    .map_err(|c| invalid(res, &name, c))?
            } else {
                services::Claims::default()
            };
            if dry_run {
                return Ok(o);
            }
            let owner = format!("{}/{name}", ns.unwrap_or(""));
            let absent = self.claim_keys(&claims);
            let puts: Vec<(String, String)> =
                absent.iter().map(|k| (k.clone(), owner.clone())).collect();
            let key = res.key(&self.store.prefix, ns, &name);
            match self.store.create(&key, &o, &absent, &puts).await? {
                Write::Done(rev) => {
                    for ip in &claims.ips {
                        self.ranges.mark_ip(*ip, true);
                    }
                    for p in &claims.ports {
                        self.ranges.mark_port(*p, true);
                    }
                    set_rv(&mut o, rev);
                    return Ok(o);
                }
                Write::Failed => {
                    if self.store.get(&key).await?.is_some() {
                        if given.is_empty() {
                            continue;
                        }
                        return Err(ApiError::AlreadyExists {
                            resource: res.qualified(),
                            name,
                        });
                    }
                    self.explain_claim_failure(res, &name, &claims, &ex).await?;
                }
            }
        }
        Err(ApiError::Conflict(format!(
            "could not create {} after {RETRIES} attempts (too many concurrent writers)",
            res.qualified()
        )))
    }

    fn claim_keys(&self, claims: &services::Claims) -> Vec<String> {
        let p = &self.store.prefix;
        claims
            .ips
            .iter()
            .map(|ip| services::ip_key(p, *ip))
            .chain(claims.ports.iter().map(|port| services::port_key(p, *port)))
            .collect()
    }

    fn release_keys(&self, claims: &services::Claims) -> Vec<String> {
        let p = &self.store.prefix;
        claims
            .release_ips
            .iter()
            .map(|ip| services::ip_key(p, *ip))
            .chain(
                claims
                    .release_ports
                    .iter()
                    .map(|port| services::port_key(p, *port)),
            )
            .collect()
    }

    /// After a failed transaction: marks the taken allocations; explicit ones are a 422.
    async fn explain_claim_failure(
        &self,
        res: &Resource,
        name: &str,
        claims: &services::Claims,
        ex: &Explicit,
    ) -> ApiResult<()> {
        let p = self.store.prefix.clone();
        for ip in &claims.ips {
            let k = services::ip_key(&p, *ip);
            if self.store.keys(&k).await?.iter().any(|(kk, _)| *kk == k) {
                self.ranges.mark_ip(*ip, true);
                if ex.ip {
                    return Err(invalid(
                        res,
                        name,
                        vec![Cause::invalid(
                            "spec.clusterIPs",
                            format!(
                                "Invalid value: {:?}: failed to allocate IP {ip}: provided IP is already allocated",
                                ip.to_string()
                            ),
                        )],
                    ));
                }
            }
        }
        for port in &claims.ports {
            let k = services::port_key(&p, *port);
            if self.store.keys(&k).await?.iter().any(|(kk, _)| *kk == k) {
                self.ranges.mark_port(*port, true);
                if ex.ports.contains(port) {
                    return Err(invalid(
                        res,
                        name,
                        vec![Cause::invalid(
                            "spec.ports[].nodePort",
                            format!("Invalid value: {port}: provided port is already allocated"),
                        )],
                    ));
                }
            }
        }
        Ok(())
    }

    fn defaults_on_create(&self, res: &Resource, obj: &mut Value) {
        match res.kind {
            "Namespace" => {
                obj["status"] = json!({"phase": "Active"});
                if obj["spec"]["finalizers"].is_null() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
            }
            "Pod" => {
                let phase = obj["status"]["phase"].clone();
                obj["status"] =
                    json!({"phase": if phase.is_null() { json!("Pending") } else { phase }});
                let spec = &mut obj["spec"];
                if spec["restartPolicy"].is_null() {
                    spec["restartPolicy"] = json!("Always");
                }
                if spec["terminationGracePeriodSeconds"].is_null() {
                    spec["terminationGracePeriodSeconds"] = json!(30);
                }
                if spec["dnsPolicy"].is_null() {
                    spec["dnsPolicy"] = json!("ClusterFirst");
                }
                if spec["schedulerName"].is_null() {
                    spec["schedulerName"] = json!("default-scheduler");
                }
            }
            "Deployment" | "ReplicaSet" | "DaemonSet" | "Service" => {
                if res.kind != "Service" {
                    if obj["spec"]["replicas"].is_null() && res.kind != "DaemonSet" {
                        obj["spec"]["replicas"] = json!(1);
                    }
                    obj["status"] = json!({});
                } else {
                    obj["status"] = json!({"loadBalancer": {}});
                }
                if res.kind == "Deployment" {
                    let spec = &mut obj["spec"];
                    if spec["strategy"].is_null() {
                        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
                    }
                    if spec["revisionHistoryLimit"].is_null() {
                        spec["revisionHistoryLimit"] = json!(10);
                    }
                    if spec["progressDeadlineSeconds"].is_null() {
                        spec["progressDeadlineSeconds"] = json!(600);
                    }
                }
            }
            _ => {}
        }
    }

    /// Validates what only some kinds need (beyond the typed decode).
    fn validate_kind(&self, res: &Resource, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        if matches!(res.kind, "Deployment" | "ReplicaSet" | "DaemonSet") {
            let sel = &obj["spec"]["selector"];
            if sel.is_null() {
                causes.push(Cause::required("spec.selector"));
            } else {
                match LabelSelector::from_object(sel) {
                    Ok(s) => {
                        let labels = &obj["spec"]["template"]["metadata"]["labels"];
                        if s.0.is_empty() {
                            causes.push(Cause::invalid(
                                "spec.selector",
                                "Invalid value: empty selector is invalid for deployment",
                            ));
                        } else if !s.matches(labels) {
                            causes.push(Cause::invalid("spec.template.metadata.labels", format!("Invalid value: {labels}: `selector` does not match template `labels`")));
                        }
                    }
                    Err(e) => causes.push(Cause::invalid("spec.selector", e)),
                }
            }
            if obj["spec"]["replicas"].as_i64().is_some_and(|r| r < 0) {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    "Invalid value: must be greater than or equal to 0",
                ));
            }
            if obj["spec"]["template"]["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.template.spec.containers"));
            }
        }
        if res.kind == "Pod" {
            let cs = obj["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if cs.is_empty() {
                causes.push(Cause::required("spec.containers"));
            }
            for (i, c) in cs.iter().enumerate() {
                if let Err(e) = validate::dns_label(c["name"].as_str().unwrap_or("")) {
                    causes.push(Cause::invalid(format!("spec.containers[{i}].name"), e));
                }
                if c["image"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(format!("spec.containers[{i}].image")));
                }
            }
        }
        causes
    }

    /// Replaces an object (PUT), a subresource, or writes a patched object.
    /// `precondition`: the resourceVersion the client based its change on.
    async fn write_update(
        &self,
        t: &Target,
        current: &Stored,
        new: Value,
        q: &Query,
        warnings: &mut Vec<String>,
        precondition: Option<i64>,
    ) -> ApiResult<Option<Value>> {
        let res = t.res;
        let name = t.name.clone().unwrap_or_default();
        if let Some(p) = precondition
            && p != current.rev
        {
            return Err(conflict(res, &name));
        }
        let sub = t.sub.as_deref();
        let mut new = if sub == Some("scale") {
            let replicas = new["spec"]["replicas"]
                .as_i64()
                .ok_or_else(|| invalid(res, &name, vec![Cause::required("spec.replicas")]))?;
            if replicas < 0 {
                return Err(invalid(
                    res,
                    &name,
                    vec![Cause::invalid(
                        "spec.replicas",
                        "Invalid value: must be greater than or equal to 0",
                    )],
                ));
            }
            let mut o = current.obj.clone();
            o["spec"]["replicas"] = json!(replicas);
            o
        } else {
            self.admit(res, t.namespace.as_deref(), new, q, warnings)?
        };
        let new_name = new["metadata"]["name"].as_str().unwrap_or("");
        if new_name.is_empty() {
            new["metadata"]["name"] = json!(name);
        } else if new_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        let cur = &current.obj;
        if sub == Some("status") {
            let mut o = cur.clone();
            o["status"] = new["status"].clone();
            new = o;
        } else if res.has_sub("status") && sub.is_none() {
            new["status"] = cur["status"].clone();
            if new["status"].is_null()
                && let Some(m) = new.as_object_mut()
            {
                m.remove("status");
            }
        }
        // The server owns these.
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match cur["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        // managedFields: as sent (server-side apply sets them), else as stored.
        if new["metadata"].get("managedFields").is_none()
            && let Some(mf) = cur["metadata"].get("managedFields")
        {
            new["metadata"]["managedFields"] = mf.clone();
        }
        let strip = |o: &Value| -> Value {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            o
        };
        if strip(&new) != strip(cur) {
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        if res.kind == "Namespace" && sub != Some("finalize") {
            new["spec"] = cur["spec"].clone();
        }
        let causes = self.validate_kind(res, &new);
        if !causes.is_empty() {
            return Err(invalid(res, &name, causes));
        }
        let mut ex = Explicit::default();
        let claims = if res.kind == "Service" && sub.is_none() {
            self.ranges
                .prepare(&mut new, Some(cur), &mut ex)
                .map_err(|c| invalid(res, &name, c))?
        } else {
            services::Claims::default()
        };
        if q.get("dryRun") == Some("All") {
            return Ok(Some(new));
        }
        // A terminating object whose last finalizer went away is deleted now.
        let finalizers_done = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && !(res.kind == "Pod"
                && new["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(0)
                    > 0)
            && res.kind != "Namespace";
        let key = &current.key;
        if finalizers_done {
            let (ips, ports) = if res.kind == "Service" {
                Ranges::held(cur)
            } else {
                Default::default()
            };
            let release = self.release_keys(&services::Claims {
                release_ips: ips,
                release_ports: ports,
                ..Default::default()
            });
            return match self.store.delete(key, current.rev, &release).await? {
                Write::Done(rev) => {
                    set_rv(&mut new, rev);
                    Ok(Some(new))
                }
                Write::Failed => Ok(None),
            };
        }
        let absent = self.claim_keys(&claims);
        let owner = format!("{}/{name}", t.namespace.as_deref().unwrap_or(""));
        let puts: Vec<(String, String)> =
            absent.iter().map(|k| (k.clone(), owner.clone())).collect();
        let release = self.release_keys(&claims);
        match self
            .store
            .update(key, current.rev, &new, &absent, &puts, &release)
            .await?
        {
            Write::Done(rev) => {
                for ip in &claims.ips {
                    self.ranges.mark_ip(*ip, true);
                }
                for p in &claims.ports {
                    self.ranges.mark_port(*p, true);
                }
                for ip in &claims.release_ips {
                    self.ranges.mark_ip(*ip, false);
                }
                for p in &claims.release_ports {
                    self.ranges.mark_port(*p, false);
                }
                set_rv(&mut new, rev);
                Ok(Some(new))
            }
            Write::Failed => {
                let now = self.store.get(key).await?;
                if now.as_ref().map(|s| s.rev) != Some(current.rev) {
                    if precondition.is_some() {
                        return Err(conflict(res, &name));
                    }
                    return Ok(None);
                }
                self.explain_claim_failure(res, &name, &claims, &ex).await?;
                Ok(None)
            }
        }
    }

    /// PUT: replaces an object or a subresource.
    pub async fn update(
        &self,
        t: &Target,
        body: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let name = t.name.as_deref().unwrap_or("");
        let rv_text = body["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        let precondition = match rv_text.as_deref() {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {v:?}")))?,
            ),
        };
        for _ in 0..RETRIES {
            let current = self.get_obj(t.res, t.namespace.as_deref(), name).await?;
            if let Some(o) = self
                .write_update(t, &current, body.clone(), q, warnings, precondition)
                .await?
            {
                return Ok(o);
            }
        }
        Err(conflict(t.res, name))
    }

    /// PATCH in any of the four patch types.
    pub async fn patch(
        &self,
        t: &Target,
        body: &[u8],
        media: &str,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let name = t.name.clone().unwrap_or_default();
        let apply = media == "application/apply-patch+yaml";
        let p: Value = match media {
            "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json" => serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?,
            "application/apply-patch+yaml" => crate::request::decode_body(body, "yaml")?,
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the patch content type {other:?} is not one of application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
                )));
            }
        };
        if apply {
            if q.get("fieldManager").is_none() {
                return Err(ApiError::BadRequest(
                    "PATCH with application/apply-patch+yaml requires the fieldManager parameter"
                        .into(),
                ));
            }
            if p["apiVersion"].as_str().is_none_or(str::is_empty)
                || p["kind"].as_str().is_none_or(str::is_empty)
            {
                return Err(ApiError::BadRequest(
                    "an apply configuration must set apiVersion and kind".into(),
                ));
            }
        }
        let precondition = match p["metadata"]["resourceVersion"].as_str() {
            Some(v) if !v.is_empty() => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {v:?}")))?,
            ),
            _ => None,
        };
        for _ in 0..RETRIES {
            let current = match self
                .store
                .get(&t.res.key(&self.store.prefix, t.namespace.as_deref(), &name))
                .await?
            {
                Some(c) => c,
                None if apply && t.sub.is_none() => {
                    let mut obj =
                        crate::apply::create(&p, q.get("fieldManager").unwrap_or(""), &now());
                    obj["metadata"]["name"] = json!(name);
                    let collection = Target {
                        name: None,
                        ..t.clone()
                    };
                    return self.create(&collection, obj, q, warnings).await;
                }
                None => return Err(not_found(t.res, &name)),
            };
            let mut view = if t.sub.as_deref() == Some("scale") {
                scale_of(t.res, &current.obj)?
            } else {
                current.obj.clone()
            };
            match media {
                "application/json-patch+json" => {
                    patch::json_patch(&mut view, &p).map_err(|e| ApiError::Invalid {
                        kind: t.res.kind.into(),
                        group: t.res.group.into(),
                        name: name.clone(),
                        causes: vec![Cause::invalid("", e)],
                    })?
                }
                "application/merge-patch+json" => patch::merge_patch(&mut view, &p),
                "application/apply-patch+yaml" if t.sub.is_none() => crate::apply::apply(
                    &mut view,
                    &p,
                    q.get("fieldManager").unwrap_or(""),
                    q.flag("force"),
                    &now(),
                )
                .map_err(|e| match e {
                    crate::apply::ApplyError::Merge(m) => ApiError::BadRequest(m),
                    c => ApiError::Conflict(c.to_string()),
                })?,
                _ => patch::strategic_merge_patch(&mut view, &p).map_err(ApiError::BadRequest)?,
            }
            if t.sub.as_deref() != Some("scale") {
                // The patch may not change identity.
                if view["metadata"]["name"] != current.obj["metadata"]["name"] {
                    return Err(ApiError::BadRequest(
                        "a patch may not change metadata.name".into(),
                    ));
                }
            }
            if let Some(o) = self
                .write_update(t, &current, view, q, warnings, precondition)
                .await?
            {
                if t.sub.as_deref() == Some("scale") {
                    return scale_of(t.res, &o);
                }
                return Ok(o);
            }
        }
        Err(conflict(t.res, &name))
    }

    /// DELETE one object. Returns the object as it ends (deleted, or marked for graceful
    /// deletion).
    pub async fn delete(&self, t: &Target, opts: &DeleteOptions) -> ApiResult<Value> {
        let res = t.res;
        let name = t.name.clone().unwrap_or_default();
        let ns = t.namespace.as_deref();
        for _ in 0..RETRIES {
            let current = self.get_obj(res, ns, &name).await?;
            let cur = &current.obj;
            if let Some(u) = &opts.uid
                && cur["metadata"]["uid"].as_str() != Some(u.as_str())
            {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    cur["metadata"]["uid"].as_str().unwrap_or("")
                )));
            }
            if let Some(r) = &opts.rv
                && *r != current.rev.to_string()
            {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {r}, ResourceVersion in object meta: {}",
                    current.rev
                )));
            }
            let mut marked = cur.clone();
            let mut mark = false;
            if res.kind == "Namespace" {
                if matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
                    return Err(ApiError::Forbidden(format!(
                        "namespace \"{name}\" is forbidden: this namespace may not be deleted"
                    )));
                }
                if !cur["metadata"]["deletionTimestamp"].is_null() {
                    return Ok(current.obj);
                }
                marked["metadata"]["deletionTimestamp"] = json!(now());
                marked["status"]["phase"] = json!("Terminating");
                mark = true;
            } else if res.kind == "Pod"
                && !cur["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
            {
                let grace = opts.grace.unwrap_or_else(|| {
                    cur["spec"]["terminationGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(30)
                });
                let existing = cur["metadata"]["deletionGracePeriodSeconds"].as_i64();
                if grace > 0 && existing.is_none_or(|e| grace < e) {
                    // The node agent stops the containers and finishes the deletion.
                    marked["metadata"]["deletionTimestamp"] = json!(now_plus(grace));
                    marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    mark = true;
                } else if grace > 0 {
                    return Ok(current.obj);
                }
            }
            if !mark
                && cur["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
            {
                if !cur["metadata"]["deletionTimestamp"].is_null() {
                    return Ok(current.obj);
                }
                marked["metadata"]["deletionTimestamp"] = json!(now());
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                mark = true;
            }
            if mark {
                match self
                    .store
                    .update(&current.key, current.rev, &marked, &[], &[], &[])
                    .await?
                {
                    Write::Done(rev) => {
                        set_rv(&mut marked, rev);
                        return Ok(marked);
                    }
                    Write::Failed => continue,
                }
            }
            let policy = opts
                .propagation
                .clone()
                .unwrap_or_else(|| "Background".into());
            let uid = cur["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            if policy == "Foreground" {
                crate::lifecycle::cascade(self, ns, &uid, "Foreground").await?;
            }
            let (ips, ports) = if res.kind == "Service" {
                Ranges::held(cur)
            } else {
                Default::default()
            };
            let release = self.release_keys(&services::Claims {
                release_ips: ips.clone(),
                release_ports: ports.clone(),
                ..Default::default()
            });
            match self
                .store
                .delete(&current.key, current.rev, &release)
                .await?
            {
                Write::Done(rev) => {
                    for ip in ips {
                        self.ranges.mark_ip(ip, false);
                    }
                    for p in ports {
                        self.ranges.mark_port(p, false);
                    }
                    if policy != "Foreground" {
                        crate::lifecycle::cascade(self, ns, &uid, &policy).await?;
                    }
                    let mut gone = current.obj.clone();
                    set_rv(&mut gone, rev);
                    return Ok(gone);
                }
                Write::Failed => continue,
            }
        }
        Err(conflict(res, &name))
    }

    /// POST pods/<name>/binding: assigns the pod to a node.
    pub async fn bind(&self, t: &Target, body: Value) -> ApiResult<Value> {
        let name = t.name.clone().unwrap_or_default();
        let node = body["target"]["name"].as_str().unwrap_or("").to_owned();
        if node.is_empty() {
            return Err(ApiError::Invalid {
                kind: "Binding".into(),
                group: "".into(),
                name,
                causes: vec![Cause::required("target.name")],
            });
        }
        for _ in 0..RETRIES {
            let current = self.get_obj(t.res, t.namespace.as_deref(), &name).await?;
            if let Some(on) = current.obj["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::Conflict(format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{on}\""
                )));
            }
            if !current.obj["metadata"]["deletionTimestamp"].is_null() {
                return Err(ApiError::Conflict(format!(
                    "pod {name} is being deleted, cannot be assigned to a host"
                )));
            }
            let mut o = current.obj.clone();
            o["spec"]["nodeName"] = json!(node);
            if let Write::Done(_) = self
                .store
                .update(&current.key, current.rev, &o, &[], &[], &[])
                .await?
            {
                return Ok(
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                );
            }
        }
        Err(conflict(t.res, &name))
    }
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
pub fn scale_of(res: &Resource, obj: &Value) -> ApiResult<Value> {
    let selector = LabelSelector::from_object(&obj["spec"]["selector"])
        .map(|s| s.to_text())
        .unwrap_or_default();
    let meta = &obj["metadata"];
    let mut m = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    let _ = res;
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_suffixes_look_like_kubernetes() {
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
        assert_ne!(uid(), u);
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(validate::dns_label(&format!("web-{s}")).is_ok());
    }

    #[test]
    fn delete_options_from_body_and_query() {
        let q = Query(
            [("propagationPolicy".to_owned(), "Foreground".to_owned())]
                .into_iter()
                .collect(),
        );
        let o = DeleteOptions::parse(
            Some(&json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u"}})),
            &q,
        )
        .unwrap();
        assert_eq!(
            (o.grace, o.propagation.as_deref(), o.uid.as_deref()),
            (Some(0), Some("Foreground"), Some("u"))
        );
        let bad = Query(
            [("propagationPolicy".to_owned(), "Sideways".to_owned())]
                .into_iter()
                .collect(),
        );
        assert!(DeleteOptions::parse(None, &bad).is_err());
    }

    #[test]
    fn scale_view_carries_the_selector() {
        let res = registry::find("apps", "v1", "deployments").unwrap();
        let d = json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = scale_of(res, &d).unwrap();
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["selector"], "app=web");
    }
}
