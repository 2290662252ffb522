//! kubectl's generator subcommands send protobuf bodies: the objects they create hold
//! exactly what kubectl meant to send (the same command's `--dry-run=client -o json`),
//! and a protobuf body of a kind the server does not decode gets a 415 naming it.

mod support;

use serde_json::Value;
use support::Api;

/// Every field of `sent` is in `got` with the same value (the server adds uid,
/// defaults, allocated addresses...). Nulls in `sent` are Go's zero times: skipped.
fn assert_sent_fields_kept(sent: &Value, got: &Value, at: &str) {
    match (sent, got) {
        (Value::Null, _) => {}
        (Value::Object(s), Value::Object(g)) => {
            for (k, v) in s {
                if v.is_null() {
                    continue;
                }
                let there = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} was sent but is missing: {got}"));
                assert_sent_fields_kept(v, there, &format!("{at}.{k}"));
            }
        }
        (Value::Array(s), Value::Array(g)) => {
            assert_eq!(s.len(), g.len(), "{at}: {sent} vs {got}");
            for (i, (a, b)) in s.iter().zip(g).enumerate() {
                assert_sent_fields_kept(a, b, &format!("{at}[{i}]"));
            }
        }
        (s, g) => assert_eq!(s, g, "{at}"),
    }
}

/// Runs a kubectl create command for real and checks the stored object against the
/// same command's client-side dry run.
fn create_and_compare(api: &Api, args: &[&str], get: &[&str]) -> Value {
    let mut dry = vec!["--dry-run=client", "-o", "json"];
    dry.extend_from_slice(args);
    let sent: Value = serde_json::from_str(&api.kubectl(&dry)).unwrap();
    let out = api.kubectl(args);
    assert!(out.contains("created"), "{out}");
    let got = api.get_json(get);
    assert_sent_fields_kept(&sent, &got, &format!("{get:?}"));
    got
}

#[test]
fn kubectl_create_deployment_and_service_send_protobuf_that_is_decoded() {
    let api = Api::start();
    let d = create_and_compare(
        &api,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "--port=8080",
            "--",
            "/bin/sleep",
            "1000",
        ],
        &["deployment", "web"],
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(c["image"], "nginx");
    assert_eq!(c["command"], serde_json::json!(["/bin/sleep", "1000"]));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");

    let s = create_and_compare(
        &api,
        &[
            "create",
            "service",
            "nodeport",
            "web",
            "--tcp=80:8080",
            "--node-port=30123",
        ],
        &["service", "web"],
    );
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(s["spec"]["ports"][0]["nodePort"], 30123);
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{s}"
    );
    // kubectl's own view of it.
    let table = api.kubectl(&["get", "service", "web", "--no-headers"]);
    assert!(table.contains("80:30123/TCP"), "{table}");

    // More generators: two containers, a named target port, a headless Service, an
    // ExternalName Service.
    let m = create_and_compare(
        &api,
        &[
            "create",
            "deployment",
            "multi",
            "--image=nginx",
            "--image=busybox",
        ],
        &["deployment", "multi"],
    );
    assert_eq!(
        m["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let db = create_and_compare(
        &api,
        &[
            "create",
            "service",
            "clusterip",
            "db",
            "--tcp=5432",
            "--tcp=5433:dbport",
        ],
        &["service", "db"],
    );
    assert_eq!(db["spec"]["ports"][1]["targetPort"], "dbport");
    let h = create_and_compare(
        &api,
        &[
            "create",
            "service",
            "clusterip",
            "headless",
            "--clusterip=None",
        ],
        &["service", "headless"],
    );
    assert_eq!(h["spec"]["clusterIP"], "None");
    let e = create_and_compare(
        &api,
        &[
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name=example.com",
        ],
        &["service", "ext"],
    );
    assert_eq!(e["spec"]["externalName"], "example.com");
}

#[test]
fn kubectl_create_configmap_and_secrets_keep_binary_data_and_types() {
    let api = Api::start();
    let dir = api.bed.state_dir();
    // A binary file goes to binaryData (base64), text to data.
    let bin = dir.join("blob.bin");
    std::fs::write(&bin, [0u8, 159, 146, 150, 255, b'\n']).unwrap();
    let txt = dir.join("note.txt");
    std::fs::write(&txt, "hello\n").unwrap();
    let from_bin = format!("--from-file={}", bin.display());
    let from_txt = format!("--from-file={}", txt.display());
    let cm = create_and_compare(
        &api,
        &["create", "configmap", "files", &from_bin, &from_txt],
        &["configmap", "files"],
    );
    assert_eq!(cm["binaryData"]["blob.bin"], "AJ+Slv8K", "{cm}");
    assert_eq!(cm["data"]["note.txt"], "hello\n");

    // kubernetes.io/tls and docker-registry Secrets keep their type and keys.
    let pki = support::Pki::make(&dir.join("pki"), "198.51.100.11");
    let cert = format!("--cert={}", pki.server_cert.display());
    let key = format!("--key={}", pki.server_key.display());
    let s = create_and_compare(
        &api,
        &["create", "secret", "tls", "web-tls", &cert, &key],
        &["secret", "web-tls"],
    );
    assert_eq!(s["type"], "kubernetes.io/tls");
    assert!(
        s["data"]["tls.crt"].as_str().is_some_and(|v| !v.is_empty()),
        "{s}"
    );
    let s = create_and_compare(
        &api,
        &[
            "create",
            "secret",
            "docker-registry",
            "pull",
            "--docker-server=registry.example",
            "--docker-username=u",
            "--docker-password=p",
        ],
        &["secret", "pull"],
    );
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
}

#[test]
fn protobuf_bodies_of_other_kinds_get_415_naming_the_kind() {
    let api = Api::start();
    // k8s\0 + Unknown{typeMeta{coordination.k8s.io/v1, Lease}, raw{metadata{name: l}}}.
    let type_meta = "\x0a\x16coordination.k8s.io/v1\x12\x05Lease";
    let raw = "\x0a\x03\x0a\x01l";
    let body = format!(
        "k8s\0\x0a{}{type_meta}\x12{}{raw}",
        char::from(type_meta.len() as u8),
        char::from(raw.len() as u8)
    );
    let (code, text) = api
        .http(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            Some(("application/vnd.kubernetes.protobuf", &body)),
        )
        .unwrap();
    assert_eq!(code, 415, "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["reason"], "UnsupportedMediaType");
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.contains("\"Lease\"") && msg.contains("send JSON or YAML"),
        "{msg}"
    );
    let (code, _) = api
        .http(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
            None,
        )
        .unwrap();
    assert_eq!(code, 404, "nothing is stored");
}
