//! Status errors (400, 401, 404, 409, 410, 413, 415, 422) with nothing stored on bad
//! input; token authentication; 100 concurrent Service creates.

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::Api;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

#[test]
fn bad_input_gets_a_4xx_naming_the_problem_and_stores_nothing() {
    let api = Api::start();
    let post = |path: &str, ct: &str, body: &str| api.http("POST", path, Some((ct, body))).unwrap();
    let json_ct = "application/json";
    // (what, path, content type, body, code, reason, text in the message)
    let cases: Vec<(&str, String, &str, String, u16, &str, &str)> = vec![
        ("malformed JSON", CMS.into(), json_ct, "{\"metadata\": {".into(), 400, "BadRequest", "error decoding JSON"),
        ("malformed YAML", CMS.into(), "application/yaml", "metadata: [unclosed".into(), 400, "BadRequest", "error decoding YAML"),
        ("unknown field, strict", format!("{CMS}?fieldValidation=Strict"), json_ct, r#"{"metadata":{"name":"u"},"bogus":1}"#.into(), 400, "BadRequest", "unknown field \"bogus\""),
        ("wrong field type", CMS.into(), json_ct, r#"{"metadata":{"name":"t"},"data":{"k":5}}"#.into(), 400, "BadRequest", "cannot be handled as a ConfigMap"),
        ("invalid name", CMS.into(), json_ct, r#"{"metadata":{"name":"Bad_Name"}}"#.into(), 422, "Invalid", "metadata.name"),
        ("missing name", CMS.into(), json_ct, r#"{"metadata":{}}"#.into(), 422, "Invalid", "metadata.name: Required value"),
        ("invalid label", CMS.into(), json_ct, r#"{"metadata":{"name":"l","labels":{"a b":"c"}}}"#.into(), 422, "Invalid", "metadata.labels"),
        ("apiVersion not matching the URL", CMS.into(), json_ct, r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"v"}}"#.into(), 400, "BadRequest", "does not match the expected API version"),
        ("kind not matching the URL", CMS.into(), json_ct, r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"k"}}"#.into(), 400, "BadRequest", "does not match the expected kind"),
        ("namespace not matching the URL", CMS.into(), json_ct, r#"{"metadata":{"name":"n","namespace":"other"}}"#.into(), 400, "BadRequest", "does not match the namespace"),
        ("missing namespace", "/api/v1/namespaces/nope/configmaps".into(), json_ct, r#"{"metadata":{"name":"m"}}"#.into(), 404, "NotFound", "namespaces \"nope\" not found"),
        ("protobuf body without a kind", CMS.into(), "application/vnd.kubernetes.protobuf", "k8s\0".into(), 400, "BadRequest", "names no kind"),
        ("unknown resource", "/api/v1/namespaces/default/widgets".into(), json_ct, "{}".into(), 404, "NotFound", "could not find the requested resource"),
        ("deployment without selector", "/apis/apps/v1/namespaces/default/deployments".into(), json_ct,
            r#"{"metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":[{"name":"a","image":"x"}]}}}}"#.into(), 422, "Invalid", "spec.selector"),
        ("service with a bad port", "/api/v1/namespaces/default/services".into(), json_ct,
            r#"{"metadata":{"name":"s"},"spec":{"ports":[{"port":0}]}}"#.into(), 422, "Invalid", "spec.ports[0].port"),
        ("service with a bad type", "/api/v1/namespaces/default/services".into(), json_ct,
            r#"{"metadata":{"name":"s"},"spec":{"type":"Magic","ports":[{"port":80}]}}"#.into(), 422, "Invalid", "spec.type"),
        ("service with a node port outside the range", "/api/v1/namespaces/default/services".into(), json_ct,
            r#"{"metadata":{"name":"s"},"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":80}]}}"#.into(), 422, "Invalid", "not in the valid range"),
        ("service with a cluster IP outside the range", "/api/v1/namespaces/default/services".into(), json_ct,
            r#"{"metadata":{"name":"s"},"spec":{"clusterIP":"192.0.2.1","ports":[{"port":80}]}}"#.into(), 422, "Invalid", "not in the valid range"),
        ("service taking the kubernetes address", "/api/v1/namespaces/default/services".into(), json_ct,
            r#"{"metadata":{"name":"s"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}}"#.into(), 422, "Invalid", "already allocated"),
    ];
    for (what, path, ct, body, code, reason, text) in &cases {
        let (got, resp) = post(path, ct, body);
        assert_eq!(got, *code, "{what}: {resp}");
        let s = status(&resp);
        assert_eq!(s["kind"], "Status", "{what}");
        assert_eq!(s["reason"], *reason, "{what}: {resp}");
        assert_eq!(s["code"], *code, "{what}");
        assert!(
            s["message"].as_str().unwrap().contains(text),
            "{what}: {resp}"
        );
    }
    // A body over 3 MiB is refused from its Content-Length, before it is read.
    let (code, resp) = api
        .http_raw(&format!(
            "POST {CMS} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
            4 << 20
        ))
        .unwrap();
    assert_eq!(code, 413, "{resp}");
    assert_eq!(status(&resp)["reason"], "RequestEntityTooLarge");
    // 422 carries causes with the field.
    let (_, resp) = post(CMS, json_ct, r#"{"metadata":{"name":"Bad_Name"}}"#);
    assert_eq!(
        status(&resp)["details"]["causes"][0]["field"],
        "metadata.name"
    );
    // Nothing was stored by any of them.
    let (_, list) = api.http("GET", CMS, None).unwrap();
    assert_eq!(status(&list)["items"], json!([]), "{list}");
    let (_, svcs) = api
        .http("GET", "/api/v1/namespaces/default/services", None)
        .unwrap();
    assert_eq!(
        status(&svcs)["items"].as_array().unwrap().len(),
        1,
        "only the kubernetes Service: {svcs}"
    );

    // Unknown fields without Strict: stored without them, with a warning.
    let (code, _) = post(
        &format!("{CMS}?fieldValidation=Warn"),
        json_ct,
        r#"{"metadata":{"name":"w"},"bogus":1}"#,
    );
    assert_eq!(code, 201);
    let (_, got) = api.http("GET", &format!("{CMS}/w"), None).unwrap();
    assert!(status(&got).get("bogus").is_none());

    // 404, 409 AlreadyExists, 409 stale resourceVersion.
    let (code, resp) = api.http("GET", &format!("{CMS}/missing"), None).unwrap();
    assert_eq!(
        (code, status(&resp)["message"].as_str().unwrap()),
        (404, "configmaps \"missing\" not found")
    );
    let (code, _) = post(CMS, json_ct, r#"{"metadata":{"name":"w"}}"#);
    assert_eq!(code, 409);
    let (_, cur) = api.http("GET", &format!("{CMS}/w"), None).unwrap();
    let rv = status(&cur)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |rv: &str, v: &str| {
        let body =
            json!({"metadata": {"name": "w", "resourceVersion": rv}, "data": {"v": v}}).to_string();
        api.http("PUT", &format!("{CMS}/w"), Some((json_ct, &body)))
            .unwrap()
    };
    assert_eq!(put(&rv, "1").0, 200);
    let (code, resp) = put(&rv, "2");
    assert_eq!(code, 409, "{resp}");
    assert!(resp.contains("the object has been modified"), "{resp}");
    // 410 for a list at a compacted revision.
    let (_, cur) = api.http("GET", &format!("{CMS}/w"), None).unwrap();
    let rv_now = status(&cur)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let etcd = api.bed.etcd();
    skein_testbed::run_checked(
        etcd.etcdctl(api.bed.node(1))
            .unwrap()
            .args(["compact", &rv_now]),
    )
    .unwrap();
    let (code, resp) = api
        .http(
            "GET",
            &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            None,
        )
        .unwrap();
    assert_eq!(code, 410, "{resp}");
    assert_eq!(status(&resp)["reason"], "Expired");
    // Patches: merge, JSON patch (atomic), and a failing JSON patch test op.
    let (code, resp) = api
        .http(
            "PATCH",
            &format!("{CMS}/w"),
            Some(("application/merge-patch+json", r#"{"data":{"m":"1"}}"#)),
        )
        .unwrap();
    assert_eq!(code, 200, "{resp}");
    assert_eq!(status(&resp)["data"]["m"], "1");
    let (code, resp) = api.http("PATCH", &format!("{CMS}/w"), Some(("application/json-patch+json", r#"[{"op":"add","path":"/data/j","value":"2"},{"op":"test","path":"/data/m","value":"9"}]"#))).unwrap();
    assert_eq!(code, 422, "{resp}");
    let (_, cur) = api.http("GET", &format!("{CMS}/w"), None).unwrap();
    assert!(
        status(&cur)["data"].get("j").is_none(),
        "a failed JSON patch changes nothing"
    );
    let (code, _) = api
        .http("PATCH", &format!("{CMS}/w"), Some(("text/plain", "x")))
        .unwrap();
    assert_eq!(code, 415);
}

#[test]
fn tokens_authenticate_and_everything_else_gets_401() {
    let file = std::env::temp_dir().join(format!("skein-tokens-{}", std::process::id()));
    std::fs::write(&file, "s3cret-token,admin,1,\"system:masters\"\n").unwrap();
    let api = Api::start_with(
        &[
            "--token-auth-file",
            file.to_str().unwrap(),
            "--anonymous-auth=false",
        ],
        None,
    );
    std::fs::remove_file(&file).unwrap();
    let (code, body) = api
        .http_auth("GET", "/api/v1/namespaces", None, Some("s3cret-token"))
        .unwrap();
    assert_eq!(code, 200, "{body}\n{}", api.log_tail());
    // kubectl (client-go) sends tokens only to https servers and this server is plain
    // HTTP, so the token path is checked with raw requests here (over HTTPS in tls.rs).
    let (code, body) = api
        .http_auth("GET", "/api/v1/namespaces", None, None)
        .unwrap();
    assert_eq!(code, 401);
    assert_eq!(status(&body)["reason"], "Unauthorized");
    let (code, _) = api
        .http_auth("GET", "/api/v1/namespaces", None, Some("wrong"))
        .unwrap();
    assert_eq!(code, 401);
    let (code, _) = api
        .http_auth("GET", "/api/v1/namespaces", None, Some("s3cret-token"))
        .unwrap();
    assert_eq!(code, 200);
    let err = api.kubectl_fails(&["get", "namespaces"], None);
    assert!(err.contains("provide credentials"), "{err}");
}

#[test]
fn hundred_concurrent_service_creates_get_distinct_addresses_and_ports() {
    let api = Api::start();
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let api = &api;
                s.spawn(move || {
                    let body = json!({
                        "metadata": {"name": format!("svc-{i}"), "labels": {"bulk": "yes"}},
                        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]},
                    })
                    .to_string();
                    api.http("POST", "/api/v1/namespaces/default/services", Some(("application/json", &body))).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for (code, body) in &results {
        assert_eq!(*code, 201, "{body}");
        let svc = status(body);
        assert!(
            ips.insert(svc["spec"]["clusterIP"].as_str().unwrap().to_owned()),
            "duplicate ClusterIP: {body}"
        );
        assert!(
            ports.insert(svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap()),
            "duplicate NodePort: {body}"
        );
    }
    assert_eq!((ips.len(), ports.len()), (100, 100));
    assert!(!ips.contains("10.96.0.1"));
    // Deleting them releases every allocation (only the kubernetes Service's is left).
    let (code, _) = api
        .http(
            "DELETE",
            "/api/v1/namespaces/default/services?labelSelector=bulk%3Dyes",
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let etcd = api.bed.etcd();
    let keys = skein_testbed::run_checked(etcd.etcdctl(api.bed.node(1)).unwrap().args([
        "get",
        "/registry/ranges/",
        "--prefix",
        "--keys-only",
    ]))
    .unwrap();
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, ["/registry/ranges/serviceips/10.96.0.1"], "{keys:?}");
}

#[test]
fn the_server_compacts_etcd_history_on_its_interval() {
    let api = Api::start_with(&["--etcd-compaction-interval", "1"], None);
    let body = r#"{"metadata":{"name":"old"}}"#;
    let (code, resp) = api
        .http("POST", CMS, Some(("application/json", body)))
        .unwrap();
    assert_eq!(code, 201, "{resp}");
    let rv = status(&resp)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let exact = format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact");
    assert_eq!(api.http("GET", &exact, None).unwrap().0, 200);
    let (code, _) = api
        .http(
            "POST",
            CMS,
            Some(("application/json", r#"{"metadata":{"name":"new"}}"#)),
        )
        .unwrap();
    assert_eq!(code, 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (code, resp) = api.http("GET", &exact, None).unwrap();
        if code == 410 {
            assert_eq!(status(&resp)["reason"], "Expired");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "history at {rv} was never compacted: {code} {resp}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
