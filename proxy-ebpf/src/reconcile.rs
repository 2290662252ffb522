//! The reconciler: desired entries -> concrete map contents -> the difference against
//! what the maps hold -> an ordered list of writes. Pure: the maps are behind
//! [`MapWriter`]; [`MapState`] is both the in-memory picture and a fake writer.
//!
//! Write order keeps readers consistent: new backend slots, Maglev tables and names
//! first, then frontends (their backend count flips last), then removed frontends, then
//! removed slots, tables and names.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::Error;
use crate::desired::{NodeContext, ServiceEntries, service_entries};
use crate::maglev;
use crate::maps::{Backend, BeKey, GroupName, MAX_GROUPS, MaglevTable, NAME_LEN, SvcKey, SvcValue};
use crate::model::Service;

/// The contents of the maps the reconciler owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapState {
    /// `skein_svc`.
    pub svc: BTreeMap<SvcKey, SvcValue>,
    /// `skein_be`.
    pub be: BTreeMap<BeKey, Backend>,
    /// `skein_maglev`.
    pub maglev: BTreeMap<u32, Box<MaglevTable>>,
    /// `skein_names`.
    pub names: BTreeMap<u32, GroupName>,
}

/// One map write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutBackend(BeKey, Backend),
    PutMaglev(u32, Box<MaglevTable>),
    PutName(u32, GroupName),
    PutSvc(SvcKey, SvcValue),
    DelSvc(SvcKey),
    DelBackend(BeKey),
    DelMaglev(u32),
    DelName(u32),
}

/// The groups whose backend slots `ops` change (a slot written or removed).
pub fn groups_with_backend_changes(ops: &[Op]) -> BTreeSet<u32> {
    ops.iter()
        .filter_map(|op| match op {
            Op::PutBackend(k, _) | Op::DelBackend(k) => Some(k.group),
            _ => None,
        })
        .collect()
}

/// Something that takes map writes: the pinned BPF maps, or a [`MapState`] in tests.
pub trait MapWriter {
    /// Applies one write.
    fn write(&mut self, op: &Op) -> Result<(), Error>;

    /// Applies writes in order, stopping at the first failure.
    fn write_all(&mut self, ops: &[Op]) -> Result<(), Error> {
        ops.iter().try_for_each(|op| self.write(op))
    }
}

impl MapWriter for MapState {
    fn write(&mut self, op: &Op) -> Result<(), Error> {
        match op {
            Op::PutBackend(k, v) => {
                self.be.insert(*k, *v);
            }
            Op::PutMaglev(k, v) => {
                self.maglev.insert(*k, v.clone());
            }
            Op::PutName(k, v) => {
                self.names.insert(*k, *v);
            }
            Op::PutSvc(k, v) => {
                self.svc.insert(*k, *v);
            }
            Op::DelSvc(k) => {
                self.svc.remove(k);
            }
            Op::DelBackend(k) => {
                self.be.remove(k);
            }
            Op::DelMaglev(k) => {
                self.maglev.remove(k);
            }
            Op::DelName(k) => {
                self.names.remove(k);
            }
        }
        Ok(())
    }
}

impl MapState {
    /// Adds `other`'s entries (services own disjoint entries).
    pub fn merge(&mut self, other: &MapState) {
        self.svc.extend(other.svc.iter().map(|(k, v)| (*k, *v)));
        self.be.extend(other.be.iter().map(|(k, v)| (*k, *v)));
        self.maglev
            .extend(other.maglev.iter().map(|(k, v)| (*k, v.clone())));
        self.names.extend(other.names.iter().map(|(k, v)| (*k, *v)));
    }

    /// Number of entries over all four maps.
    pub fn len(&self) -> usize {
        self.svc.len() + self.be.len() + self.maglev.len() + self.names.len()
    }

    /// True when all four maps are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ordered writes that turn `current` into `desired`.
pub fn diff(current: &MapState, desired: &MapState) -> Vec<Op> {
    let mut ops = Vec::new();
    for (k, v) in &desired.be {
        if current.be.get(k) != Some(v) {
            ops.push(Op::PutBackend(*k, *v));
        }
    }
    for (k, v) in &desired.maglev {
        if current.maglev.get(k) != Some(v) {
            ops.push(Op::PutMaglev(*k, v.clone()));
        }
    }
    for (k, v) in &desired.names {
        if current.names.get(k) != Some(v) {
            ops.push(Op::PutName(*k, *v));
        }
    }
    for (k, v) in &desired.svc {
        if current.svc.get(k) != Some(v) {
            ops.push(Op::PutSvc(*k, *v));
        }
    }
    ops.extend(
        current
            .svc
            .keys()
            .filter(|k| !desired.svc.contains_key(k))
            .map(|k| Op::DelSvc(*k)),
    );
    ops.extend(
        current
            .be
            .keys()
            .filter(|k| !desired.be.contains_key(k))
            .map(|k| Op::DelBackend(*k)),
    );
    ops.extend(
        current
            .maglev
            .keys()
            .filter(|k| !desired.maglev.contains_key(k))
            .map(|k| Op::DelMaglev(*k)),
    );
    ops.extend(
        current
            .names
            .keys()
            .filter(|k| !desired.names.contains_key(k))
            .map(|k| Op::DelName(*k)),
    );
    ops
}

/// The label stored in `skein_names`: the group name, or for names longer than the map
/// holds, a prefix plus a hash of the whole name (so two long names never collide).
pub fn group_label(name: &str) -> String {
    if name.len() <= NAME_LEN {
        return name.to_owned();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut cut = NAME_LEN - 17;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{h:016x}", &name[..cut])
}

/// Group ids: stable for a group name while it exists, reused after.
#[derive(Debug, Default)]
struct Ids {
    by_label: HashMap<String, u32>,
    used: BTreeSet<u32>,
    next: u32,
}

impl Ids {
    fn get_or_alloc(&mut self, label: &str) -> Result<u32, Error> {
        if let Some(id) = self.by_label.get(label) {
            return Ok(*id);
        }
        // Ids start at 1; search from where the last one was handed out.
        let mut id = self.next.max(1);
        for _ in 0..MAX_GROUPS {
            if id >= MAX_GROUPS {
                id = 1;
            }
            if !self.used.contains(&id) {
                self.used.insert(id);
                self.by_label.insert(label.to_owned(), id);
                self.next = id + 1;
                return Ok(id);
            }
            id += 1;
        }
        Err(Error::Full {
            what: format!("backend groups (at most {})", MAX_GROUPS - 1),
        })
    }

    fn release(&mut self, label: &str) {
        if let Some(id) = self.by_label.remove(label) {
            self.used.remove(&id);
        }
    }
}

/// Keeps what each Service owns in the maps and turns Service changes into writes.
#[derive(Debug)]
pub struct Reconciler {
    node: NodeContext,
    ids: Ids,
    owned: HashMap<String, (MapState, Vec<String>)>,
    /// Backend slots over all owned entries, kept up to date per change (O(1) to read).
    backend_slots: usize,
}

impl Reconciler {
    /// A reconciler for `node`. Group ids already in `pinned` (from a previous run) keep
    /// their numbers, so a restart rewrites nothing that did not change.
    pub fn new(node: NodeContext, pinned: &MapState) -> Reconciler {
        let mut ids = Ids::default();
        for (id, name) in &pinned.names {
            ids.by_label.insert(name.as_str(), *id);
            ids.used.insert(*id);
        }
        Reconciler {
            node,
            ids,
            owned: HashMap::new(),
            backend_slots: 0,
        }
    }

    /// The node this reconciler works for.
    pub fn node(&self) -> &NodeContext {
        &self.node
    }

    fn concrete(&mut self, entries: &ServiceEntries) -> Result<(MapState, Vec<String>), Error> {
        let mut st = MapState::default();
        let mut labels = Vec::new();
        let mut by_name = HashMap::new();
        for g in &entries.groups {
            let label = group_label(&g.name);
            let id = self.ids.get_or_alloc(&label)?;
            labels.push(label.clone());
            by_name.insert(g.name.clone(), (id, g.backends.len()));
            if g.backends.len() > usize::from(u16::MAX) {
                return Err(Error::Full {
                    what: format!("backends of {} (at most {})", g.name, u16::MAX),
                });
            }
            for (slot, b) in g.backends.iter().enumerate() {
                st.be.insert(
                    BeKey {
                        group: id,
                        slot: slot as u32,
                    },
                    *b,
                );
            }
            if g.maglev {
                st.maglev.insert(id, Box::new(maglev::table(&g.backends)));
            }
            st.names.insert(id, GroupName::new(&label));
        }
        for f in &entries.frontends {
            let Some(&(group, count)) = by_name.get(&f.group) else {
                continue;
            };
            st.svc.insert(
                f.key,
                SvcValue {
                    group,
                    count: count as u16,
                    flags: f.flags,
                    affinity_timeout: f.affinity_timeout,
                },
            );
        }
        Ok((st, labels))
    }

    /// The writes for a new or changed Service (only what changed).
    pub fn update(&mut self, svc: &Service) -> Result<Vec<Op>, Error> {
        svc.validate()?;
        let entries = service_entries(svc, &self.node);
        let (new, labels) = self.concrete(&entries)?;
        let key = svc.key();
        let (old, old_labels) = self.owned.remove(&key).unwrap_or_default();
        let ops = diff(&old, &new);
        self.backend_slots = self.backend_slots - old.be.len() + new.be.len();
        for l in old_labels.iter().filter(|l| !labels.contains(l)) {
            self.ids.release(l);
        }
        if new.is_empty() {
            self.owned.remove(&key);
        } else {
            self.owned.insert(key, (new, labels));
        }
        Ok(ops)
    }

    /// The writes that remove a deleted Service.
    pub fn delete(&mut self, namespace: &str, name: &str) -> Vec<Op> {
        let Some((old, labels)) = self.owned.remove(&format!("{namespace}/{name}")) else {
            return Vec::new();
        };
        for l in &labels {
            self.ids.release(l);
        }
        self.backend_slots -= old.be.len();
        diff(&old, &MapState::default())
    }

    /// A full resync: the writes that make `current` (read from the pinned maps) hold
    /// exactly `services`, removing stale entries a previous run left.
    pub fn resync(&mut self, services: &[Service], current: &MapState) -> Result<Vec<Op>, Error> {
        let mut desired = MapState::default();
        let mut owned = HashMap::new();
        for s in services {
            s.validate()?;
            let (st, labels) = self.concrete(&service_entries(s, &self.node))?;
            desired.merge(&st);
            owned.insert(s.key(), (st, labels));
        }
        // Ids of groups that no longer exist are free again.
        let live: BTreeSet<u32> = desired.names.keys().copied().collect();
        let stale: Vec<String> = self
            .ids
            .by_label
            .iter()
            .filter(|(_, id)| !live.contains(id))
            .map(|(l, _)| l.clone())
            .collect();
        for l in stale {
            self.ids.release(&l);
        }
        self.owned = owned;
        self.backend_slots = desired.be.len();
        Ok(diff(current, &desired))
    }

    /// Everything the reconciler believes the maps hold.
    pub fn expected(&self) -> MapState {
        let mut st = MapState::default();
        for (s, _) in self.owned.values() {
            st.merge(s);
        }
        st
    }

    /// The backends the slots of `groups` hold now (group, address, port).
    pub fn live_backends(&self, groups: &BTreeSet<u32>) -> BTreeSet<(u32, [u8; 4], [u8; 2])> {
        self.owned
            .values()
            .flat_map(|(st, _)| st.be.iter())
            .filter(|(k, _)| groups.contains(&k.group))
            .map(|(k, b)| (k.group, b.addr, b.port))
            .collect()
    }

    /// Number of Services with entries, and of backend slots.
    pub fn counts(&self) -> (usize, usize) {
        (self.owned.len(), self.backend_slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{SCOPE_CLUSTER, SCOPE_EXTERNAL};
    use crate::model::{Endpoint, Protocol, ServicePort};
    use std::net::Ipv4Addr;

    fn node() -> NodeContext {
        NodeContext {
            node_name: "node1".into(),
            node_ip: Some(Ipv4Addr::new(198, 51, 100, 11)),
        }
    }

    fn svc(name: &str, vip: u8, backends: &[u8]) -> Service {
        Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, vip)],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![ServicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30000 + u16::from(vip)),
                target_port: Some(8080),
            }],
            external_traffic_policy_local: false,
            session_affinity_timeout: None,
            health_check_node_port: None,
            endpoints: backends
                .iter()
                .map(|b| Endpoint {
                    ip: Ipv4Addr::new(10, 244, 1, *b),
                    node_name: Some("node1".into()),
                    ready: true,
                    serving: true,
                    terminating: false,
                    ports: vec![],
                })
                .collect(),
        }
    }

    fn vip_key(vip: u8) -> SvcKey {
        SvcKey::new(Ipv4Addr::new(10, 96, 0, vip), 80, 6, SCOPE_CLUSTER)
    }

    #[test]
    fn backend_changes_name_their_groups_and_live_backends_follow() {
        let mut r = Reconciler::new(node(), &MapState::default());
        let ops = r.update(&svc("a", 1, &[1, 2])).unwrap();
        let groups = groups_with_backend_changes(&ops);
        assert!(!groups.is_empty());
        let before = r.live_backends(&groups);
        assert!(before.iter().any(|(_, a, _)| *a == [10, 244, 1, 1]));
        // Backend .1 leaves: its group is named and .1 is no longer live.
        let ops = r.update(&svc("a", 1, &[2])).unwrap();
        let changed = groups_with_backend_changes(&ops);
        assert!(!changed.is_empty() && changed.is_subset(&groups));
        let after = r.live_backends(&groups);
        assert!(
            after.iter().all(|(_, a, _)| *a != [10, 244, 1, 1]),
            "{after:?}"
        );
        assert!(after.iter().any(|(_, a, _)| *a == [10, 244, 1, 2]));
        // A change that touches no backend names no group.
        assert!(groups_with_backend_changes(&r.update(&svc("a", 1, &[2])).unwrap()).is_empty());
    }

    #[test]
    fn applying_the_diff_reaches_the_desired_state() {
        let mut maps = MapState::default();
        let mut r = Reconciler::new(node(), &maps);
        maps.write_all(&r.update(&svc("a", 1, &[1, 2, 3])).unwrap())
            .unwrap();
        maps.write_all(&r.update(&svc("b", 2, &[4])).unwrap())
            .unwrap();
        assert_eq!(maps, r.expected());
        assert_eq!(maps.svc[&vip_key(1)].count, 3);
        assert_eq!(maps.svc.len(), 6); // two ClusterIPs, two NodePorts at socket and tc
        assert_eq!(maps.maglev.len(), 2);
        assert_ne!(maps.svc[&vip_key(1)].group, maps.svc[&vip_key(2)].group);
    }

    #[test]
    fn an_unchanged_service_writes_nothing_and_a_change_writes_only_the_change() {
        let mut maps = MapState::default();
        let mut r = Reconciler::new(node(), &maps);
        maps.write_all(&r.update(&svc("a", 1, &[1, 2, 3])).unwrap())
            .unwrap();
        assert!(r.update(&svc("a", 1, &[1, 2, 3])).unwrap().is_empty());
        // 3 -> 1 backend: two slots go, the count and the Maglev table change.
        let ops = r.update(&svc("a", 1, &[1])).unwrap();
        maps.write_all(&ops).unwrap();
        assert_eq!(maps, r.expected());
        let dels = ops
            .iter()
            .filter(|o| matches!(o, Op::DelBackend(_)))
            .count();
        assert_eq!(dels, 2, "{ops:?}");
        assert!(
            !ops.iter().any(|o| matches!(o, Op::PutBackend(..))),
            "{ops:?}"
        );
        // The count flips after new slots are written and before old ones go.
        let ops = r.update(&svc("a", 1, &[1, 2, 3, 4, 5])).unwrap();
        let first_svc = ops
            .iter()
            .position(|o| matches!(o, Op::PutSvc(..)))
            .unwrap();
        let last_be = ops
            .iter()
            .rposition(|o| matches!(o, Op::PutBackend(..)))
            .unwrap();
        assert!(last_be < first_svc, "{ops:?}");
        maps.write_all(&ops).unwrap();
        assert_eq!(maps.svc[&vip_key(1)].count, 5);
        assert_eq!(r.counts(), (1, 5));
    }

    #[test]
    fn deleting_a_service_removes_all_it_owned_frontends_first() {
        let mut maps = MapState::default();
        let mut r = Reconciler::new(node(), &maps);
        maps.write_all(&r.update(&svc("a", 1, &[1, 2])).unwrap())
            .unwrap();
        maps.write_all(&r.update(&svc("b", 2, &[3])).unwrap())
            .unwrap();
        let ops = r.delete("default", "a");
        assert!(matches!(ops[0], Op::DelSvc(_)), "{ops:?}");
        maps.write_all(&ops).unwrap();
        assert_eq!(maps, r.expected());
        assert!(!maps.svc.contains_key(&vip_key(1)));
        assert!(maps.svc.contains_key(&vip_key(2)));
        assert!(r.delete("default", "a").is_empty());
    }

    #[test]
    fn resync_after_restart_keeps_ids_and_removes_stale_entries() {
        let mut maps = MapState::default();
        let mut r = Reconciler::new(node(), &maps);
        maps.write_all(&r.update(&svc("a", 1, &[1, 2])).unwrap())
            .unwrap();
        maps.write_all(&r.update(&svc("gone", 2, &[3])).unwrap())
            .unwrap();
        let id_a = maps.svc[&vip_key(1)].group;

        // A new process: it sees only the pinned maps; "gone" was deleted meanwhile.
        let mut r2 = Reconciler::new(node(), &maps);
        let ops = r2.resync(&[svc("a", 1, &[1, 2])], &maps).unwrap();
        assert!(
            ops.iter().all(|o| matches!(
                o,
                Op::DelSvc(_) | Op::DelBackend(_) | Op::DelMaglev(_) | Op::DelName(_)
            )),
            "{ops:?}"
        );
        maps.write_all(&ops).unwrap();
        assert_eq!(maps, r2.expected());
        assert_eq!(maps.svc[&vip_key(1)].group, id_a);
        assert!(!maps.svc.contains_key(&vip_key(2)));
    }

    #[test]
    fn external_frontends_key_on_the_node_address() {
        let mut maps = MapState::default();
        let mut r = Reconciler::new(node(), &maps);
        maps.write_all(&r.update(&svc("a", 1, &[1])).unwrap())
            .unwrap();
        let k = SvcKey::new(Ipv4Addr::new(198, 51, 100, 11), 30001, 6, SCOPE_EXTERNAL);
        assert_eq!(maps.svc[&k].group, maps.svc[&vip_key(1)].group);
    }

    #[test]
    fn long_group_names_stay_distinct() {
        let a = group_label(&format!("ns/{}:http/TCP", "a".repeat(80)));
        let b = group_label(&format!("ns/{}:grpc/TCP", "a".repeat(80)));
        assert!(a.len() <= NAME_LEN && b.len() <= NAME_LEN);
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_reused_after_delete() {
        let mut maps = MapState::default();
        let mut r = Reconciler::new(node(), &maps);
        for i in 0..50u8 {
            maps.write_all(&r.update(&svc(&format!("s{i}"), i, &[1])).unwrap())
                .unwrap();
        }
        for i in 0..50u8 {
            maps.write_all(&r.delete("default", &format!("s{i}")))
                .unwrap();
        }
        assert!(maps.is_empty());
        assert!(r.ids.used.is_empty());
        assert_eq!(r.counts(), (0, 0));
    }
}
