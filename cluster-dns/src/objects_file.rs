//! The file input: a Kubernetes `List` (JSON or YAML) of Services and EndpointSlices,
//! as `kubectl get services,endpointslices -A -o json` prints it. For tests, and for
//! operators who want to see what the server would answer for a given cluster state.

use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::Error;

/// Services and EndpointSlices read from one source.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// The Services.
    pub services: Vec<Service>,
    /// The EndpointSlices.
    pub slices: Vec<EndpointSlice>,
}

/// Reads a `List` file. Every item must be a `v1` Service or a `discovery.k8s.io/v1`
/// EndpointSlice; anything else is an error naming the item.
pub fn read(path: &Path) -> Result<Objects, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("read {}", path.display()),
        source,
    })?;
    parse(&text).map_err(|reason| Error::ObjectsFile {
        path: path.to_owned(),
        reason,
    })
}

/// Parses the text of a `List` (JSON is YAML, so one parser reads both).
pub fn parse(text: &str) -> Result<Objects, String> {
    let list: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not JSON or YAML: {e}"))?;
    let kind = list
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    if kind != "List" && !kind.ends_with("List") {
        return Err(format!("expected kind List, found {kind:?}"));
    }
    let items = match list.get("items") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(serde_json::Value::Null) | None => Vec::new(),
        Some(_) => return Err("items is not an array".into()),
    };
    let mut out = Objects::default();
    for (i, item) in items.into_iter().enumerate() {
        let kind = item
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let api = item
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let name = item
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        let what = format!("item {i} ({kind} {name:?})");
        match (api, kind) {
            ("v1", "Service") => out
                .services
                .push(serde_json::from_value(item).map_err(|e| format!("{what}: {e}"))?),
            ("discovery.k8s.io/v1", "EndpointSlice") => out
                .slices
                .push(serde_json::from_value(item).map_err(|e| format!("{what}: {e}"))?),
            _ => {
                return Err(format!(
                    "{what}: apiVersion {api:?} kind {kind:?} is neither a v1 Service nor a discovery.k8s.io/v1 EndpointSlice"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_json_list_of_services_and_slices() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
             "spec":{"clusterIP":"10.96.0.20"}},
            {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
             "metadata":{"name":"web-1","namespace":"default"},"addressType":"IPv4",
             "endpoints":[{"addresses":["10.244.1.2"]}]}]}"#;
        let o = parse(text).unwrap();
        assert_eq!(o.services.len(), 1);
        assert_eq!(o.slices.len(), 1);
        assert_eq!(
            o.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.96.0.20")
        );
    }

    #[test]
    fn reads_yaml_and_an_empty_list() {
        let o = parse("kind: List\napiVersion: v1\nitems: []\n").unwrap();
        assert!(o.services.is_empty() && o.slices.is_empty());
        let o = parse("kind: ServiceList\napiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: b}\n").unwrap();
        assert_eq!(o.services.len(), 1);
    }

    #[test]
    fn rejects_what_it_cannot_serve_naming_the_item() {
        let e = parse(
            r#"{"kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("item 0 (Pod \"p\")"), "{e}");
        let e = parse(r#"{"kind":"Service"}"#).unwrap_err();
        assert!(e.contains("expected kind List"), "{e}");
        let e = parse("{not json").unwrap_err();
        assert!(e.contains("not JSON or YAML"), "{e}");
        let e = parse(r#"{"kind":"List","items":[{"apiVersion":"v1","kind":"Service","spec":{"ports":"x"}}]}"#)
            .unwrap_err();
        assert!(e.starts_with("item 0 (Service \"\")"), "{e}");
    }
}
