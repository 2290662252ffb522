//! Cluster DNS as a pod sees it: the pod's own /etc/resolv.conf (written by skein-agent
//! into the pod's mount namespace) points at the kube-dns Service 10.96.0.10, which
//! skein-proxy sends to skein-dns on the control host. Real resolver clients run inside
//! the pod: glibc's `getent` (A records, short names through the search path) and `dig`
//! (SRV, CNAME, and A over TCP).

use std::time::Duration;

use skein_e2e::cluster::{Cluster, wait_for};

const SERVICES: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["python3", "-m", "http.server", "8080"]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports:
  - {name: http, port: 8080, targetPort: http}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: db.example.com
"#;

/// The client pod: looks every name up once (after waiting for the first answer, which
/// comes when skein-dns has seen the Services), prints one line per answer, then its
/// resolv.conf.
const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: dns-client}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: debian:12
    command:
    - /bin/sh
    - -c
    - |
      for i in $(seq 60); do getent hosts web >/dev/null && break; sleep 1; done
      echo "A-short: $(getent hosts web | awk '{print $1}')"
      echo "A-fqdn: $(getent hosts web.default.svc.cluster.local | awk '{print $1}')"
      echo "A-headless: $(getent ahostsv4 web-headless | awk '{print $1}' | sort -u | tr '\n' ' ')"
      echo "SRV: $(dig +short +time=3 +tries=1 SRV _http._tcp.web.default.svc.cluster.local)"
      echo "CNAME: $(dig +short +time=3 +tries=1 CNAME ext.default.svc.cluster.local)"
      echo "A-tcp: $(dig +short +tcp +time=3 +tries=1 web.default.svc.cluster.local)"
      echo "NX: $(getent hosts no-such-svc >/dev/null && echo found || echo absent)"
      echo "--- resolv.conf"
      cat /etc/resolv.conf
      echo "--- end"
"#;

fn field<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or("")
        .trim()
}

#[test]
fn pods_resolve_normal_headless_and_external_name_services_through_their_resolv_conf() {
    assert!(
        std::path::Path::new("/usr/bin/dig").is_file(),
        "/usr/bin/dig is missing: install Debian's dnsutils (scripts/install-deps.sh)"
    );
    let c = Cluster::start(2);

    // The kube-dns Service and its endpoints, as `skeinctl up` creates them.
    let dns = c.get_json(&["service", "kube-dns", "-n", "kube-system"]);
    assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");
    let ports: Vec<(String, String, u64)> = dns["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["protocol"].as_str().unwrap().to_owned(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".into(), "UDP".into(), 53),
            ("dns-tcp".into(), "TCP".into(), 53)
        ]
    );
    let slices = c.get_json(&[
        "endpointslices",
        "-n",
        "kube-system",
        "-l",
        "kubernetes.io/service-name=kube-dns",
    ]);
    let slice = &slices["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["addresses"][0], "198.51.100.3");
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    let eps = c.get_json(&["endpoints", "kube-dns", "-n", "kube-system"]);
    assert_eq!(eps["subsets"][0]["addresses"][0]["ip"], "198.51.100.3");

    c.apply(SERVICES);
    let mut pod_ips: Vec<String> = c
        .wait_ready_pods("default", "app=web", 2, Duration::from_secs(120))
        .iter()
        .filter_map(|p| p.ip.map(|ip| ip.to_string()))
        .collect();
    pod_ips.sort();
    let cluster_ip = c.get_json(&["service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_owned();

    c.apply(CLIENT);
    let log = wait_for("the client pod's answers", Duration::from_secs(150), || {
        let out = c.kubectl(&["logs", "dns-client"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("--- end") {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    let ctx = format!("client log:\n{log}\n{}", c.logs());

    // The pod's own resolv.conf, written by skein-agent.
    let resolv = log
        .split("--- resolv.conf\n")
        .nth(1)
        .and_then(|r| r.split("--- end").next())
        .unwrap_or("");
    assert!(resolv.starts_with("nameserver 10.96.0.10\n"), "{ctx}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{ctx}"
    );
    assert!(resolv.contains("options ndots:5"), "{ctx}");

    // A normal Service: its ClusterIP, by short name (search path) and in full.
    assert_eq!(field(&log, "A-short"), cluster_ip, "{ctx}");
    assert_eq!(field(&log, "A-fqdn"), cluster_ip, "{ctx}");
    // Over TCP too (53/TCP dns-tcp).
    assert_eq!(field(&log, "A-tcp"), cluster_ip, "{ctx}");
    // A headless Service: the ready pods' IPs.
    let mut headless: Vec<String> = field(&log, "A-headless")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    headless.sort();
    assert_eq!(headless, pod_ips, "{ctx}");
    // SRV for the named port: priority weight port target.
    let srv = field(&log, "SRV");
    assert!(
        srv.ends_with(" 80 web.default.svc.cluster.local."),
        "SRV {srv:?}; {ctx}"
    );
    // ExternalName: a CNAME.
    assert_eq!(field(&log, "CNAME"), "db.example.com.", "{ctx}");
    // Unknown names are NXDOMAIN (nothing is forwarded).
    assert_eq!(field(&log, "NX"), "absent", "{ctx}");
}
