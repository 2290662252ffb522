//! `--etcd-cafile/--etcd-certfile/--etcd-keyfile`: flanneld against an etcd that
//! requires TLS with client certificates (a second etcd, on the node's loopback).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use skein_testbed::run_checked;

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.current_dir(dir).args(args);
    run_checked(&mut cmd).expect("openssl (Debian package openssl)");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca-key.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/CN=skein-test-ca",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{name}-key.pem"),
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}-key.pem"),
                "-subj",
                &format!("/CN={name}"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

#[test]
fn flanneld_talks_to_etcd_over_tls_with_a_client_certificate() {
    let mut bed = bed(1, false);
    let node = bed.node(1);
    let pki = bed.state_dir().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let p = |f: &str| pki.join(f).display().to_string();
    let url = "https://127.0.0.1:2479";
    let mut cmd = node.command("etcd").unwrap();
    cmd.args([
        "--name",
        "tls",
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
    ])
    .args([
        "--listen-peer-urls",
        "http://127.0.0.1:2480",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2480",
    ])
    .args(["--initial-cluster", "tls=http://127.0.0.1:2480"])
    .arg("--data-dir")
    .arg(bed.state_dir().join("etcd-tls"))
    .args([
        "--cert-file",
        &p("server.pem"),
        "--key-file",
        &p("server-key.pem"),
    ])
    .args(["--client-cert-auth", "--trusted-ca-file", &p("ca.pem")]);
    let etcd = node
        .spawn("etcd tls", cmd, &node.dirs.log_dir.join("etcd-tls.log"))
        .expect("start etcd with TLS");
    let etcdctl_tls = |args: &[&str]| -> Result<String, skein_testbed::Error> {
        let mut c = node.command("etcdctl")?;
        c.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                url,
                "--cacert",
                &p("ca.pem"),
                "--cert",
                &p("client.pem"),
                "--key",
                &p("client-key.pem"),
            ])
            .args(args);
        run_checked(&mut c)
    };
    wait_for("the TLS etcd to answer", Duration::from_secs(20), || {
        etcdctl_tls(&["put", "/coreos.com/network/config", VXLAN_CONFIG]).ok()
    });

    let tls_flags = [
        "--etcd-endpoints",
        url,
        "--etcd-cafile",
        &p("ca.pem"),
        "--etcd-certfile",
        &p("client.pem"),
        "--etcd-keyfile",
        &p("client-key.pem"),
    ];
    let mut cmd = node.command(env!("CARGO_BIN_EXE_flanneld")).unwrap();
    cmd.args(tls_flags)
        .args(["--iface", "eth0"])
        .arg("--subnet-file")
        .arg(&node.dirs.subnet_file);
    let d = node
        .spawn("flanneld tls", cmd, &node.dirs.log_dir.join("flanneld.log"))
        .unwrap();
    let env = wait_subnet_file(node, &d);
    let value = etcdctl_tls(&["get", &env.key(), "--print-value-only"]).unwrap();
    assert!(
        value.contains(&format!("\"PublicIP\":\"{}\"", node.addr)),
        "{value}"
    );

    // Without the client certificate the server refuses it: no lease, a clear log line.
    std::fs::remove_file(&node.dirs.subnet_file).unwrap();
    let mut cmd = node.command(env!("CARGO_BIN_EXE_flanneld")).unwrap();
    cmd.args([
        "--etcd-endpoints",
        url,
        "--etcd-cafile",
        &p("ca.pem"),
        "--iface",
        "eth0",
    ])
    .arg("--subnet-file")
    .arg(&node.dirs.subnet_file)
    .arg("--etcd-prefix")
    .arg("/other");
    let d2 = node
        .spawn(
            "flanneld no cert",
            cmd,
            &node.dirs.log_dir.join("flanneld-nocert.log"),
        )
        .unwrap();
    wait_for(
        "the refused connection to be logged",
        Duration::from_secs(20),
        || d2.log_tail(20).contains("etcd not reachable").then_some(()),
    );
    assert!(!node.dirs.subnet_file.exists());
    for daemon in [d, d2, etcd] {
        bed.adopt(daemon);
    }
}
