//! Where a local cluster lives and what it writes: addresses, state paths, the flannel
//! network config, the CNI conflist and the kubeconfig. Plain data, no side effects.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The control-plane host on the fabric (API server, scheduler, controllers, DNS).
pub const CONTROL_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The API server's port (plain HTTP, anonymous auth).
pub const API_PORT: u16 = 6443;
/// The cluster (pod) network flanneld leases node subnets from.
pub const CLUSTER_NETWORK: &str = "10.244.0.0/16";
/// flannel's etcd key prefix.
pub const FLANNEL_PREFIX: &str = "/coreos.com/network";
/// The cluster DNS listen address inside the control namespace.
pub const DNS_LISTEN: &str = "198.51.100.3:53";
/// The cluster DNS domain.
pub const DNS_DOMAIN: &str = "cluster.local";
/// The ClusterIP of the `kube-system/kube-dns` Service, given to every agent as
/// `--cluster-dns`.
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The CNI network name (flannel's usual `cbr0`).
pub const CNI_NETWORK: &str = "cbr0";

/// The API server's address on the fabric.
pub fn api_addr() -> SocketAddr {
    SocketAddr::from((CONTROL_ADDR, API_PORT))
}

/// The API server's URL as the cluster's own daemons reach it over the fabric.
pub fn api_url() -> String {
    format!("http://{}", api_addr())
}

/// flanneld's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// VXLAN overlay (device `flannel.1`, UDP 8472).
    Vxlan,
    /// Direct routes via the other nodes' fabric addresses.
    HostGw,
}

impl Backend {
    /// flannel's name for it (`Backend.Type`).
    pub fn flannel_type(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// The value of `<FLANNEL_PREFIX>/config`.
pub fn flannel_config(backend: Backend) -> String {
    format!(
        r#"{{"Network":"{CLUSTER_NETWORK}","Backend":{{"Type":"{}"}}}}"#,
        backend.flannel_type()
    )
}

/// The node's CNI conflist: skein-cni alone, its subnet from flanneld's subnet file, its
/// allocations in the node's own IPAM dir.
pub fn cni_conflist(subnet_file: &Path, ipam_data_dir: &Path) -> String {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "skein-cni",
            "subnetFile": subnet_file,
            "ipam": { "type": "host-local", "dataDir": ipam_data_dir },
        }],
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}

/// A kubeconfig for plain `kubectl` at `server` (the relay on `http://127.0.0.1:<port>`
/// from the user's shell, or the API server's own URL inside the control namespace).
pub fn kubeconfig(name: &str, server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
users:
- name: {name}
  user: {{}}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
    namespace: default
current-context: {name}
"
    )
}

/// The files of cluster `name` under `/run/skein/<name>`.
#[derive(Debug, Clone)]
pub struct ClusterPaths {
    /// `/run/skein/<name>`.
    pub state: PathBuf,
    /// `run/`: one `<daemon>.pid` per daemon, and `relay.port`.
    pub run_dir: PathBuf,
    /// `log/`: one `<daemon>.log` per daemon.
    pub log_dir: PathBuf,
    /// `kubeconfig`: through the relay, for the user's shell.
    pub kubeconfig: PathBuf,
    /// `kubeconfig-control`: straight to the API server, for kubectl run inside the
    /// control namespace.
    pub control_kubeconfig: PathBuf,
}

impl ClusterPaths {
    /// The paths of cluster `name` (nothing is created).
    pub fn new(name: &str) -> ClusterPaths {
        let state = Path::new(skein_testbed::STATE_ROOT).join(name);
        ClusterPaths {
            run_dir: state.join("run"),
            log_dir: state.join("log"),
            kubeconfig: state.join("kubeconfig"),
            control_kubeconfig: state.join("kubeconfig-control"),
            state,
        }
    }

    /// `run/<daemon>.pid`.
    pub fn pid_file(&self, daemon: &str) -> PathBuf {
        self.run_dir.join(format!("{daemon}.pid"))
    }

    /// `log/<daemon>.log`.
    pub fn log_file(&self, daemon: &str) -> PathBuf {
        self.log_dir.join(format!("{daemon}.log"))
    }

    /// `run/relay.port`: the port the kubeconfig relay listens on.
    pub fn relay_port_file(&self) -> PathBuf {
        self.run_dir.join("relay.port")
    }
}

/// The objects of the kube-dns Service, with the API path each is created at: the
/// Service (no selector: skein-dns is not a pod), its EndpointSlice and its Endpoints,
/// both pointing at skein-dns on the control host.
pub fn kube_dns_objects() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let dns_ip = DNS_LISTEN.split(':').next().unwrap_or_default();
    let labels = json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"});
    vec![
        (
            "/api/v1/namespaces/kube-system/services",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": CLUSTER_DNS_IP.to_string(),
                    "ports": [
                        {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                        {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53},
                    ],
                },
            }),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-skein", "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "skeinctl",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{
                    "addresses": [dns_ip],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                }],
                "ports": [
                    {"name": "dns", "protocol": "UDP", "port": 53},
                    {"name": "dns-tcp", "protocol": "TCP", "port": 53},
                ],
            }),
        ),
        (
            "/api/v1/namespaces/kube-system/endpoints",
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
                "subsets": [{
                    "addresses": [{"ip": dns_ip}],
                    "ports": [
                        {"name": "dns", "protocol": "UDP", "port": 53},
                        {"name": "dns-tcp", "protocol": "TCP", "port": 53},
                    ],
                }],
            }),
        ),
    ]
}

/// `FLANNEL_SUBNET` of a subnet file's text.
pub fn subnet_of(subnet_env: &str) -> Option<&str> {
    subnet_env
        .lines()
        .find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_config_names_network_and_backend() {
        let v: serde_json::Value = serde_json::from_str(&flannel_config(Backend::HostGw)).unwrap();
        assert_eq!(v["Network"], "10.244.0.0/16");
        assert_eq!(v["Backend"]["Type"], "host-gw");
        let v: serde_json::Value = serde_json::from_str(&flannel_config(Backend::Vxlan)).unwrap();
        assert_eq!(v["Backend"]["Type"], "vxlan");
    }

    #[test]
    fn conflist_points_at_the_nodes_own_files() {
        let text = cni_conflist(
            Path::new("/run/skein/c/node1/flannel/subnet.env"),
            Path::new("/run/skein/c/node1/cni/networks"),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"], "cbr0");
        let p = &v["plugins"][0];
        assert_eq!(p["type"], "skein-cni");
        assert_eq!(p["subnetFile"], "/run/skein/c/node1/flannel/subnet.env");
        assert_eq!(p["ipam"]["dataDir"], "/run/skein/c/node1/cni/networks");
    }

    #[test]
    fn kube_dns_points_at_skein_dns() {
        let objs = kube_dns_objects();
        let svc = &objs[0].1;
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert!(svc["spec"]["selector"].is_null());
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(svc["spec"]["ports"][1]["name"], "dns-tcp");
        let slice = &objs[1].1;
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kube-dns"
        );
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "198.51.100.3");
        assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(
            objs[2].1["subsets"][0]["addresses"][0]["ip"],
            "198.51.100.3"
        );
        assert!(
            objs.iter()
                .all(|(p, _)| p.contains("/namespaces/kube-system/"))
        );
    }

    #[test]
    fn kubeconfig_points_at_the_relay() {
        let k = kubeconfig("demo", "http://127.0.0.1:40123");
        assert!(k.contains("server: http://127.0.0.1:40123\n"), "{k}");
        assert!(k.contains("current-context: demo\n"), "{k}");
    }

    #[test]
    fn paths_live_under_the_state_dir() {
        let p = ClusterPaths::new("c1");
        assert_eq!(
            p.pid_file("node1-flanneld"),
            Path::new("/run/skein/c1/run/node1-flanneld.pid")
        );
        assert_eq!(
            p.log_file("apiserver"),
            Path::new("/run/skein/c1/log/apiserver.log")
        );
        assert_eq!(p.kubeconfig, Path::new("/run/skein/c1/kubeconfig"));
    }

    #[test]
    fn subnet_is_read_from_the_subnet_file() {
        let env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\n";
        assert_eq!(subnet_of(env), Some("10.244.7.1/24"));
        assert_eq!(subnet_of("FLANNEL_MTU=1450\n"), None);
    }
}
