//! ADD: allocate, wire, configure, answer; any failure undoes what was done, in reverse.

use std::net::IpAddr;

use serde_json::Value;
use skein_netns::NetNs;
use skein_netns::netlink::{Netlink, Route};

use crate::cidr::Cidr;
use crate::config::{IpamPlan, Need, NetConf, Plan, resolve};
use crate::env::Invocation;
use crate::error::{CniError, CniResult, code};
use crate::ipam::{self, delegate, store::Store};
use crate::result::{CniOutput, Interface, IpConfig, RouteConfig};
use crate::{masq, wire};

/// Default MTU when neither config, subnet file nor a default route says.
const FALLBACK_MTU: u32 = 1500;

/// An address with its gateway.
type Addressed = (Cidr, Option<IpAddr>);

/// What ADD did so far, for rollback.
#[derive(Default)]
struct Done {
    builtin_ips: Vec<IpAddr>,
    delegated: bool,
    veth: Option<String>,
    masq: Vec<IpAddr>,
}

/// Runs ADD and returns the result JSON.
pub fn add(inv: &Invocation, conf: &NetConf, stdin: &[u8]) -> CniResult<Value> {
    let plan = resolve(conf, Need::Full)?;
    let netns_path = inv.netns.clone().unwrap_or_default();
    let pod_ns = NetNs::open(&netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("open CNI_NETNS {netns_path}: {e}"),
        )
    })?;
    let mut host = Netlink::open().map_err(CniError::kernel)?;
    let mut pod = Netlink::open_in(&pod_ns).map_err(CniError::kernel)?;

    let mut done = Done::default();
    match attach(inv, &plan, stdin, &pod_ns, &mut host, &mut pod, &mut done) {
        Ok(out) => Ok(out.to_json(&plan.version)),
        Err(e) => {
            let problems = rollback(inv, &plan, stdin, &mut host, done);
            if problems.is_empty() {
                Err(e)
            } else {
                let details = format!("rollback also failed: {}", problems.join("; "));
                Err(e.details(details))
            }
        }
    }
}

fn attach(
    inv: &Invocation,
    plan: &Plan,
    stdin: &[u8],
    pod_ns: &NetNs,
    host: &mut Netlink,
    pod: &mut Netlink,
    done: &mut Done,
) -> CniResult<CniOutput> {
    // 1. Addresses.
    let (ips, ipam_routes, ipam_dns): (Vec<Addressed>, Vec<RouteConfig>, Value) = match &plan.ipam {
        IpamPlan::BuiltIn { sets, data_dir } => {
            let store = Store::open(data_dir, &plan.name)?;
            let got = ipam::allocate(&store, sets, &inv.container_id, &inv.ifname)?;
            done.builtin_ips = got.iter().map(|a| a.address.ip).collect();
            (
                got.into_iter()
                    .map(|a| (a.address, Some(a.gateway)))
                    .collect(),
                Vec::new(),
                Value::Null,
            )
        }
        IpamPlan::Delegated { plugin } => {
            let out = delegate::exec(plugin, "ADD", &inv.path, stdin)?.ok_or_else(|| {
                CniError::new(
                    code::IPAM,
                    format!("IPAM plugin {plugin} returned no result"),
                )
            })?;
            done.delegated = true;
            if out.ips.is_empty() {
                return Err(CniError::new(
                    code::IPAM,
                    format!("IPAM plugin {plugin} returned no addresses"),
                ));
            }
            (
                out.ips.iter().map(|i| (i.address, i.gateway)).collect(),
                out.routes,
                out.dns,
            )
        }
    };

    // 2. The bridge, with the gateways as its addresses.
    let mtu = match plan.mtu {
        Some(m) => m,
        None => wire::default_route_mtu(host)?.unwrap_or(FALLBACK_MTU),
    };
    let gateways: Vec<Cidr> = if plan.is_gateway {
        ips.iter()
            .filter_map(|(a, gw)| {
                gw.map(|g| Cidr {
                    ip: g,
                    prefix: a.prefix,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let bridge = wire::ensure_bridge(host, &plan.bridge, mtu, &gateways)?;
    if plan.is_gateway {
        wire::enable_forwarding(
            ips.iter().any(|(a, _)| a.ip.is_ipv4()),
            ips.iter().any(|(a, _)| a.ip.is_ipv6()),
        )?;
    }

    // 3. The veth pair, pod end straight into the sandbox.
    let host_name = wire::host_veth_name(&inv.container_id, &inv.ifname);
    done.veth = Some(host_name.clone());
    let host_link = wire::create_veth(
        host,
        pod_ns,
        &host_name,
        &inv.ifname,
        mtu,
        &bridge,
        plan.hairpin,
    )?;

    // 4. Addresses and routes in the pod.
    let gw_of = |v4: bool| {
        ips.iter()
            .find(|(a, _)| a.ip.is_ipv4() == v4)
            .and_then(|(_, g)| *g)
    };
    let mut result_routes: Vec<RouteConfig> = Vec::new();
    if plan.is_default_gateway {
        for v4 in [true, false] {
            if let Some(gw) = gw_of(v4) {
                let any = if v4 { "0.0.0.0/0" } else { "::/0" };
                result_routes.push(RouteConfig {
                    dst: any.parse().expect("literal"),
                    gw: Some(gw),
                });
            }
        }
    }
    for r in plan.routes.iter().chain(ipam_routes.iter()) {
        if result_routes.iter().any(|x| x.dst == r.dst) {
            continue;
        }
        result_routes.push(r.clone());
    }
    let mut pod_routes: Vec<Route> = Vec::new();
    for r in &result_routes {
        let v4 = r.dst.ip.is_ipv4();
        if !ips.iter().any(|(a, _)| a.ip.is_ipv4() == v4) {
            continue;
        }
        let gw = r.gw.or_else(|| gw_of(v4));
        pod_routes.push(wire::route(r.dst, gw));
    }
    let addrs: Vec<Cidr> = ips.iter().map(|(a, _)| *a).collect();
    let pod_link = wire::configure_pod(pod, &inv.ifname, &addrs, &pod_routes)?;

    // 5. Masquerade.
    if plan.ip_masq {
        done.masq = addrs.iter().map(|a| a.ip).collect();
        // The pod's own networks stay unmasqueraded, also when a delegated IPAM plugin
        // chose them.
        let mut exempt = plan.masq_exempt.clone();
        exempt.extend(addrs.iter().map(|a| a.masked()));
        masq::add(&plan.name, &done.masq, &exempt)?;
    }

    let bridge = host
        .link(&plan.bridge)
        .map_err(CniError::kernel)?
        .unwrap_or(bridge);
    let mut dns = plan.dns.clone();
    if dns.is_null() {
        dns = ipam_dns;
    }
    Ok(CniOutput {
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: bridge.mac_string(),
                mtu: Some(bridge.mtu),
                sandbox: None,
            },
            Interface {
                name: host_link.name.clone(),
                mac: host_link.mac_string(),
                mtu: Some(host_link.mtu),
                sandbox: None,
            },
            Interface {
                name: pod_link.name.clone(),
                mac: pod_link.mac_string(),
                mtu: Some(pod_link.mtu),
                sandbox: Some(pod_ns.path().display().to_string()),
            },
        ],
        ips: ips
            .iter()
            .map(|(a, gw)| IpConfig {
                address: *a,
                gateway: *gw,
                interface: Some(2),
            })
            .collect(),
        routes: result_routes,
        dns,
    })
}

fn rollback(
    inv: &Invocation,
    plan: &Plan,
    stdin: &[u8],
    host: &mut Netlink,
    done: Done,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !done.masq.is_empty()
        && let Err(e) = masq::del(&plan.name, &done.masq)
    {
        problems.push(e.msg);
    }
    if let Some(v) = &done.veth
        && let Err(e) = host.del_link_by_name(v)
    {
        problems.push(e.to_string());
    }
    if !done.builtin_ips.is_empty()
        && let IpamPlan::BuiltIn { data_dir, .. } = &plan.ipam
    {
        match Store::open(data_dir, &plan.name) {
            Ok(store) => {
                for ip in &done.builtin_ips {
                    if let Err(e) = store.release(*ip) {
                        problems.push(e.msg);
                    }
                }
            }
            Err(e) => problems.push(e.msg),
        }
    }
    if done.delegated
        && let IpamPlan::Delegated { plugin } = &plan.ipam
        && let Err(e) = delegate::exec(plugin, "DEL", &inv.path, stdin)
    {
        problems.push(e.msg);
    }
    problems
}
