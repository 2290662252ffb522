//! GC (1.1.0): release every allocation of this network that is not in
//! `cni.dev/valid-attachments`, and remove the host veths on the bridge that belong to
//! no valid attachment.

use std::collections::HashSet;

use skein_netns::netlink::Netlink;

use crate::config::{IpamPlan, Need, NetConf, resolve};
use crate::error::{CniError, CniResult, code};
use crate::ipam::{delegate, store::Store};
use crate::result::at_least;
use crate::{masq, wire};

/// What GC removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Addresses released.
    pub addresses: Vec<std::net::IpAddr>,
    /// Host veths removed.
    pub veths: Vec<String>,
}

/// Runs GC.
pub fn gc(conf: &NetConf, path: &[String], stdin: &[u8]) -> CniResult<Collected> {
    let plan = resolve(conf, Need::Teardown)?;
    if !at_least(&plan.version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("GC is not supported by cniVersion {}", plan.version),
        ));
    }
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let valid_pairs: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let valid_veths: HashSet<String> = valid
        .iter()
        .map(|a| wire::host_veth_name(&a.container_id, &a.ifname))
        .collect();
    let mut out = Collected::default();
    let mut problems = Vec::new();

    if let IpamPlan::BuiltIn { data_dir, .. } = &plan.ipam
        && data_dir.join(&plan.name).is_dir()
    {
        let store = Store::open(data_dir, &plan.name)?;
        for e in store.entries()? {
            if !valid_pairs.contains(&(e.container_id.as_str(), e.ifname.as_str())) {
                match store.release(e.ip) {
                    Ok(()) => out.addresses.push(e.ip),
                    Err(err) => problems.push(err.msg),
                }
            }
        }
    }

    if let IpamPlan::Delegated { plugin } = &plan.ipam
        && let Err(e) = delegate::exec(plugin, "GC", path, stdin)
    {
        problems.push(e.msg);
    }

    let mut host = Netlink::open().map_err(CniError::kernel)?;
    if let Some(bridge) = host.link(&plan.bridge).map_err(CniError::kernel)? {
        for l in host.links().map_err(CniError::kernel)? {
            if l.master == Some(bridge.index)
                && wire::is_host_veth_name(&l.name)
                && !valid_veths.contains(&l.name)
            {
                match host.del_link(l.index) {
                    Ok(()) => out.veths.push(l.name),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
    }

    if plan.ip_masq
        && !out.addresses.is_empty()
        && let Err(e) = masq::del(&plan.name, &out.addresses)
    {
        problems.push(e.msg);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(CniError::new(
            code::IPAM,
            format!("GC: {}", problems.join("; ")),
        ))
    }
}
