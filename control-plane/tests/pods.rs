//! Pod lifecycle through the API: binding to a node, graceful deletion of bound pods
//! (the node agent finishes it), immediate deletion of unbound ones, and the status
//! subresource.

mod support;

use serde_json::Value;
use support::Api;

const PODS: &str = "/api/v1/namespaces/default/pods";

fn create(api: &Api, name: &str) {
    let body = format!(
        r#"{{"metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    );
    let (code, resp) = api
        .http("POST", PODS, Some(("application/json", &body)))
        .unwrap();
    assert_eq!(code, 201, "{resp}");
}

fn get(api: &Api, name: &str) -> (u16, Value) {
    let (code, body) = api.http("GET", &format!("{PODS}/{name}"), None).unwrap();
    (code, serde_json::from_str(&body).unwrap())
}

#[test]
fn binding_graceful_deletion_and_status() {
    let api = Api::start();
    create(&api, "bound");
    create(&api, "loose");
    let (_, p) = get(&api, "bound");
    assert_eq!(p["status"]["phase"], "Pending");
    // Bind: sets spec.nodeName once; a second binding is a conflict.
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"bound"},"target":{"kind":"Node","name":"node1"}}"#;
    let (code, resp) = api
        .http(
            "POST",
            &format!("{PODS}/bound/binding"),
            Some(("application/json", binding)),
        )
        .unwrap();
    assert_eq!(code, 201, "{resp}");
    let (code, _) = api
        .http(
            "POST",
            &format!("{PODS}/bound/binding"),
            Some(("application/json", binding)),
        )
        .unwrap();
    assert_eq!(code, 409);
    assert_eq!(get(&api, "bound").1["spec"]["nodeName"], "node1");
    // Status subresource: the node agent reports; the spec is untouched.
    let status = r#"{"status":{"phase":"Running","podIP":"10.244.1.7"}}"#;
    let (code, resp) = api
        .http(
            "PATCH",
            &format!("{PODS}/bound/status"),
            Some(("application/merge-patch+json", status)),
        )
        .unwrap();
    assert_eq!(code, 200, "{resp}");
    let (_, p) = get(&api, "bound");
    assert_eq!(
        (p["status"]["phase"].as_str(), p["status"]["podIP"].as_str()),
        (Some("Running"), Some("10.244.1.7"))
    );
    // A status change through the main resource is ignored (status has its own endpoint).
    let (code, _) = api
        .http(
            "PATCH",
            &format!("{PODS}/bound"),
            Some((
                "application/merge-patch+json",
                r#"{"status":{"phase":"Failed"}}"#,
            )),
        )
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(get(&api, "bound").1["status"]["phase"], "Running");
    // Deleting a bound pod marks it; the node agent's gracePeriodSeconds=0 finishes it.
    let (code, resp) = api.http("DELETE", &format!("{PODS}/bound"), None).unwrap();
    assert_eq!(code, 200, "{resp}");
    let (code, p) = get(&api, "bound");
    assert_eq!(code, 200, "a bound pod stays until its node agent stops it");
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, _) = api
        .http(
            "DELETE",
            &format!("{PODS}/bound?gracePeriodSeconds=0"),
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(get(&api, "bound").0, 404);
    // An unbound pod goes at once.
    let (code, _) = api.http("DELETE", &format!("{PODS}/loose"), None).unwrap();
    assert_eq!(code, 200);
    assert_eq!(get(&api, "loose").0, 404);
}
