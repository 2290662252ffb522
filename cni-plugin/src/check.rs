//! CHECK: the sandbox's interface, addresses and routes, the host end on the bridge, and
//! the IPAM allocation, against `prevResult`.

use skein_netns::NetNs;
use skein_netns::netlink::Netlink;

use crate::config::{IpamPlan, Need, NetConf, resolve};
use crate::env::Invocation;
use crate::error::{CniError, CniResult, code};
use crate::ipam::{delegate, store::Store};
use crate::result::{CniOutput, at_least};
use crate::wire;

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg)
}

/// Runs CHECK.
pub fn check(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> CniResult<()> {
    let plan = resolve(conf, Need::Full)?;
    if !at_least(&plan.version, "0.4.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CHECK is not supported by cniVersion {}", plan.version),
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs prevResult in the network config"))?;
    let prev = CniOutput::from_json(prev)?;
    let netns_path = inv.netns.clone().unwrap_or_default();
    let ns = NetNs::open(&netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("open CNI_NETNS {netns_path}: {e}"),
        )
    })?;

    // IPAM first, as the reference plugins do.
    match &plan.ipam {
        IpamPlan::BuiltIn { data_dir, .. } => {
            let store = Store::open(data_dir, &plan.name)?;
            let held = store.get_by_id(&inv.container_id, &inv.ifname)?;
            for ip in &prev.ips {
                if !held.contains(&ip.address.ip) {
                    return Err(mismatch(format!(
                        "address {} is not allocated to {}/{} in {}",
                        ip.address.ip,
                        inv.container_id,
                        inv.ifname,
                        store.dir().display()
                    )));
                }
            }
        }
        IpamPlan::Delegated { plugin } => {
            delegate::exec(plugin, "CHECK", &inv.path, stdin)?;
        }
    }

    let mut pod = Netlink::open_in(&ns).map_err(CniError::kernel)?;
    let link = pod
        .link(&inv.ifname)
        .map_err(CniError::kernel)?
        .ok_or_else(|| {
            mismatch(format!(
                "interface {} not found in netns {netns_path}",
                inv.ifname
            ))
        })?;
    if let Some(want) = prev
        .interfaces
        .iter()
        .find(|i| i.name == inv.ifname && i.sandbox.is_some())
        && !want.mac.is_empty()
        && !want.mac.eq_ignore_ascii_case(&link.mac_string())
    {
        return Err(mismatch(format!(
            "interface {}: mac {} but prevResult says {}",
            inv.ifname,
            link.mac_string(),
            want.mac
        )));
    }
    let addrs = pod.addresses(Some(link.index)).map_err(CniError::kernel)?;
    for ip in &prev.ips {
        if !addrs
            .iter()
            .any(|a| a.addr == ip.address.ip && a.prefix_len == ip.address.prefix)
        {
            return Err(mismatch(format!(
                "interface {}: address {} missing",
                inv.ifname, ip.address
            )));
        }
    }
    let routes = pod.routes().map_err(CniError::kernel)?;
    for r in &prev.routes {
        let found = routes.iter().any(|k| {
            k.dst == r.dst.network()
                && k.dst_len == r.dst.prefix
                && (r.gw.is_none() || k.gateway == r.gw)
        });
        if !found {
            return Err(mismatch(format!(
                "route to {}{} missing in netns {netns_path}",
                r.dst,
                r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )));
        }
    }

    let mut host = Netlink::open().map_err(CniError::kernel)?;
    let bridge = host
        .link(&plan.bridge)
        .map_err(CniError::kernel)?
        .ok_or_else(|| mismatch(format!("bridge {} not found", plan.bridge)))?;
    let name = wire::host_veth_name(&inv.container_id, &inv.ifname);
    let veth = host
        .link(&name)
        .map_err(CniError::kernel)?
        .ok_or_else(|| mismatch(format!("host veth {name} not found")))?;
    if veth.master != Some(bridge.index) {
        return Err(mismatch(format!(
            "host veth {name} is not a port of {}",
            plan.bridge
        )));
    }
    Ok(())
}
