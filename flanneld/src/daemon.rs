//! The daemon's main flow: connect, wait for a valid config, set up the backend, take a
//! lease, write the subnet file, then watch the leases and keep the kernel in sync until
//! SIGTERM. etcd outages are ridden out: the kernel keeps forwarding with what it has,
//! and on reconnect the daemon relists, resyncs, and takes its lease again if it lapsed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use tokio::time::{Instant, sleep, sleep_until};

use crate::Error;
use crate::alloc::{self, Choice};
use crate::config::{Backend, NetworkConfig};
use crate::kernel::{Kernel, Uplink, VxlanDev, VxlanSpec};
use crate::lease::{LeaseAttrs, LeaseRecord, format_mac};
use crate::masq;
use crate::metrics::{self, Metrics};
use crate::plan::{self, Context};
use crate::registry::{EtcdSettings, LeaseEvent, Registry};
use crate::subnet_file::{self, SubnetFile};

/// Everything the flags say.
#[derive(Debug, Clone)]
pub struct Options {
    /// How to reach etcd.
    pub etcd: EtcdSettings,
    /// Key prefix (`/coreos.com/network`).
    pub prefix: String,
    /// Uplink names or addresses (`--iface`, the first that exists wins).
    pub iface: Vec<String>,
    /// Patterns matched against interface addresses, then names (`--iface-regex`),
    /// tried when no `--iface` is given or none of them exists.
    pub iface_regex: Vec<regex::Regex>,
    /// Address to announce (`--public-ip`).
    pub public_ip: Option<Ipv4Addr>,
    /// Where the subnet file goes.
    pub subnet_file: PathBuf,
    /// Install masquerade rules.
    pub ip_masq: bool,
    /// Renew this long before the lease expires.
    pub renew_margin: Duration,
    /// TTL of the etcd lease behind a subnet key.
    pub lease_ttl: Duration,
    /// `/healthz` and `/metrics` address, when enabled.
    pub healthz: Option<SocketAddr>,
    /// How often to look at the config key while it is missing or invalid.
    pub config_poll: Duration,
    /// How often to resync the kernel with the leases even without events.
    pub resync: Duration,
}

/// The MAC a new VTEP gets: locally administered, derived from the public IP and VNI,
/// so a node whose device was deleted gets the same MAC back.
pub fn vtep_mac(public_ip: Ipv4Addr, vni: u32) -> [u8; 6] {
    let o = public_ip.octets();
    [0x0e, vni as u8, o[0], o[1], o[2], o[3]]
}

/// When to renew a lease taken now with `ttl`: `margin` before expiry, but never
/// sooner than half the TTL (a margin longer than the TTL would renew in a loop).
pub fn renew_after(ttl: Duration, margin: Duration) -> Duration {
    ttl.saturating_sub(margin).max(ttl / 2)
}

struct Node {
    opts: Options,
    kernel: Kernel,
    uplink: Uplink,
    public_ip: Ipv4Addr,
    config: NetworkConfig,
    vxlan: Option<VxlanDev>,
    attrs: LeaseAttrs,
    mtu: u32,
    own: LeaseRecord,
    renew_at: Option<Instant>,
    leases: BTreeMap<Ipv4Network, LeaseRecord>,
    skipped_logged: BTreeSet<(Ipv4Network, String)>,
    metrics: Arc<Metrics>,
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()> + 'static) -> Result<(), Error> {
    let mut shutdown: Pin<Box<dyn Future<Output = ()>>> = Box::pin(shutdown);
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = opts.healthz {
        metrics::serve(addr, metrics.clone()).await?;
    }
    let kernel = Kernel::connect()?;
    let uplink = find_uplink(&kernel, &opts).await?;
    let public_ip = opts.public_ip.unwrap_or(uplink.addr.ip());
    tracing::info!(iface = %uplink.name, addr = %uplink.addr, %public_ip, mtu = uplink.mtu, "using uplink");
    enable_ip_forward();

    let Some(mut reg) = (tokio::select! {
        r = connect_until_up(&opts) => Some(r),
        _ = &mut shutdown => None,
    }) else {
        return Ok(());
    };
    let Some(config) = (tokio::select! {
        c = wait_for_config(&opts, &mut reg) => Some(c),
        _ = &mut shutdown => None,
    }) else {
        return Ok(());
    };
    tracing::info!(network = %config.network, subnet_len = config.subnet_len, backend = config.backend.type_name(), "network config");

    let (vxlan, attrs, mtu) = match config.backend {
        Backend::Vxlan { vni, port, mtu, .. } => {
            let mtu = mtu.unwrap_or(uplink.mtu.saturating_sub(50));
            let spec = VxlanSpec {
                name: format!("flannel.{vni}"),
                vni,
                port,
                // As flannel: the tunnel's source is the interface address; PublicIP
                // (which may differ behind NAT) is what the lease announces.
                local: uplink.addr.ip(),
                uplink: uplink.index,
                mtu,
                mac: vtep_mac(public_ip, vni),
            };
            let dev = kernel.ensure_vxlan(&spec).await?;
            tracing::info!(device = %spec.name, mac = %format_mac(dev.mac), mtu, "vxlan device ready");
            (Some(dev), LeaseAttrs::vxlan(public_ip, vni, dev.mac), mtu)
        }
        Backend::HostGw => (None, LeaseAttrs::host_gw(public_ip), uplink.mtu),
    };

    let previous = subnet_file::read_previous(&opts.subnet_file);
    let Some((own, renew_at)) = (tokio::select! {
        r = acquire_until_done(&opts, &mut reg, &config, &attrs, previous) => Some(r),
        _ = &mut shutdown => None,
    }) else {
        return Ok(());
    };
    let mut node = Node {
        opts,
        kernel,
        uplink,
        public_ip,
        config,
        vxlan,
        attrs,
        mtu,
        own: own.clone(),
        renew_at,
        leases: BTreeMap::new(),
        skipped_logged: BTreeSet::new(),
        metrics,
    };
    node.own_lease_changed(None).await?;
    let result = node.watch_loop(reg, &mut shutdown).await;
    if node.opts.ip_masq
        && let Err(e) = masq::remove()
    {
        tracing::warn!(error = %e, "remove masquerade rules");
    }
    tracing::info!("stopped; the device and routes stay so pods keep working");
    result
}

async fn find_uplink(kernel: &Kernel, opts: &Options) -> Result<Uplink, Error> {
    if opts.iface.is_empty() && opts.iface_regex.is_empty() {
        return kernel.uplink(None, opts.public_ip).await;
    }
    let mut errors = Vec::new();
    for candidate in &opts.iface {
        match kernel.uplink(Some(candidate), opts.public_ip).await {
            Ok(u) => return Ok(u),
            Err(e) => errors.push(e.to_string()),
        }
    }
    // As flannel: each pattern against every interface address first, then the names.
    let candidates = kernel.interfaces().await?;
    for re in &opts.iface_regex {
        let by_addr = candidates
            .iter()
            .flat_map(|(_, addrs)| addrs)
            .find(|a| re.is_match(&a.to_string()))
            .map(|a| a.to_string());
        let by_name = || {
            candidates
                .iter()
                .find(|(name, _)| re.is_match(name))
                .map(|(name, _)| name.clone())
        };
        match by_addr.or_else(by_name) {
            Some(spec) => return kernel.uplink(Some(&spec), opts.public_ip).await,
            None => errors.push(format!(
                "no interface address or name matches {:?} (--iface-regex)",
                re.as_str()
            )),
        }
    }
    Err(Error::Uplink(errors.join("; ")))
}

fn enable_ip_forward() {
    let path = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => {}
        _ => match std::fs::write(path, "1") {
            Ok(()) => tracing::info!("enabled net.ipv4.ip_forward"),
            Err(e) => {
                tracing::warn!(error = %e, "net.ipv4.ip_forward is off and could not be enabled; pods on other nodes will be unreachable")
            }
        },
    }
}

async fn connect_until_up(opts: &Options) -> Registry {
    let mut delay = Duration::from_millis(200);
    loop {
        match Registry::connect(&opts.etcd, &opts.prefix).await {
            Ok(r) => return r,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "etcd not reachable");
                sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn wait_for_config(opts: &Options, reg: &mut Registry) -> NetworkConfig {
    let key = crate::lease::config_key(&opts.prefix);
    let mut last_error = String::new();
    let mut last_logged = Instant::now();
    loop {
        let problem = match reg.config().await {
            Ok(Some(text)) => match NetworkConfig::parse(&text) {
                Ok(c) => return c,
                Err(e) => format!("{key}: {e}; waiting for a valid config"),
            },
            Ok(None) => format!("{key} is missing; waiting for the network config to be written"),
            Err(e) => format!("{e}; retrying"),
        };
        if problem != last_error || last_logged.elapsed() > Duration::from_secs(30) {
            tracing::error!("{problem}");
            last_error = problem;
            last_logged = Instant::now();
        }
        sleep(opts.config_poll).await;
    }
}

/// Takes a lease, retrying through lost races and etcd errors.
async fn acquire_until_done(
    opts: &Options,
    reg: &mut Registry,
    config: &NetworkConfig,
    attrs: &LeaseAttrs,
    previous: Option<Ipv4Network>,
) -> (LeaseRecord, Option<Instant>) {
    let mut delay = Duration::from_millis(200);
    loop {
        match acquire(opts, reg, config, attrs, previous).await {
            Ok(Some(r)) => return r,
            Ok(None) => {
                tracing::error!(network = %config.network, "no free subnet between SubnetMin and SubnetMax; retrying");
            }
            Err(e) => tracing::warn!(error = %e, "taking a lease failed; retrying"),
        }
        sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn acquire(
    opts: &Options,
    reg: &mut Registry,
    config: &NetworkConfig,
    attrs: &LeaseAttrs,
    previous: Option<Ipv4Network>,
) -> Result<Option<(LeaseRecord, Option<Instant>)>, Error> {
    let mut tried = HashSet::new();
    let mut rng = rand::rng();
    for _ in 0..50 {
        let snap = reg.leases().await?;
        for stale in alloc::stale_own(config, attrs.public_ip, &snap.leases) {
            tracing::info!(subnet = %stale.subnet, "deleting this node's lease that the config no longer allows");
            reg.delete(&stale.subnet).await?;
        }
        match alloc::choose(
            config,
            attrs.public_ip,
            &snap.leases,
            previous,
            &tried,
            &mut rng,
        ) {
            Choice::Reuse(rec) => {
                if let Some(id) = reg.refresh(&rec, attrs, opts.lease_ttl).await? {
                    tracing::info!(subnet = %rec.subnet, reservation = rec.is_reservation(), "reusing this node's lease");
                    return Ok(Some(taken(rec.subnet, attrs, id, opts)));
                }
            }
            Choice::Create(subnet) => match reg.create(&subnet, attrs, opts.lease_ttl).await? {
                Some(id) => {
                    tracing::info!(%subnet, "leased a new subnet");
                    return Ok(Some(taken(subnet, attrs, id, opts)));
                }
                None => {
                    tracing::debug!(%subnet, "lost the race for a subnet; picking another");
                    tried.insert(subnet);
                }
            },
            Choice::Exhausted => return Ok(None),
        }
    }
    Err(Error::Lease("gave up after 50 lost races".into()))
}

fn taken(
    subnet: Ipv4Network,
    attrs: &LeaseAttrs,
    etcd_lease: i64,
    opts: &Options,
) -> (LeaseRecord, Option<Instant>) {
    let renew =
        (etcd_lease != 0).then(|| Instant::now() + renew_after(opts.lease_ttl, opts.renew_margin));
    (
        LeaseRecord {
            subnet,
            attrs: attrs.clone(),
            etcd_lease,
        },
        renew,
    )
}

impl Node {
    /// Applies what follows from owning `self.own` (after a first lease or a change):
    /// VTEP address, subnet file, masquerade rules.
    async fn own_lease_changed(&mut self, old: Option<Ipv4Network>) -> Result<(), Error> {
        let subnet = self.own.subnet;
        if old == Some(subnet) {
            return Ok(());
        }
        if let (Some(dev), Backend::Vxlan { vni, .. }) = (self.vxlan, self.config.backend) {
            let vtep =
                Ipv4Network::new(subnet.network(), 32).map_err(|e| Error::Lease(e.to_string()))?;
            self.kernel
                .set_only_address(dev.index, &format!("flannel.{vni}"), vtep)
                .await?;
        }
        // Rules first: the subnet file tells the CNI plugin that the node is ready.
        if self.opts.ip_masq {
            masq::install(self.config.network, subnet)?;
            tracing::info!(table = masq::TABLE, "masquerade rules installed");
        }
        SubnetFile {
            network: self.config.network,
            subnet,
            mtu: self.mtu,
            ip_masq: self.opts.ip_masq,
        }
        .write(&self.opts.subnet_file)?;
        tracing::info!(%subnet, file = %self.opts.subnet_file.display(), "wrote subnet file");
        self.metrics.has_lease.store(1, Ordering::Relaxed);
        Ok(())
    }

    async fn watch_loop(
        &mut self,
        mut reg: Registry,
        shutdown: &mut Pin<Box<dyn Future<Output = ()>>>,
    ) -> Result<(), Error> {
        let mut first = true;
        loop {
            if !first {
                // A short pause so that a failure that repeats (say, no free subnet)
                // cannot spin.
                tokio::select! {
                    _ = sleep(Duration::from_millis(500)) => {}
                    _ = &mut *shutdown => return Ok(()),
                }
                let r = tokio::select! {
                    r = connect_until_up(&self.opts) => r,
                    _ = &mut *shutdown => return Ok(()),
                };
                reg = r;
                tracing::info!("reconnected to etcd; relisting");
            }
            first = false;
            let snap = match reg.leases().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "list leases");
                    continue;
                }
            };
            self.leases = snap.leases.into_iter().map(|l| (l.subnet, l)).collect();
            if let Err(e) = self.check_own_lease(&mut reg).await {
                tracing::warn!(error = %e, "re-taking this node's lease");
                continue;
            }
            self.sync().await;
            let mut watch = match reg.watch(snap.revision + 1).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "watch leases");
                    continue;
                }
            };
            self.metrics.etcd_up.store(1, Ordering::Relaxed);
            let mut resync = tokio::time::interval(self.opts.resync);
            resync.tick().await;
            loop {
                let renew_at = self
                    .renew_at
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365));
                tokio::select! {
                    _ = &mut *shutdown => return Ok(()),
                    ev = watch.next() => match ev {
                        Ok(events) => {
                            let mut own_touched = false;
                            for e in events {
                                match e {
                                    LeaseEvent::Put(r) => {
                                        own_touched |= r.subnet == self.own.subnet;
                                        tracing::info!(subnet = %r.subnet, public_ip = %r.attrs.public_ip, "lease added or updated");
                                        self.leases.insert(r.subnet, r);
                                    }
                                    LeaseEvent::Delete(s) => {
                                        own_touched |= s == self.own.subnet;
                                        tracing::info!(subnet = %s, "lease removed");
                                        self.leases.remove(&s);
                                    }
                                }
                            }
                            if own_touched && let Err(e) = self.check_own_lease(&mut reg).await {
                                tracing::warn!(error = %e, "re-taking this node's lease");
                                break;
                            }
                            self.sync().await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lease watch ended; reconnecting");
                            break;
                        }
                    },
                    _ = sleep_until(renew_at) => {
                        match reg.refresh(&self.own, &self.attrs, self.opts.lease_ttl).await {
                            Ok(Some(id)) => {
                                self.own.etcd_lease = id;
                                self.renew_at = taken(self.own.subnet, &self.attrs, id, &self.opts).1;
                                self.metrics.renewals.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(subnet = %self.own.subnet, "renewed lease");
                            }
                            Ok(None) => {
                                tracing::warn!(subnet = %self.own.subnet, "lease vanished before renewal; taking one again");
                                if let Err(e) = self.check_own_lease(&mut reg).await {
                                    tracing::warn!(error = %e, "re-taking this node's lease");
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "renew lease; reconnecting");
                                self.renew_at = Some(Instant::now() + Duration::from_secs(1));
                                break;
                            }
                        }
                    }
                    _ = resync.tick() => self.sync().await,
                }
            }
            self.metrics.etcd_up.store(0, Ordering::Relaxed);
        }
    }

    /// Makes sure the leases map holds this node's lease with its attributes; takes a
    /// lease again (the same subnet if still free) when it lapsed or was taken over.
    async fn check_own_lease(&mut self, reg: &mut Registry) -> Result<(), Error> {
        let ok = self
            .leases
            .get(&self.own.subnet)
            .is_some_and(|l| l.attrs == self.attrs);
        if ok {
            if let Some(l) = self.leases.get(&self.own.subnet) {
                self.own.etcd_lease = l.etcd_lease;
            }
            return Ok(());
        }
        let old = self.own.subnet;
        let Some((own, renew_at)) =
            acquire(&self.opts, reg, &self.config, &self.attrs, Some(old)).await?
        else {
            return Err(Error::Lease("no free subnet".into()));
        };
        tracing::info!(old = %old, new = %own.subnet, "lease taken again");
        self.own = own.clone();
        self.renew_at = renew_at;
        self.leases.insert(own.subnet, own);
        self.own_lease_changed(Some(old)).await
    }

    /// Brings the kernel in line with the leases.
    async fn sync(&mut self) {
        let started = std::time::Instant::now();
        let ctx = Context {
            own_subnet: self.own.subnet,
            own_ip: self.public_ip,
            backend: self.config.backend,
            vxlan_index: self.vxlan.map(|d| d.index).unwrap_or(0),
            uplink_index: self.uplink.index,
            uplink_net: self.uplink.addr,
        };
        let leases: Vec<LeaseRecord> = self.leases.values().cloned().collect();
        self.metrics
            .leases
            .store(leases.len() as u64, Ordering::Relaxed);
        let (wanted, skipped) = plan::desired(&ctx, &leases);
        for s in skipped {
            if self.skipped_logged.insert((s.subnet, s.reason.clone())) {
                tracing::warn!(subnet = %s.subnet, reason = %s.reason, "lease not routed");
            }
        }
        let result = async {
            let present = self
                .kernel
                .dump(
                    self.config.network,
                    self.own.subnet,
                    self.vxlan.map(|d| d.index),
                    self.uplink.index,
                )
                .await?;
            let changes = plan::diff(&wanted, &present);
            if !changes.is_empty() {
                tracing::info!(
                    add_routes = changes.set_routes.len(),
                    del_routes = changes.del_routes.len(),
                    add_neighs = changes.set_neighs.len(),
                    del_neighs = changes.del_neighs.len(),
                    add_fdbs = changes.set_fdbs.len(),
                    del_fdbs = changes.del_fdbs.len(),
                    "syncing kernel"
                );
                self.kernel.apply(&changes, ctx.vxlan_index).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "kernel sync failed; will retry");
        }
        self.metrics
            .sync_done(started.elapsed(), result.is_ok(), wanted.routes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_respects_margin_and_half_ttl() {
        let day = Duration::from_secs(86400);
        assert_eq!(
            renew_after(day, Duration::from_secs(3600)),
            Duration::from_secs(82800)
        );
        assert_eq!(
            renew_after(Duration::from_secs(10), Duration::from_secs(3600)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast() {
        let a = vtep_mac(Ipv4Addr::new(198, 51, 100, 11), 1);
        assert_eq!(a, vtep_mac(Ipv4Addr::new(198, 51, 100, 11), 1));
        assert_ne!(a, vtep_mac(Ipv4Addr::new(198, 51, 100, 12), 1));
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
    }
}
