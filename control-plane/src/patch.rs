//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes
//! strategic merge patch (lists merged by key for the built-in types we serve, with the
//! `$patch`, `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList` directives).

use serde_json::{Map, Value};

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (None, Some(p)) => {
            let mut fresh = Value::Object(Map::new());
            merge_patch(&mut fresh, &Value::Object(p.clone()));
            *target = fresh;
        }
        _ => *target = patch.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}: must start with /"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok(cur)
}

fn pointer_get(doc: &Value, path: &str) -> Result<Value, String> {
    doc.pointer(path)
        .cloned()
        .ok_or_else(|| format!("path {path:?} does not exist"))
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid array index {last:?} in {path:?}"))?;
                if i > a.len() {
                    return Err(format!("array index {i} out of bounds in {path:?}"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("path {path:?}: parent is not a container")),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = split_pointer(path)?;
    let (last, parents) = tokens
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_owned())?;
    match parent_mut(doc, parents, path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {path:?} does not exist")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?} in {path:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of bounds in {path:?}"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

/// Applies an RFC 6902 JSON patch (all operations or none).
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let name = op["op"]
            .as_str()
            .ok_or(format!("operation {i}: missing \"op\""))?;
        let path = op["path"]
            .as_str()
            .ok_or(format!("operation {i}: missing \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("operation {i} ({name}): missing \"value\""))
        };
        let from = || {
            op["from"]
                .as_str()
                .ok_or(format!("operation {i} ({name}): missing \"from\""))
        };
        match name {
            "add" => add_at(&mut doc, path, value()?)?,
            "remove" => {
                remove_at(&mut doc, path)?;
            }
            "replace" => {
                remove_at(&mut doc, path)?;
                add_at(&mut doc, path, value()?)?;
            }
            "move" => {
                let v = remove_at(&mut doc, from()?)?;
                add_at(&mut doc, path, v)?;
            }
            "copy" => {
                let v = pointer_get(&doc, from()?)?;
                add_at(&mut doc, path, v)?;
            }
            "test" => {
                if pointer_get(&doc, path)? != value()? {
                    return Err(format!("operation {i}: test failed at {path:?}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    *target = doc;
    Ok(())
}

/// How a list field merges under a strategic merge patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// The patch list replaces the whole list (atomic lists).
    Replace,
    /// A list of primitives merged as a set (finalizers).
    Primitive,
    /// A list of objects merged by this key.
    Key(&'static str),
}

/// The merge strategy of the list at `path` (field names from the object root; list
/// items do not add a path element). Mirrors the patchStrategy/patchMergeKey tags of the
/// Kubernetes types we serve.
pub(crate) fn strategy(path: &[String]) -> ListStrategy {
    let Some(field) = path.last() else {
        return ListStrategy::Replace;
    };
    let in_container = path[..path.len() - 1]
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
    match field.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims" => ListStrategy::Key("name"),
        "env" if in_container => ListStrategy::Key("name"),
        "volumeMounts" if in_container => ListStrategy::Key("mountPath"),
        "volumeDevices" if in_container => ListStrategy::Key("devicePath"),
        "ports" if in_container => ListStrategy::Key("containerPort"),
        "ports" if path.len() == 2 && parent == Some("spec") => ListStrategy::Key("port"),
        "conditions" if parent == Some("status") => ListStrategy::Key("type"),
        "addresses" if path.len() == 2 && parent == Some("status") => ListStrategy::Key("type"),
        "hostAliases" => ListStrategy::Key("ip"),
        "podIPs" | "hostIPs" if parent == Some("status") => ListStrategy::Key("ip"),
        "ownerReferences" if parent == Some("metadata") => ListStrategy::Key("uid"),
        "finalizers" if parent == Some("metadata") => ListStrategy::Primitive,
        "topologySpreadConstraints" => ListStrategy::Key("topologyKey"),
        _ => ListStrategy::Replace,
    }
}

/// Applies a strategic merge patch to `target` (an object of a built-in kind).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p = patch
        .as_object()
        .ok_or("a strategic merge patch must be a JSON object")?;
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut path = Vec::new();
    if let Some(t) = target.as_object_mut() {
        merge_map(t, p, &mut path)?;
    }
    Ok(())
}

fn fresh_from(patch: &Map<String, Value>, path: &mut Vec<String>) -> Result<Value, String> {
    let mut m = Map::new();
    merge_map(&mut m, patch, path)?;
    Ok(Value::Object(m))
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut stripped = patch.clone();
            stripped.remove("$patch");
            orig.clear();
            return merge_map(orig, &stripped, path);
        }
        Some("delete") => {
            orig.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive $patch: {other:?}")),
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.remove(k);
                } else if let Some(Value::Object(om)) = orig.get_mut(k) {
                    merge_map(om, pm, path)?;
                } else {
                    orig.insert(k.clone(), fresh_from(pm, path)?);
                }
            }
            Value::Array(pl) => {
                let merged = merge_list(orig.get(k), pl, path)?;
                orig.insert(k.clone(), merged);
            }
            other => {
                orig.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|x| !gone.contains(x));
            }
        }
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            path.push(field.to_owned());
            let strat = strategy(path);
            path.pop();
            let order = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                reorder(list, &order, &strat);
            }
        }
    }
    if let Some(keep) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key).filter(|v| !v.is_null())
}

fn reorder(list: &mut Vec<Value>, order: &[Value], strat: &ListStrategy) {
    let pos = |item: &Value| -> Option<usize> {
        order.iter().position(|o| match strat {
            ListStrategy::Key(k) => key_of(o, k).is_some() && key_of(o, k) == key_of(item, k),
            _ => o == item,
        })
    };
    let mut indexed: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| (pos(&v).unwrap_or(usize::MAX), i, v))
        .collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    list.extend(indexed.into_iter().map(|(_, _, v)| v));
}

fn merge_list(
    orig: Option<&Value>,
    patch: &[Value],
    path: &mut Vec<String>,
) -> Result<Value, String> {
    let strat = strategy(path);
    let orig_list = orig.and_then(Value::as_array).cloned().unwrap_or_default();
    let replace_all = patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    match strat {
        ListStrategy::Replace => {
            let mut out = Vec::new();
            for item in patch {
                out.push(match item {
                    Value::Object(m) => fresh_from(m, path)?,
                    other => other.clone(),
                });
            }
            Ok(Value::Array(out))
        }
        ListStrategy::Primitive => {
            let mut out = if replace_all { Vec::new() } else { orig_list };
            for item in patch {
                if item.is_object() {
                    continue;
                }
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListStrategy::Key(key) => {
            let mut out = if replace_all { Vec::new() } else { orig_list };
            for item in patch {
                let Some(pm) = item.as_object() else {
                    return Err(format!(
                        "{}: list items must be objects with merge key {key:?}",
                        path.join(".")
                    ));
                };
                let directive = pm.get("$patch").and_then(Value::as_str);
                if directive == Some("replace") {
                    continue;
                }
                let Some(kv) = key_of(item, key) else {
                    return Err(format!(
                        "{}: an element has no merge key {key:?}",
                        path.join(".")
                    ));
                };
                let found = out.iter().position(|o| key_of(o, key) == Some(kv));
                match (directive, found) {
                    (Some("delete"), Some(i)) => {
                        out.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => {
                        if let Some(om) = out[i].as_object_mut() {
                            merge_map(om, pm, path)?;
                        }
                    }
                    (_, None) => out.push(fresh_from(pm, path)?),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "l": [3]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops_and_atomicity() {
        let mut t = json!({"spec": {"replicas": 1, "l": ["a"]}});
        json_patch(
            &mut t,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/l/-", "value": "b"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copy"},
                {"op": "test", "path": "/spec/copy", "value": 3},
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"spec": {"replicas": 3, "l": ["a", "b"], "copy": 3}})
        );
        let before = t.clone();
        let err = json_patch(
            &mut t,
            &json!([
                {"op": "remove", "path": "/spec/replicas"},
                {"op": "remove", "path": "/spec/missing"},
            ]),
        )
        .unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert_eq!(t, before, "a failed patch changes nothing");
    }

    fn deployment(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn strategic_patch_merges_containers_by_name_and_keeps_ports() {
        let mut live = deployment(json!([
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox", "ports": [{"containerPort": 9000}]},
        ]));
        // What `kubectl apply` sends when only the first image changes.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "nginx:1.27"}],
        }}}});
        strategic_merge_patch(&mut live, &patch).unwrap();
        let cs = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "nginx:1.27");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[1]["name"], "side");
        assert_eq!(cs[1]["ports"][0]["containerPort"], 9000);
    }

    #[test]
    fn strategic_patch_directives() {
        let mut live = json!({
            "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {
                "ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {"containers": [{"name": "a", "env": [{"name": "K", "value": "1"}]}]}},
            }
        });
        let patch = json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"],
                         "labels": {"$patch": "replace", "z": "3"}},
            "spec": {
                "ports": [{"port": 443, "$patch": "delete"}, {"port": 8080, "name": "alt"}],
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                "template": {"spec": {"containers": [{"name": "a", "env": [{"name": "L", "value": "2"}]}]}},
            }
        });
        strategic_merge_patch(&mut live, &patch).unwrap();
        assert_eq!(live["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(live["metadata"]["labels"], json!({"z": "3"}));
        assert_eq!(
            live["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 8080, "name": "alt"}])
        );
        assert_eq!(live["spec"]["strategy"], json!({"type": "Recreate"}));
        let env = &live["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env.as_array().unwrap().len(), 2);
    }

    #[test]
    fn strategic_patch_replaces_atomic_lists_and_deletes_null_keys() {
        let mut live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "args": ["x", "y"], "image": "i"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "args": ["z"], "image": null}]}}}});
        strategic_merge_patch(&mut live, &patch).unwrap();
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "a", "args": ["z"]})
        );
    }
}
