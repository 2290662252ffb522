//! Which subnet this node takes, given the leases already in etcd (pure logic).
//!
//! Order, as flannel: a lease (or reservation) that already names this node's public
//! IP; else the subnet of the previous run (from the subnet file) if still free; else a
//! random pick among the first free subnets from `SubnetMin`, so that many nodes
//! starting at once rarely race for the same key (and the etcd transaction settles the
//! races that remain).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rand::Rng;

use crate::config::NetworkConfig;
use crate::lease::LeaseRecord;

/// How many free subnets the random pick chooses among.
const PICK_AMONG: usize = 100;

/// What to do to get a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// This node already holds this key: refresh its value and TTL.
    Reuse(LeaseRecord),
    /// Create this key, if it is still absent.
    Create(Ipv4Network),
    /// Every subnet between SubnetMin and SubnetMax is taken.
    Exhausted,
}

/// Chooses a subnet. `tried` holds subnets whose create lost a race in this round.
pub fn choose(
    config: &NetworkConfig,
    own_ip: Ipv4Addr,
    leases: &[LeaseRecord],
    previous: Option<Ipv4Network>,
    tried: &HashSet<Ipv4Network>,
    rng: &mut impl Rng,
) -> Choice {
    let mut mine: Vec<&LeaseRecord> = leases
        .iter()
        .filter(|l| l.attrs.public_ip == own_ip && config.allows(&l.subnet))
        .collect();
    // A reservation wins over a lease with a TTL.
    mine.sort_by_key(|l| !l.is_reservation());
    if let Some(l) = mine.first() {
        return Choice::Reuse((*l).clone());
    }
    let taken: HashSet<Ipv4Network> = leases.iter().map(|l| l.subnet).collect();
    if let Some(prev) = previous
        && config.allows(&prev)
        && !taken.contains(&prev)
        && !tried.contains(&prev)
    {
        return Choice::Create(prev);
    }
    let free: Vec<Ipv4Network> = config
        .subnets()
        .filter(|s| !taken.iter().any(|t| overlaps(t, s)) && !tried.contains(s))
        .take(PICK_AMONG)
        .collect();
    if free.is_empty() {
        return Choice::Exhausted;
    }
    Choice::Create(free[rng.random_range(0..free.len())])
}

/// Keys with this node's IP that the config no longer allows (another SubnetLen or
/// range), and that have a TTL: flannel deletes them before taking a new subnet.
pub fn stale_own<'a>(
    config: &NetworkConfig,
    own_ip: Ipv4Addr,
    leases: &'a [LeaseRecord],
) -> Vec<&'a LeaseRecord> {
    leases
        .iter()
        .filter(|l| l.attrs.public_ip == own_ip && !l.is_reservation() && !config.allows(&l.subnet))
        .collect()
}

fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn cfg(text: &str) -> NetworkConfig {
        NetworkConfig::parse(text).unwrap()
    }
    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    fn rec(subnet: &str, ip: [u8; 4], etcd_lease: i64) -> LeaseRecord {
        LeaseRecord {
            subnet: net(subnet),
            attrs: LeaseAttrs::host_gw(Ipv4Addr::from(ip)),
            etcd_lease,
        }
    }
    const ME: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);

    #[test]
    fn reuses_own_lease_and_prefers_a_reservation() {
        let c = cfg(r#"{"Network":"10.244.0.0/16"}"#);
        let leases = vec![
            rec("10.244.7.0/24", [198, 51, 100, 11], 5),
            rec("10.244.9.0/24", [198, 51, 100, 11], 0),
            rec("10.244.3.0/24", [198, 51, 100, 12], 6),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        let got = choose(&c, ME, &leases, None, &HashSet::new(), &mut rng);
        assert_eq!(got, Choice::Reuse(leases[1].clone()));
    }

    #[test]
    fn own_lease_outside_the_range_is_stale_not_reused() {
        let c = cfg(r#"{"Network":"10.244.0.0/16","SubnetLen":25}"#);
        let leases = vec![rec("10.244.7.0/24", [198, 51, 100, 11], 5)];
        let mut rng = StdRng::seed_from_u64(1);
        let got = choose(&c, ME, &leases, None, &HashSet::new(), &mut rng);
        assert!(
            matches!(got, Choice::Create(s) if s.prefix() == 25 && !s.contains(Ipv4Addr::new(10,244,7,0)))
        );
        assert_eq!(stale_own(&c, ME, &leases), vec![&leases[0]]);
    }

    #[test]
    fn previous_subnet_is_taken_again_when_free() {
        let c = cfg(r#"{"Network":"10.244.0.0/16"}"#);
        let mut rng = StdRng::seed_from_u64(1);
        let prev = Some(net("10.244.42.0/24"));
        assert_eq!(
            choose(&c, ME, &[], prev, &HashSet::new(), &mut rng),
            Choice::Create(net("10.244.42.0/24"))
        );
        let leases = vec![rec("10.244.42.0/24", [198, 51, 100, 99], 3)];
        let got = choose(&c, ME, &leases, prev, &HashSet::new(), &mut rng);
        assert!(matches!(got, Choice::Create(s) if s != net("10.244.42.0/24")));
    }

    #[test]
    fn fresh_pick_avoids_taken_reserved_and_tried_subnets() {
        let c =
            cfg(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.4.0"}"#);
        let leases = vec![
            rec("10.244.1.0/24", [1, 1, 1, 1], 3),
            rec("10.244.2.0/24", [1, 1, 1, 2], 0),
        ];
        let tried: HashSet<_> = [net("10.244.3.0/24")].into();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            assert_eq!(
                choose(&c, ME, &leases, None, &tried, &mut rng),
                Choice::Create(net("10.244.4.0/24"))
            );
        }
    }

    #[test]
    fn exhausted_when_everything_is_taken() {
        let c = cfg(r#"{"Network":"10.1.0.0/25"}"#);
        let leases = vec![rec("10.1.0.64/26", [1, 1, 1, 1], 3)];
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            choose(&c, ME, &leases, None, &HashSet::new(), &mut rng),
            Choice::Exhausted
        );
    }

    #[test]
    fn random_picks_spread_over_free_subnets() {
        let c = cfg(r#"{"Network":"10.244.0.0/16"}"#);
        let mut seen = HashSet::new();
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            if let Choice::Create(s) = choose(&c, ME, &[], None, &HashSet::new(), &mut rng) {
                assert!(c.allows(&s));
                seen.insert(s);
            }
        }
        assert!(seen.len() > 20, "only {} distinct picks", seen.len());
    }
}
