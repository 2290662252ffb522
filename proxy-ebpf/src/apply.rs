//! One-shot programming of a node from a complete set of Services: install (or keep) the
//! datapath, read the pinned maps, resync them to the set. `skein-proxy apply` and the
//! tests use it; the daemon does the same steps with Services from the API.

use std::time::Instant;

use crate::Error;
use crate::datapath::{BpfMaps, InstallConfig, InstallReport, install};
use crate::desired::NodeContext;
use crate::model::ServiceSet;
use crate::reconcile::{MapWriter, Reconciler};

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplySummary {
    /// Programs attached now and kept from before.
    pub install: InstallReport,
    /// Map writes made (0 when the maps already matched).
    pub writes: usize,
    /// Services with map entries, and backend slots.
    pub services: usize,
    /// Backend slots written in total.
    pub backends: usize,
    /// Time spent writing maps.
    pub write_micros: u128,
    /// Pod routing: the pod veths the program is attached to (`None` = off).
    pub pod_ports: Option<usize>,
}

/// Installs the datapath described by `cfg` and makes the maps hold exactly `set`.
pub fn apply_set(
    cfg: &InstallConfig,
    node: NodeContext,
    set: &ServiceSet,
) -> Result<ApplySummary, Error> {
    let report = install(cfg)?;
    let pod_ports = match crate::datapath::setup_pod_routing(cfg)? {
        // A one-shot apply does not wait for the bridge: it says what is missing.
        Some(r) => match r.waiting_for() {
            Some(why) => return Err(Error::Config(why.to_owned())),
            None => Some(r.attached()),
        },
        None => None,
    };
    let mut maps = BpfMaps::open(&cfg.pin_dir)?;
    let current = maps.read_state()?;
    let mut r = Reconciler::new(node, &current);
    let ops = r.resync(&set.services, &current)?;
    let t = Instant::now();
    maps.write_all(&ops)?;
    let write_micros = t.elapsed().as_micros();
    let groups = crate::reconcile::groups_with_backend_changes(&ops);
    if !groups.is_empty() {
        maps.purge_udp_flows(&groups, &r.live_backends(&groups))?;
    }
    let (services, backends) = r.counts();
    Ok(ApplySummary {
        install: report,
        writes: ops.len(),
        services,
        backends,
        write_micros,
        pod_ports,
    })
}
