//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`, `/version`) and a
//! small `/openapi/v3` that tells kubectl every resource supports server-side field
//! validation, so `kubectl apply` works without `--validate=false`.

use serde_json::{Value, json};

use crate::registry::{self, RESOURCES, Resource};

/// The Kubernetes version this server speaks.
pub const KUBE_VERSION: &str = "v1.37.0";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "37", "gitVersion": format!("{KUBE_VERSION}+skein-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn groups() -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in registry::group_versions() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": names.iter().map(|g| group_doc(g)).collect::<Vec<_>>(),
    })
}

/// `/apis/<group>`.
pub fn group(name: &str) -> Option<Value> {
    let doc = group_doc(name);
    if doc["versions"].as_array().is_none_or(Vec::is_empty) {
        return None;
    }
    let mut doc = doc;
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn entries(r: &Resource) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
        "kind": r.kind, "verbs": VERBS, "shortNames": r.short_names, "categories": r.categories,
        "storageVersionHash": "",
    })];
    for sub in r.subresources {
        let (kind, group, version, verbs): (&str, &str, &str, &[&str]) = match *sub {
            "status" => (r.kind, "", "", &["get", "patch", "update"]),
            "scale" => ("Scale", "autoscaling", "v1", &["get", "patch", "update"]),
            "binding" => ("Binding", "", "", &["create"]),
            "log" => ("Pod", "", "", &["get"]),
            "exec" => ("PodExecOptions", "", "", &["create", "get"]),
            "finalize" => (r.kind, "", "", &["update"]),
            _ => continue,
        };
        let mut e = json!({
            "name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
            "kind": kind, "verbs": verbs,
        });
        if !group.is_empty() {
            e["group"] = json!(group);
            e["version"] = json!(version);
        }
        out.push(e);
    }
    out
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    let list: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(entries)
        .collect();
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in registry::group_versions() {
        let p = gv_path(g, v);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/g/v>`: the operations of one group-version, enough for
/// kubectl to see that PATCH accepts `fieldValidation`.
pub fn openapi_doc(gv: &str) -> Option<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    let params = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
    ]);
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = format!("/{}", gv_path(group, version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let collection = item.trim_end_matches("/{name}").to_owned();
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (skein)", "version": KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_subresources_and_groups() {
        let core = resources("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"pods/binding")
        );
        let apps = resources("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        let g = groups();
        let gnames: Vec<&str> = g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert_eq!(gnames, ["apps", "discovery.k8s.io", "coordination.k8s.io"]);
        assert!(resources("apps", "v2").is_none());
    }

    #[test]
    fn openapi_declares_field_validation_on_patch() {
        let doc = openapi_doc("apis/apps/v1").unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "fieldValidation")
        );
        assert!(openapi_index()["paths"].get("api/v1").is_some());
    }
}
