//! Server-side apply with managedFields: the fields an apply configuration sets are
//! recorded for its field manager (`metadata.managedFields`, operation `Apply`,
//! `fieldsV1`), and fields that manager applied before but left out of its new
//! configuration are removed from the object, unless another manager also owns them.
//!
//! ```text
//! live object + apply config (manager M)
//!   ├─ merge: the config into the object (strategic merge: lists by their keys)
//!   ├─ prune: M's previous Apply set − the config's set − other managers' sets
//!   └─ record: M's entry := {manager: M, operation: Apply, fieldsV1: config's set}
//! ```
//!
//! Field sets use the fieldsV1 encoding: `f:<field>` for object fields and map keys,
//! `k:<json of the merge key>` for items of keyed lists (with `.` for the item itself),
//! `v:<json>` for items of set lists; atomic lists and scalars are leaves `{}`. The
//! list keys are those of strategic merge ([`crate::patch::ListStrategy`]).
//!
//! Conflicts: a field the configuration sets to a value different from the live one,
//! while another manager's entry holds it, refuses the apply (409, naming the manager
//! and the field) unless `force=true`, which moves the field to this manager.

use serde_json::{Map, Value, json};

use crate::patch::{self, ListStrategy};

/// Metadata fields the server owns or that identify the object: never in a field set.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fieldsV1 set of an apply configuration (apiVersion, kind, status and the
/// server's metadata left out).
pub fn field_set(config: &Value) -> Value {
    let mut top = config.as_object().cloned().unwrap_or_default();
    for k in ["apiVersion", "kind", "status"] {
        top.remove(k);
    }
    if let Some(Value::Object(meta)) = top.get_mut("metadata") {
        for k in SERVER_META {
            meta.remove(*k);
        }
        if meta.is_empty() {
            top.remove("metadata");
        }
    }
    Value::Object(set_of(&top, &mut Vec::new()))
}

fn set_of(obj: &Map<String, Value>, path: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        if v.is_null() || k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        let child = match v {
            Value::Object(m) if !m.is_empty() => Value::Object(set_of(m, path)),
            Value::Array(items) => list_set(items, path),
            _ => json!({}),
        };
        path.pop();
        out.insert(format!("f:{k}"), child);
    }
    out
}

fn list_set(items: &[Value], path: &mut Vec<String>) -> Value {
    match patch::strategy(path) {
        ListStrategy::Key(key) => {
            let mut out = Map::new();
            for item in items {
                let (Some(obj), Some(k)) = (item.as_object(), item.get(key)) else {
                    // An item without its key cannot be tracked: own the list whole.
                    return json!({});
                };
                let mut child = set_of(obj, path);
                child.insert(".".into(), json!({}));
                out.insert(format!("k:{}", json!({ key: k })), Value::Object(child));
            }
            Value::Object(out)
        }
        ListStrategy::Primitive => Value::Object(
            items
                .iter()
                .map(|v| (format!("v:{v}"), json!({})))
                .collect(),
        ),
        ListStrategy::Replace => json!({}),
    }
}

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// An object field or map key.
    Field(String),
    /// The item of a keyed list whose key fields have these values.
    Key(Map<String, Value>),
    /// The item of a set list with this value.
    Value(Value),
}

fn step(key: &str) -> Option<Step> {
    if let Some(f) = key.strip_prefix("f:") {
        return Some(Step::Field(f.to_owned()));
    }
    if let Some(k) = key.strip_prefix("k:") {
        return serde_json::from_str::<Map<String, Value>>(k)
            .ok()
            .map(Step::Key);
    }
    key.strip_prefix("v:")
        .and_then(|v| serde_json::from_str(v).ok())
        .map(Step::Value)
}

/// Whether `set` owns the member at `path` (a leaf, or a list item marked `.`), not
/// just something below it.
fn owns(set: &Value, path: &[String]) -> bool {
    let node = path.iter().try_fold(set, |cur, k| cur.get(k));
    node.and_then(Value::as_object)
        .is_some_and(|m| m.is_empty() || m.contains_key("."))
}

/// Whether `set` holds the node at `path`.
fn holds(set: &Value, path: &[String]) -> bool {
    match path.split_first() {
        None => true,
        Some((first, rest)) => set.get(first).is_some_and(|s| holds(s, rest)),
    }
}

/// The owned members (as paths of fieldsV1 keys) of `old` that `new` lacks. Members are
/// the leaves `{}` and the list items marked `.`; a parent such as `f:metadata` is only
/// implied by its members, so dropping `metadata.labels.app` removes that label, not
/// `metadata`.
fn removed(old: &Value, new: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(old) = old.as_object() else { return };
    let empty = json!({});
    for (k, sub) in old {
        if k == "." {
            continue;
        }
        path.push(k.clone());
        let member = sub
            .as_object()
            .is_none_or(|m| m.is_empty() || m.contains_key("."));
        match new.get(k) {
            None if member => out.push(path.clone()),
            None => removed(sub, &empty, path, out),
            Some(n) => removed(sub, n, path, out),
        }
        path.pop();
    }
}

/// Removes the node at `path` from `obj`; absent nodes are fine.
fn remove_at(obj: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        let next = match (s, cur) {
            (Step::Field(f), Value::Object(m)) => m.get_mut(f),
            (Step::Key(k), Value::Array(a)) => a.iter_mut().find(|i| matches_key(i, k)),
            (Step::Value(v), Value::Array(a)) => a.iter_mut().find(|i| *i == v),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (Step::Field(f), Value::Object(m)) => {
            m.remove(f);
        }
        (Step::Key(k), Value::Array(a)) => a.retain(|i| !matches_key(i, k)),
        (Step::Value(v), Value::Array(a)) => a.retain(|i| i != v),
        _ => {}
    }
}

fn matches_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// The fieldsV1 set of manager `manager`'s Apply entry in `obj`, if any.
fn applied_set<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == "Apply")
        .map(|e| &e["fieldsV1"])
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The configuration cannot be merged.
    #[error("{0}")]
    Merge(String),
    /// Fields other managers own with other values: (manager, field path).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<(String, String)>),
}

fn conflict_message(c: &[(String, String)]) -> String {
    let n = c.len();
    let list: Vec<String> = c
        .iter()
        .map(|(m, p)| format!("conflict with \"{m}\": {p}"))
        .collect();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        list.join("\n")
    )
}

/// The value at `path` in `obj`, if present.
fn value_at<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, s| match (s, cur) {
        (Step::Field(f), Value::Object(m)) => m.get(f),
        (Step::Key(k), Value::Array(a)) => a.iter().find(|i| matches_key(i, k)),
        (Step::Value(v), Value::Array(a)) => a.iter().find(|i| *i == v),
        _ => None,
    })
}

/// `.spec.template.spec.containers[name="web"].image`, as kube-apiserver prints it.
fn display(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Field(f) => format!(".{f}"),
            Step::Key(k) => {
                let parts: Vec<String> = k.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Step::Value(v) => format!("[={v}]"),
        })
        .collect()
}

/// The leaves (paths of fieldsV1 keys) of a set.
fn leaves(set: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(m) = set.as_object() else { return };
    for (k, sub) in m {
        if k == "." {
            continue;
        }
        path.push(k.clone());
        if sub.as_object().is_none_or(Map::is_empty) {
            out.push(path.clone());
        } else {
            leaves(sub, path, out);
        }
        path.pop();
    }
}

/// Removes `path` from a set, and the parents it leaves empty.
fn unown(set: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(m) = set.as_object_mut() else { return };
    if rest.is_empty() {
        m.remove(first);
    } else if let Some(sub) = m.get_mut(first) {
        unown(sub, rest);
        if sub.as_object().is_some_and(|c| c.keys().all(|k| k == ".")) {
            m.remove(first);
        }
    }
}

/// Conflicts of `set` (with values from `config`) against other managers' entries in
/// `live`; with `force`, those fields leave the other entries instead.
fn settle(
    live: &mut Value,
    config: &Value,
    set: &Value,
    manager: &str,
    force: bool,
) -> Result<(), ApplyError> {
    let mut paths = Vec::new();
    leaves(set, &mut Vec::new(), &mut paths);
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Vec<String>)> = Vec::new();
    let entries = live["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for path in &paths {
        let Some(steps) = path.iter().map(|k| step(k)).collect::<Option<Vec<_>>>() else {
            continue;
        };
        let (ours, theirs) = (value_at(config, &steps), value_at(live, &steps));
        for (i, e) in entries.iter().enumerate() {
            if (e["manager"] == manager && e["operation"] == "Apply") || !owns(&e["fieldsV1"], path)
            {
                continue;
            }
            if ours != theirs {
                conflicts.push((
                    e["manager"].as_str().unwrap_or("").to_owned(),
                    display(&steps),
                ));
                taken.push((i, path.clone()));
            }
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    if let Some(a) = live["metadata"]["managedFields"].as_array_mut() {
        for (i, path) in taken {
            unown(&mut a[i]["fieldsV1"], &path);
        }
        a.retain(|e| e["fieldsV1"].as_object().is_none_or(|m| !m.is_empty()));
    }
    Ok(())
}

/// Applies `config` for `manager` to the live object `live` (in place): settle
/// conflicts (refused, or taken over with `force`), merge, prune what the manager
/// dropped, record its managedFields entry at time `now`.
pub fn apply(
    live: &mut Value,
    config: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<(), ApplyError> {
    let set = field_set(config);
    settle(live, config, &set, manager, force)?;
    let previous = applied_set(live, manager).cloned().unwrap_or(json!({}));
    let others: Vec<Value> = live["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
                .map(|e| e["fieldsV1"].clone())
                .collect()
        })
        .unwrap_or_default();
    let mut merged_config = config.clone();
    if let Some(m) = merged_config["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    patch::strategic_merge_patch(live, &merged_config).map_err(ApplyError::Merge)?;
    let mut gone = Vec::new();
    removed(&previous, &set, &mut Vec::new(), &mut gone);
    for path in gone {
        if others.iter().any(|o| holds(o, &path)) {
            continue;
        }
        let steps: Option<Vec<Step>> = path.iter().map(|k| step(k)).collect();
        if let Some(steps) = steps {
            remove_at(live, &steps);
        }
    }
    record(live, config, manager, set, now);
    Ok(())
}

/// Sets `manager`'s Apply entry in `obj`'s managedFields to `set`; its time stays
/// when the set is the same as before (an apply that changes nothing).
pub fn record(obj: &mut Value, config: &Value, manager: &str, set: Value, now: &str) {
    let api_version = config["apiVersion"]
        .as_str()
        .or(obj["apiVersion"].as_str())
        .unwrap_or("v1")
        .to_owned();
    let now = match applied_set(obj, manager) {
        Some(before) if *before == set => obj["metadata"]["managedFields"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|e| e["manager"] == manager && e["operation"] == "Apply")
            })
            .and_then(|e| e["time"].as_str())
            .unwrap_or(now)
            .to_owned(),
        _ => now.to_owned(),
    };
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": set,
    });
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Apply"));
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

/// The object server-side apply creates from `config` when none exists.
pub fn create(config: &Value, manager: &str, now: &str) -> Value {
    let mut obj = config.clone();
    let set = field_set(config);
    record(&mut obj, config, manager, set, now);
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-23T18:00:00Z";

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": 2, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn field_sets_use_the_fieldsv1_encoding() {
        let d = deployment(json!([
            {"name": "web", "image": "nginx", "args": ["a"], "ports": [{"containerPort": 80}]}
        ]));
        let set = field_set(&d);
        assert_eq!(
            set,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {
                        ".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                        "f:ports": {"k:{\"containerPort\":80}": {".": {}, "f:containerPort": {}}}
                    }
                }}}}
            })
        );
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "c", "finalizers": ["x"]}, "data": {"a": "1"}});
        assert_eq!(
            field_set(&cm),
            json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}}}, "f:data": {"f:a": {}}})
        );
    }

    #[test]
    fn fields_the_manager_dropped_are_pruned_and_others_kept() {
        let first = deployment(json!([
            {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 81}]},
            {"name": "side", "image": "busybox"}
        ]));
        let mut live = create(&first, "kubectl", NOW);
        assert_eq!(live["metadata"]["managedFields"][0]["operation"], "Apply");
        // Another writer adds an annotation and an env var: not the applier's.
        live["metadata"]["annotations"] = json!({"note": "kept"});
        live["spec"]["paused"] = json!(false);
        live["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"manager": "other", "operation": "Update",
                         "fieldsV1": {"f:spec": {"f:paused": {}}}}));
        // The applier drops the label, replicas, the side container and port 81; and
        // paused, which it never owned alone.
        let second = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}]}}}});
        apply(&mut live, &second, "kubectl", false, NOW).unwrap();
        assert_eq!(live["metadata"].get("labels"), Some(&json!({})));
        assert_eq!(live["metadata"]["annotations"]["note"], "kept");
        assert!(live["spec"].get("replicas").is_none(), "{live}");
        assert_eq!(live["spec"]["paused"], false);
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}])
        );
        let entries = live["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let mine = entries.iter().find(|e| e["manager"] == "kubectl").unwrap();
        assert_eq!(mine["fieldsV1"], field_set(&second));
        assert_eq!(mine["apiVersion"], "apps/v1");
        assert_eq!(mine["fieldsType"], "FieldsV1");
        // The same configuration again changes nothing, not even the entry's time.
        let before = live.clone();
        apply(&mut live, &second, "kubectl", false, "2030-01-01T00:00:00Z").unwrap();
        assert_eq!(live, before);
    }

    #[test]
    fn a_field_another_manager_also_owns_survives_pruning() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let mut live = create(&first, "mine", NOW);
        let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "c"}, "data": {"b": "2"}});
        apply(&mut live, &theirs, "theirs", false, NOW).unwrap();
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "c"}, "data": {}});
        apply(&mut live, &second, "mine", false, NOW).unwrap();
        assert_eq!(live["data"], json!({"b": "2"}));
    }

    #[test]
    fn another_managers_field_with_another_value_conflicts_unless_forced() {
        let mine = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let mut live = create(&mine, "mine", NOW);
        // The same value is shared ownership, not a conflict.
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "c"}, "data": {"a": "1"}});
        apply(&mut live, &same, "theirs", false, NOW).unwrap();
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "c"}, "data": {"a": "1", "b": "9"}});
        let e = apply(&mut live, &other, "theirs", false, NOW).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Apply failed with 1 conflict: conflict with \"mine\": .data.b"
        );
        assert_eq!(live["data"]["b"], "2", "nothing changes on conflict");
        apply(&mut live, &other, "theirs", true, NOW).unwrap();
        assert_eq!(live["data"]["b"], "9");
        let entries = live["metadata"]["managedFields"].as_array().unwrap();
        let set_of = |m: &str| &entries.iter().find(|e| e["manager"] == m).unwrap()["fieldsV1"];
        assert_eq!(set_of("mine"), &json!({"f:data": {"f:a": {}}}));
        assert_eq!(set_of("theirs"), &json!({"f:data": {"f:a": {}, "f:b": {}}}));
        let path = vec![
            Step::Field("spec".into()),
            Step::Key(json!({"name": "web"}).as_object().unwrap().clone()),
            Step::Field("image".into()),
        ];
        assert_eq!(display(&path), ".spec[name=\"web\"].image");
    }
}
