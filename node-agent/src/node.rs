//! The Node object this agent registers (pure): name, labels, capacity, InternalIP,
//! `spec.podCIDR` from flanneld's subnet file, and the NodeReady condition.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::{Error, Result};
use crate::status::time;

/// What the node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// The node's IP (InternalIP).
    pub ip: IpAddr,
    /// Extra labels (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// CPUs (capacity `cpu`).
    pub cpu: String,
    /// Memory (capacity `memory`, a quantity like `4028520Ki`).
    pub memory: String,
    /// Most pods (capacity `pods`).
    pub max_pods: u32,
    /// The pod CIDR (flannel's FLANNEL_SUBNET, as a network: 10.244.3.0/24).
    pub pod_cidr: Option<String>,
    /// The port of the log endpoint (daemonEndpoints.kubeletEndpoint).
    pub log_port: u16,
}

/// Reads FLANNEL_SUBNET from flanneld's subnet file and returns it as a network
/// (`10.244.3.1/24` → `10.244.3.0/24`).
pub fn pod_cidr_from_subnet_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::SubnetFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    parse_subnet_env(&text).map_err(|reason| Error::SubnetFile {
        path: path.to_owned(),
        reason,
    })
}

/// Parses `FLANNEL_SUBNET=a.b.c.d/len` out of a subnet.env text.
pub fn parse_subnet_env(text: &str) -> std::result::Result<String, String> {
    let value = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))
        .next_back()
        .ok_or("no FLANNEL_SUBNET line")?
        .trim()
        .trim_matches('"');
    let (addr, len) = value
        .split_once('/')
        .ok_or_else(|| format!("FLANNEL_SUBNET {value:?} is not a CIDR"))?;
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("FLANNEL_SUBNET {value:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("FLANNEL_SUBNET {value:?}: bad prefix length"))?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let net = std::net::Ipv4Addr::from(u32::from(addr) & mask);
    Ok(format!("{net}/{len}"))
}

/// The machine's CPU count and memory (from /proc/meminfo, in Ki).
pub fn machine_capacity() -> (String, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cpus.to_string(), format!("{mem_kib}Ki"))
}

/// The labels every node carries, plus the extra ones.
pub fn labels(f: &NodeFacts) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), f.name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), go_arch().to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("beta.kubernetes.io/arch".to_owned(), go_arch().to_owned()),
    ]);
    l.extend(f.labels.clone());
    l
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Whether the node can run pods: `network_error` is why the pod network is not ready
/// (no usable CNI config), `since` when that last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// None when the network is ready.
    pub network_error: Option<String>,
    /// Last transition of the Ready condition.
    pub since: SystemTime,
}

/// The node's status: capacity, addresses, Ready condition (True while the agent runs
/// and the pod network is configured; False with reason NetworkPluginNotReady, as the
/// kubelet reports it, while no CNI config is usable), node info.
pub fn node_status(f: &NodeFacts, ready: &Readiness, now: SystemTime) -> NodeStatus {
    let ready_since = ready.since;
    let cap = BTreeMap::from([
        ("cpu".to_owned(), Quantity(f.cpu.clone())),
        ("memory".to_owned(), Quantity(f.memory.clone())),
        ("pods".to_owned(), Quantity(f.max_pods.to_string())),
    ]);
    let cond =
        |type_: &str, status: &str, reason: &str, message: &str, since: SystemTime| NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_heartbeat_time: Some(time(now)),
            last_transition_time: Some(time(since)),
        };
    NodeStatus {
        capacity: Some(cap.clone()),
        allocatable: Some(cap),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: f.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: f.name.clone(),
            },
        ]),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                ready_since,
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                ready_since,
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                ready_since,
            ),
            match &ready.network_error {
                None => cond(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "skein-agent is posting ready status",
                    ready_since,
                ),
                Some(e) => cond(
                    "Ready",
                    "False",
                    "KubeletNotReady",
                    &format!(
                        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:{e}"
                    ),
                    ready_since,
                ),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(f.log_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            operating_system: "linux".into(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            os_image: os_image(),
            kubelet_version: format!("v1.37.0-skein-{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            container_runtime_version: format!("skein://{}", env!("CARGO_PKG_VERSION")),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// PRETTY_NAME from /etc/os-release, as the kubelet reports osImage.
fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The Node object to create at registration (its status is replaced by the first
/// heartbeat).
pub fn node_object(f: &NodeFacts, ready: &Readiness, now: SystemTime) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(f.name.clone());
    n.metadata.labels = Some(labels(f));
    n.spec = Some(NodeSpec {
        pod_cidr: f.pod_cidr.clone(),
        pod_cidrs: f.pod_cidr.clone().map(|c| vec![c]),
        ..Default::default()
    });
    n.status = Some(node_status(f, ready, now));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "node1".into(),
            ip: "198.51.100.11".parse().unwrap(),
            labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            cpu: "2".into(),
            memory: "4000000Ki".into(),
            max_pods: 110,
            pod_cidr: Some("10.244.3.0/24".into()),
            log_port: 10250,
        }
    }

    #[test]
    fn subnet_env_gives_the_network() {
        let t = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        assert_eq!(parse_subnet_env(t).unwrap(), "10.244.3.0/24");
        assert!(
            parse_subnet_env("FLANNEL_MTU=1450")
                .unwrap_err()
                .contains("no FLANNEL_SUBNET")
        );
        assert!(
            parse_subnet_env("FLANNEL_SUBNET=10.244.3.1")
                .unwrap_err()
                .contains("not a CIDR")
        );
        assert!(
            parse_subnet_env("FLANNEL_SUBNET=10.244.3.1/40")
                .unwrap_err()
                .contains("prefix")
        );
    }

    #[test]
    fn node_object_has_what_the_scheduler_and_proxy_read() {
        let now = SystemTime::now();
        let ready = Readiness {
            network_error: None,
            since: now,
        };
        let n = node_object(&facts(), &ready, now);
        let l = n.metadata.labels.unwrap();
        assert_eq!(l["kubernetes.io/hostname"], "node1");
        assert_eq!(l["zone"], "a");
        assert_eq!(
            n.spec.as_ref().unwrap().pod_cidr.as_deref(),
            Some("10.244.3.0/24")
        );
        let st = n.status.unwrap();
        assert_eq!(st.capacity.as_ref().unwrap()["pods"].0, "110");
        assert_eq!(st.allocatable.as_ref().unwrap()["cpu"].0, "2");
        let addrs = st.addresses.unwrap();
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "198.51.100.11")
        );
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
    }

    #[test]
    fn missing_cni_config_makes_the_node_not_ready() {
        let now = SystemTime::now();
        let r = Readiness {
            network_error: Some("no network configuration".into()),
            since: now,
        };
        let st = node_status(&facts(), &r, now);
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.unwrap().contains("NetworkPluginNotReady"));
    }

    #[test]
    fn machine_capacity_is_read() {
        let (cpu, mem) = machine_capacity();
        assert!(cpu.parse::<u32>().unwrap() >= 1);
        assert!(mem.ends_with("Ki") && mem != "0Ki");
    }
}
