//! DEL: release the addresses, remove the veth and masquerade entries. Idempotent: a
//! missing netns, interface or allocation is not an error; every step runs even when
//! an earlier one failed, and all failures are reported.

use skein_netns::NetNs;
use skein_netns::netlink::Netlink;

use crate::config::{IpamPlan, Need, NetConf, resolve};
use crate::env::Invocation;
use crate::error::{CniError, CniResult};
use crate::ipam::{delegate, store::Store};
use crate::{masq, wire};

/// Runs DEL.
pub fn del(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> CniResult<()> {
    let plan = resolve(conf, Need::Teardown)?;
    let mut problems: Vec<CniError> = Vec::new();

    // Addresses first: they are what a later ADD could collide on.
    let mut released = Vec::new();
    match &plan.ipam {
        IpamPlan::BuiltIn { data_dir, .. } => {
            match Store::open(data_dir, &plan.name)
                .and_then(|s| s.release_by_id(&inv.container_id, &inv.ifname))
            {
                Ok(ips) => released = ips,
                Err(e) => problems.push(e),
            }
        }
        IpamPlan::Delegated { plugin } => {
            if let Err(e) = delegate::exec(plugin, "DEL", &inv.path, stdin) {
                problems.push(e);
            }
        }
    }

    match Netlink::open() {
        Ok(mut host) => {
            let name = wire::host_veth_name(&inv.container_id, &inv.ifname);
            match host.del_link_by_name(&name) {
                Ok(true) => {}
                Ok(false) => remove_pod_end(inv, &mut problems),
                Err(e) => problems.push(CniError::kernel(e)),
            }
        }
        Err(e) => problems.push(CniError::kernel(e)),
    }

    if plan.ip_masq
        && !released.is_empty()
        && let Err(e) = masq::del(&plan.name, &released)
    {
        problems.push(e);
    }

    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => {
            let first = problems.remove(0);
            let rest: Vec<String> = problems.into_iter().map(|p| p.msg).collect();
            Err(first.details(rest.join("; ")))
        }
    }
}

/// The host end was not there (another naming, or the pair half-made): remove the pod
/// end if the sandbox still has it. A gone netns is fine.
fn remove_pod_end(inv: &Invocation, problems: &mut Vec<CniError>) {
    let Some(path) = &inv.netns else { return };
    let Ok(ns) = NetNs::open(path) else { return };
    match Netlink::open_in(&ns) {
        Ok(mut pod) => match pod.link(&inv.ifname) {
            Ok(Some(l)) if l.kind.as_deref() == Some("veth") => {
                if let Err(e) = pod.del_link(l.index)
                    && !e.is_not_found()
                {
                    problems.push(CniError::kernel(e));
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(CniError::kernel(e)),
        },
        Err(e) => problems.push(CniError::kernel(e)),
    }
}
