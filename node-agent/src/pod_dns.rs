//! A pod's `/etc/resolv.conf` and `/etc/hosts`, decided as the kubelet does. Plain data
//! in, file text out; the sandbox bind-mounts the files into the pod's mount namespace.
//!
//! ```text
//! dnsPolicy ─┬─ ClusterFirst (not hostNetwork), ClusterFirstWithHostNet
//!            │     └─ nameserver <--cluster-dns>, search <ns>.svc.<d> svc.<d> <d> + node's,
//!            │        options ndots:5        (no --cluster-dns: falls back to Default)
//!            ├─ Default (and ClusterFirst on hostNetwork) ─ the node's --resolv-conf
//!            └─ None ─ empty
//!          + spec.dnsConfig: nameservers and searches appended (duplicates dropped),
//!            options merged by name (the pod's value wins)
//! ```

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

/// The kubelet's limit on nameservers (glibc reads three).
pub const MAX_NAMESERVERS: usize = 3;
/// The kubelet's limit on search domains.
pub const MAX_SEARCHES: usize = 32;

/// The agent's DNS flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// `--cluster-dns`: the cluster DNS Service IPs (empty: none configured).
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--resolv-conf`: the node's resolver file, used for dnsPolicy Default.
    pub resolv_conf: PathBuf,
    /// The node's hosts file, copied for hostNetwork pods.
    pub hosts_file: PathBuf,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            hosts_file: "/etc/hosts".into(),
        }
    }
}

/// A resolver configuration: what resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// The `search` line.
    pub searches: Vec<String>,
    /// The `options` line.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text (`domain` counts as a search line, as in glibc; the last
    /// `search`/`domain` line wins).
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(str::to_owned)),
                Some("search") | Some("domain") => {
                    r.searches = words.map(str::to_owned).collect();
                }
                Some("options") => r.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        r
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Which resolver a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsKind {
    /// The cluster DNS.
    Cluster,
    /// The node's resolv.conf.
    Host,
    /// Nothing but the pod's dnsConfig.
    None,
}

/// The pod's resolver kind, and a line to log when ClusterFirst falls back to Default
/// because no cluster DNS is configured.
pub fn dns_kind(pod: &Pod, settings: &DnsSettings) -> (DnsKind, Option<String>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let cluster = |policy: &str| {
        if settings.cluster_dns.is_empty() {
            (
                DnsKind::Host,
                Some(format!(
                    "dnsPolicy {policy} but no --cluster-dns is configured: falling back to Default (the node's resolv.conf)"
                )),
            )
        } else {
            (DnsKind::Cluster, None)
        }
    };
    match spec.dns_policy.as_deref() {
        Some("None") => (DnsKind::None, None),
        Some("Default") => (DnsKind::Host, None),
        Some("ClusterFirstWithHostNet") => cluster("ClusterFirstWithHostNet"),
        // ClusterFirst (also when unset); a hostNetwork pod gets Default, as the kubelet
        // does.
        _ if host_network => (DnsKind::Host, None),
        _ => cluster("ClusterFirst"),
    }
}

/// The pod's resolv.conf, and the warnings to log (fallbacks, dropped entries).
pub fn resolv_conf(pod: &Pod, settings: &DnsSettings, host: &ResolvConf) -> (String, Vec<String>) {
    let (kind, note) = dns_kind(pod, settings);
    let mut warnings: Vec<String> = note.into_iter().collect();
    let mut conf = match kind {
        DnsKind::Cluster => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = settings.cluster_domain.trim_end_matches('.');
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_owned()];
            searches.extend(host.searches.iter().cloned());
            ResolvConf {
                nameservers: settings.cluster_dns.iter().map(|i| i.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        DnsKind::Host => host.clone(),
        DnsKind::None => ResolvConf::default(),
    };
    if let Some(cfg) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(cfg.nameservers.iter().flatten().cloned());
        conf.searches.extend(cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let opt = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_owned(),
            };
            match conf.options.iter_mut().find(|e| option_name(e) == name) {
                Some(existing) => *existing = opt,
                None => conf.options.push(opt),
            }
        }
    }
    dedup(&mut conf.nameservers);
    dedup(&mut conf.searches);
    if conf.nameservers.len() > MAX_NAMESERVERS {
        warnings.push(format!(
            "nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
            conf.nameservers[..MAX_NAMESERVERS].join(" ")
        ));
        conf.nameservers.truncate(MAX_NAMESERVERS);
    }
    if conf.searches.len() > MAX_SEARCHES {
        warnings.push(format!(
            "search line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
            conf.searches[..MAX_SEARCHES].join(" ")
        ));
        conf.searches.truncate(MAX_SEARCHES);
    }
    (conf.render(), warnings)
}

fn option_name(opt: &str) -> &str {
    opt.split(':').next().unwrap_or(opt)
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// The pod's /etc/hosts as the kubelet writes it: localhost entries, the pod's IPs with
/// its hostname (fully qualified when it has a subdomain), then spec.hostAliases. A
/// hostNetwork pod gets the node's hosts file (`node_hosts`) instead of the entries.
pub fn hosts_file(
    pod: &Pod,
    hostname: &str,
    ips: &[IpAddr],
    cluster_domain: &str,
    node_hosts: &str,
) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = String::new();
    if spec.host_network.unwrap_or(false) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(node_hosts);
        if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str(
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n",
        );
        let sub = spec.subdomain.as_deref().filter(|s| !s.is_empty());
        for ip in ips {
            match sub {
                Some(sub) => {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                    let d = cluster_domain.trim_end_matches('.');
                    out.push_str(&format!(
                        "{ip}\t{hostname}.{sub}.{ns}.svc.{d}\t{hostname}\n"
                    ));
                }
                None => out.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default();
            if !names.is_empty() {
                out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn settings(dns: &[&str]) -> DnsSettings {
        DnsSettings {
            cluster_dns: dns.iter().map(|s| s.parse().unwrap()).collect(),
            ..DnsSettings::default()
        }
    }

    fn host() -> ResolvConf {
        ResolvConf::parse(
            "# generated\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0 ndots:1\n",
        )
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_the_search_path() {
        let p = pod(serde_json::json!({"containers": []}));
        let (text, warnings) = resolv_conf(&p, &settings(&["10.96.0.10"]), &host());
        assert_eq!(
            text,
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_the_node_and_says_so() {
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "ClusterFirst"}));
        let (text, warnings) = resolv_conf(&p, &settings(&[]), &host());
        assert_eq!(
            text,
            "nameserver 192.0.2.53\nsearch corp.example\noptions edns0 ndots:1\n"
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("falling back to Default"),
            "{warnings:?}"
        );
    }

    #[test]
    fn default_policy_copies_the_node() {
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "Default"}));
        let (text, _) = resolv_conf(&p, &settings(&["10.96.0.10"]), &host());
        assert!(text.starts_with("nameserver 192.0.2.53\n"), "{text}");
    }

    #[test]
    fn host_network_gets_default_unless_cluster_first_with_host_net() {
        let p = pod(serde_json::json!({"containers": [], "hostNetwork": true}));
        assert_eq!(dns_kind(&p, &settings(&["10.96.0.10"])).0, DnsKind::Host);
        let p = pod(serde_json::json!({"containers": [], "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert_eq!(dns_kind(&p, &settings(&["10.96.0.10"])).0, DnsKind::Cluster);
    }

    #[test]
    fn none_policy_takes_only_the_dns_config() {
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["192.0.2.1"], "searches": ["a.example"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        let (text, _) = resolv_conf(&p, &settings(&["10.96.0.10"]), &host());
        assert_eq!(
            text,
            "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn dns_config_is_merged_like_the_kubelet() {
        let p = pod(serde_json::json!({"containers": [],
            "dnsConfig": {"nameservers": ["10.96.0.10", "192.0.2.1"],
                          "searches": ["svc.cluster.local", "x.example"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]}}));
        let (text, _) = resolv_conf(&p, &settings(&["10.96.0.10"]), &ResolvConf::default());
        assert_eq!(
            text,
            "nameserver 10.96.0.10\nnameserver 192.0.2.1\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local x.example\n\
             options ndots:2 single-request\n"
        );
    }

    #[test]
    fn too_many_nameservers_are_cut_with_a_warning() {
        let p = pod(serde_json::json!({"containers": [],
            "dnsConfig": {"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]}}));
        let (text, warnings) = resolv_conf(&p, &settings(&["10.96.0.10"]), &host());
        assert_eq!(text.matches("nameserver").count(), 3, "{text}");
        assert!(!text.contains("192.0.2.3"), "{text}");
        assert!(warnings[0].contains("nameserver limits"), "{warnings:?}");
    }

    #[test]
    fn parse_reads_the_last_search_line_and_skips_comments() {
        let r = ResolvConf::parse(
            "domain a.example\nsearch b.example c.example # x\n; c\nnameserver 192.0.2.9\n",
        );
        assert_eq!(r.searches, vec!["b.example", "c.example"]);
        assert_eq!(r.nameservers, vec!["192.0.2.9"]);
    }

    #[test]
    fn hosts_names_the_pod_and_its_aliases() {
        let p = pod(serde_json::json!({"containers": [],
            "hostAliases": [{"ip": "192.0.2.7", "hostnames": ["db", "db.local"]}]}));
        let h = hosts_file(
            &p,
            "web-1",
            &["10.244.1.5".parse().unwrap()],
            "cluster.local",
            "",
        );
        assert!(
            h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
            "{h}"
        );
        assert!(h.contains("\n10.244.1.5\tweb-1\n"), "{h}");
        assert!(h.ends_with("192.0.2.7\tdb\tdb.local\n"), "{h}");
    }

    #[test]
    fn hosts_with_a_subdomain_is_fully_qualified() {
        let p = pod(serde_json::json!({"containers": [], "subdomain": "db"}));
        let h = hosts_file(
            &p,
            "web-1",
            &["10.244.1.5".parse().unwrap()],
            "cluster.local",
            "",
        );
        assert!(
            h.contains("\n10.244.1.5\tweb-1.db.shop.svc.cluster.local\tweb-1\n"),
            "{h}"
        );
    }

    #[test]
    fn host_network_hosts_is_the_nodes() {
        let p = pod(serde_json::json!({"containers": [], "hostNetwork": true}));
        let h = hosts_file(
            &p,
            "n1",
            &[],
            "cluster.local",
            "127.0.0.1 localhost\n198.51.100.11 n1",
        );
        assert_eq!(
            h,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n198.51.100.11 n1\n"
        );
    }
}
