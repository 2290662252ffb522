//! HTTPS serving: kubectl and kube-rs over TLS with a test CA and bearer tokens; the
//! PEM key formats; start-up errors that name the bad file.

mod support;

use std::path::Path;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use skein_control_plane::tls;
use support::{Api, Pki, kubeconfig_cert, kubeconfig_text};

const TOKEN: &str = "tls-test-token";

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI makes the test keys");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubectl_and_kube_rs_over_https_with_a_ca_and_a_token() {
    let tokens = std::env::temp_dir().join(format!("skein-tls-tokens-{}", std::process::id()));
    std::fs::write(&tokens, format!("{TOKEN},admin,1,\"system:masters\"\n")).unwrap();
    let api = Api::start_tls(
        &[
            "--token-auth-file",
            tokens.to_str().unwrap(),
            "--anonymous-auth=false",
        ],
        Some(TOKEN),
    );
    std::fs::remove_file(&tokens).unwrap();
    let pki = api.pki.clone().unwrap();
    assert!(api.url.starts_with("https://"), "{}", api.url);

    // A client that connects and never starts its handshake (and one that speaks plain
    // HTTP to the TLS port, which gets Go's 400 answer) holds up no one.
    let node = api.bed.node(1);
    let addr = std::net::SocketAddr::from((node.addr, support::PORT));
    let _stalled = node
        .connect_tcp(addr, std::time::Duration::from_secs(3))
        .unwrap();
    let (code, body) = api.http("GET", "/readyz", None).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");

    // The CA and a valid token: kubectl lists namespaces and creates objects.
    let ns = api.kubectl(&["get", "namespaces", "--no-headers"]);
    assert!(ns.contains("default") && ns.contains("kube-system"), "{ns}");
    api.kubectl(&["create", "namespace", "over-tls"]);
    let got = api.get_json(&["namespace", "over-tls"]);
    assert_eq!(got["metadata"]["name"], "over-tls");

    // kubectl negotiated HTTP/2 through ALPN, as with kube-apiserver.
    let log =
        std::fs::read_to_string(api.bed.node(1).dirs.log_dir.join("apiserver-6443.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("/api/v1/namespaces") && l.contains("HTTP/2.0")),
        "no HTTP/2 request in the server log:\n{}",
        api.log_tail()
    );

    // A wrong token: 401, which kubectl prints as Unauthorized.
    let dir = api.bed.state_dir();
    let wrong = dir.join("kubeconfig-wrong-token");
    std::fs::write(
        &wrong,
        kubeconfig_text(&api.url, Some(&pki.ca_cert), Some("not-the-token")),
    )
    .unwrap();
    let err = api.kubectl_fails(
        &["--kubeconfig", wrong.to_str().unwrap(), "get", "namespaces"],
        None,
    );
    assert!(err.contains("Unauthorized"), "{err}");

    // Without the CA, kubectl refuses the server's certificate.
    let untrusted = dir.join("kubeconfig-no-ca");
    std::fs::write(&untrusted, kubeconfig_text(&api.url, None, Some(TOKEN))).unwrap();
    let err = api.kubectl_fails(
        &[
            "--kubeconfig",
            untrusted.to_str().unwrap(),
            "get",
            "namespaces",
        ],
        None,
    );
    assert!(
        err.contains("certificate signed by unknown authority")
            || err.contains("failed to verify certificate"),
        "{err}"
    );

    // kube-rs reads the same kubeconfig and talks TLS with the token; without a token
    // (kubectl would prompt for a password here) the server answers 401.
    let kubeconfig = api.kubeconfig.clone();
    let anonymous = dir.join("kubeconfig-no-token");
    std::fs::write(
        &anonymous,
        kubeconfig_text(&api.url, Some(&pki.ca_cert), None),
    )
    .unwrap();
    let (names, anon) = api
        .bed
        .node(1)
        .in_netns(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let list = |path: std::path::PathBuf| async move {
                    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
                    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                        .await
                        .unwrap();
                    let client = kube::Client::try_from(config).unwrap();
                    let nss: kube::Api<Namespace> = kube::Api::all(client);
                    nss.list(&Default::default()).await.map(|l| {
                        l.items
                            .into_iter()
                            .filter_map(|n| n.metadata.name)
                            .collect::<Vec<_>>()
                    })
                };
                // A watch streams over the same TLS connection kind (HTTP/2 when ALPN
                // picks it): the namespace made above arrives as ADDED, then the
                // server ends the watch at its timeout.
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                let nss: kube::Api<Namespace> =
                    kube::Api::all(kube::Client::try_from(config).unwrap());
                let mut stream = nss
                    .watch(&kube::api::WatchParams::default().timeout(2), "0")
                    .await
                    .unwrap()
                    .boxed();
                let mut watched = Vec::new();
                while let Some(ev) = stream.next().await {
                    if let Ok(kube::api::WatchEvent::Added(n)) = ev {
                        watched.extend(n.metadata.name);
                    }
                }
                assert!(watched.iter().any(|n| n == "over-tls"), "{watched:?}");
                (list(kubeconfig).await, list(anonymous).await)
            })
        })
        .unwrap();
    let names = names.unwrap_or_else(|e| panic!("kube-rs over TLS: {e}\n{}", api.log_tail()));
    assert!(names.iter().any(|n| n == "over-tls"), "{names:?}");
    match anon {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{s:?}"),
        other => panic!("a request without a token should get 401, got {other:?}"),
    }

    // Start-up errors name the file, and the server does not start.
    let node = api.bed.node(1);
    let etcd = api.bed.etcd().members[0].client_url();
    let missing = dir.join("pki/missing.crt");
    // The server's stderr when started with `files` (flag, path); it must fail.
    let refused = |files: &[(&str, &Path)]| {
        let mut cmd = node.command(support::server_binary()).unwrap();
        cmd.args(["--etcd-servers", &etcd, "--bind-address", "127.0.0.1"])
            .args(["--port", "6444"]);
        for (flag, path) in files {
            cmd.arg(flag).arg(path);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "started with {files:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&[
        ("--tls-cert-file", &missing),
        ("--tls-private-key-file", &pki.server_key),
    ]);
    assert!(
        stderr.contains("--tls-cert-file") && stderr.contains("missing.crt"),
        "{stderr}"
    );
    let stderr = refused(&[
        ("--tls-cert-file", &pki.server_cert),
        ("--tls-private-key-file", &pki.ca_cert),
    ]);
    assert!(
        stderr.contains("--tls-private-key-file") && stderr.contains("ca.crt"),
        "{stderr}"
    );
    let stderr = refused(&[
        ("--tls-cert-file", &pki.server_cert),
        ("--tls-private-key-file", &pki.server_key),
        ("--client-ca-file", &pki.server_key),
    ]);
    assert!(
        stderr.contains("--client-ca-file") && stderr.contains("server.key"),
        "{stderr}"
    );
}

#[test]
fn pkcs8_rsa_and_ec_keys_load_and_a_mismatched_key_is_refused() {
    let dir = tempfile_dir("formats");
    let pki = Pki::make(&dir, "198.51.100.11");
    // EC: SEC1 and PKCS#8.
    for key in [&pki.server_key, &pki.server_key_pkcs8] {
        tls::server_config(Some(&pki.server_cert), Some(key), None)
            .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
            .expect("a config");
    }
    // RSA: PKCS#1 (`RSA PRIVATE KEY`) and PKCS#8.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsa.pkcs8.key",
            "-out",
            "rsa.crt",
            "-days",
            "1",
            "-subj",
            "/CN=rsa",
        ],
    );
    openssl(
        &dir,
        &[
            "rsa",
            "-in",
            "rsa.pkcs8.key",
            "-out",
            "rsa.key",
            "-traditional",
        ],
    );
    let pkcs1 = std::fs::read_to_string(dir.join("rsa.key")).unwrap();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");
    for key in ["rsa.key", "rsa.pkcs8.key"] {
        tls::server_config(Some(&dir.join("rsa.crt")), Some(&dir.join(key)), None)
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .expect("a config");
    }
    // The EC key with the RSA certificate: refused, naming both files.
    let e = tls::server_config(Some(&dir.join("rsa.crt")), Some(&pki.server_key), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rsa.crt") && e.contains("server.key"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("skein-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn client_certificates_signed_by_the_client_ca_authenticate() {
    let api = Api::start_tls_client_ca(&["--anonymous-auth=false"], None);
    let pki = api.pki.clone().unwrap();
    let dir = api.bed.state_dir();
    let good = dir.join("kubeconfig-cert");
    std::fs::write(
        &good,
        kubeconfig_cert(&api.url, &pki.ca_cert, &pki.client_cert, &pki.client_key),
    )
    .unwrap();
    // No token and no anonymous access: the certificate alone lets kubectl in.
    let good_arg = good.to_str().unwrap();
    let ns = api.kubectl(&[
        "--kubeconfig",
        good_arg,
        "get",
        "namespaces",
        "--no-headers",
    ]);
    assert!(ns.contains("kube-system"), "{ns}");
    api.kubectl(&["--kubeconfig", good_arg, "create", "namespace", "by-cert"]);

    // A certificate no configured CA signed is refused in the handshake.
    let rogue = dir.join("kubeconfig-rogue");
    std::fs::write(
        &rogue,
        kubeconfig_cert(&api.url, &pki.ca_cert, &pki.rogue_cert, &pki.rogue_key),
    )
    .unwrap();
    let err = api.kubectl_fails(
        &["--kubeconfig", rogue.to_str().unwrap(), "get", "namespaces"],
        None,
    );
    // TLS 1.3 checks the client certificate after the client considers the handshake
    // done, so kubectl reports the server's alert, or the connection closing under it;
    // never an HTTP answer.
    assert!(
        [
            "unknown certificate",
            "connection reset",
            "EOF",
            "broken pipe"
        ]
        .iter()
        .any(|m| err.contains(m))
            && !err.contains("Unauthorized"),
        "{err}"
    );

    // kube-rs presents the same certificate from the kubeconfig.
    let names = api
        .bed
        .node(1)
        .in_netns(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&good).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                let nss: kube::Api<Namespace> =
                    kube::Api::all(kube::Client::try_from(config).unwrap());
                nss.list(&Default::default()).await.map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|n| n.metadata.name)
                        .collect::<Vec<_>>()
                })
            })
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("kube-rs with a client certificate: {e}"));
    assert!(names.iter().any(|n| n == "by-cert"), "{names:?}");

    // Without a certificate or token the same server answers 401.
    let err = api.kubectl_fails(
        &[
            "--kubeconfig",
            api.kubeconfig.to_str().unwrap(),
            "--token",
            "not-a-token",
            "get",
            "namespaces",
        ],
        None,
    );
    assert!(err.contains("Unauthorized"), "{err}");
}
