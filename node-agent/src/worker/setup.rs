//! The pod's sandbox from the worker's side: its resolv.conf and hosts files, the pause
//! process, CNI ADD of the loopback and pod networks (rolled back on failure), and the
//! teardown (CNI DEL, pause, netns).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

use super::{Worker, hostname, random_id};
use crate::cni::{self, Attachment};
use crate::error::io_err;
use crate::pod_dns;
use crate::sandbox;
use crate::state::{SandboxRecord, SetupTimes};

impl Worker {
    pub(super) async fn create_sandbox(&mut self) -> crate::error::Result<()> {
        let spec = self.rec.pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let id = random_id();
        let t0 = Instant::now();
        let binds = self.write_dns_files(&[])?;
        let started = sandbox::start(
            &self.shared.cfg.pause_exe,
            &sandbox::SandboxSpec {
                pod: self.key.clone(),
                hostname: hostname(&self.rec.pod),
                host_network,
                netns_path: self.shared.state.netns_path(&self.uid),
                cgroup: self.shared.cgroups.sandbox(&self.uid),
                binds,
            },
        )?;
        let mut record = SandboxRecord {
            id: id.clone(),
            pause: started.pause,
            netns: started.netns.clone(),
            ips: Vec::new(),
            network: None,
            loopback: false,
            created_at: SystemTime::now(),
            setup: SetupTimes {
                pause: t0.elapsed(),
                cni_add: Duration::ZERO,
            },
        };
        let t1 = Instant::now();
        if host_network {
            record.ips = self.shared.cfg.node_ip.into_iter().collect();
        } else if let Err(e) = self.attach(&mut record).await {
            for err in sandbox::stop(&record.pause, record.netns.as_deref()) {
                tracing::warn!(pod = %self.key, error = %err, "rollback of sandbox");
            }
            return Err(e);
        }
        // The hosts file names the pod's IPs, known only now: rewritten in place, so the
        // bind mount in the pod sees it.
        if let Err(e) = self.write_dns_files(&record.ips) {
            self.rec.sandbox = Some(record);
            for err in self.teardown_sandbox().await {
                tracing::warn!(pod = %self.key, error = %err, "rollback of sandbox");
            }
            return Err(e);
        }
        record.setup.cni_add = t1.elapsed();
        record.created_at = SystemTime::now();
        tracing::info!(pod = %self.key, sandbox = %id, pause = record.pause.pid, ips = ?record.ips, "sandbox ready");
        self.rec.sandbox = Some(record);
        self.dirty = true;
        self.persist();
        Ok(())
    }

    /// Writes the pod's resolv.conf and hosts into its state dir (in place: the files may
    /// already be bound in the pod) and returns the binds for a new sandbox.
    fn write_dns_files(
        &self,
        ips: &[std::net::IpAddr],
    ) -> crate::error::Result<Vec<(PathBuf, PathBuf)>> {
        let dns = &self.shared.cfg.dns;
        let state = &self.shared.state;
        let host = std::fs::read_to_string(&dns.resolv_conf).unwrap_or_else(|e| {
            tracing::warn!(path = %dns.resolv_conf.display(), error = %e, "cannot read the node's resolv.conf; using an empty one");
            String::new()
        });
        let (resolv, warnings) =
            pod_dns::resolv_conf(&self.rec.pod, dns, &pod_dns::ResolvConf::parse(&host));
        if ips.is_empty() {
            for w in warnings {
                tracing::warn!(pod = %self.key, "{w}");
            }
        }
        let node_hosts = std::fs::read_to_string(&dns.hosts_file).unwrap_or_default();
        let hosts = pod_dns::hosts_file(
            &self.rec.pod,
            &hostname(&self.rec.pod),
            ips,
            &dns.cluster_domain,
            &node_hosts,
        );
        let dir = state.pod_dir(&self.uid);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let resolv_path = state.resolv_conf_path(&self.uid);
        let hosts_path = state.hosts_path(&self.uid);
        std::fs::write(&resolv_path, resolv).map_err(io_err("write", &resolv_path))?;
        std::fs::write(&hosts_path, hosts).map_err(io_err("write", &hosts_path))?;
        Ok(vec![
            (resolv_path, PathBuf::from("/etc/resolv.conf")),
            (hosts_path, PathBuf::from("/etc/hosts")),
        ])
    }

    fn attachment(&self, sb: &SandboxRecord, ifname: &str) -> Attachment {
        let m = &self.rec.pod.metadata;
        let args = vec![
            ("IgnoreUnknown".to_owned(), "1".to_owned()),
            (
                "K8S_POD_NAMESPACE".into(),
                m.namespace.clone().unwrap_or("default".into()),
            ),
            ("K8S_POD_NAME".into(), m.name.clone().unwrap_or_default()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), sb.id.clone()),
            ("K8S_POD_UID".into(), self.uid.clone()),
        ];
        let mut caps = Map::new();
        let ports = port_mappings(&self.rec.pod);
        if !ports.is_empty() {
            caps.insert("portMappings".into(), Value::Array(ports));
        }
        Attachment {
            container_id: sb.id.clone(),
            netns: sb.netns.clone().unwrap_or_default(),
            ifname: ifname.to_owned(),
            args,
            capability_args: caps,
        }
    }

    /// CNI ADD: the loopback network (when the plugin exists), then the pod network.
    async fn attach(&self, sb: &mut SandboxRecord) -> crate::error::Result<()> {
        let cni = &self.shared.cni;
        let net = cni::load_dir(&self.shared.cfg.cni_conf_dir)?;
        let lo = cni::loopback_network();
        if cni.has_plugin("loopback") {
            cni.add(&lo, &self.attachment(sb, "lo")).await?;
            sb.loopback = true;
        }
        let att = self.attachment(sb, "eth0");
        match cni.add(&net, &att).await {
            Ok(res) => {
                tracing::info!(pod = %self.key, network = %net.name, plugins = ?net.types(), ips = ?res.ips, "cni add");
                sb.ips = res.ips;
                sb.network = Some(net.name.clone());
                Ok(())
            }
            Err(e) => {
                if sb.loopback {
                    let _ = cni.del(&lo, &self.attachment(sb, "lo")).await;
                }
                Err(e)
            }
        }
    }

    /// CNI DEL and sandbox stop; keeps going past failures and returns all of them.
    pub(super) async fn teardown_sandbox(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(sb) = self.rec.sandbox.take() else {
            return errors;
        };
        self.dirty = true;
        let cni = &self.shared.cni;
        if let Some(name) = &sb.network {
            // DEL with the config the attachment was made with (cached), else today's.
            let net = cni
                .cached_network(name, &sb.id, "eth0")
                .map(Ok)
                .unwrap_or_else(|| cni::load_dir(&self.shared.cfg.cni_conf_dir));
            match net {
                Ok(net) => {
                    if let Err(e) = cni.del(&net, &self.attachment(&sb, "eth0")).await {
                        errors.push(e.to_string());
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if sb.loopback
            && let Err(e) = cni
                .del(&cni::loopback_network(), &self.attachment(&sb, "lo"))
                .await
        {
            errors.push(e.to_string());
        }
        errors.extend(sandbox::stop(&sb.pause, sb.netns.as_deref()));
        errors
    }
}

/// `portMappings` capability args (for portmap) from the containers' hostPorts.
fn port_mappings(pod: &Pod) -> Vec<Value> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                let mut m = json!({
                    "hostPort": hp,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                });
                if let Some(ip) = p.host_ip.as_ref().filter(|s| !s.is_empty()) {
                    m["hostIP"] = json!(ip);
                }
                out.push(m);
            }
        }
    }
    out
}
