//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
//! [`MAGLEV_M`] buckets, each naming a backend slot, built so that every backend owns
//! nearly the same number of buckets and a change of the backend set moves few buckets.
//!
//! The table depends only on the backend list (by address and port, not by order), so
//! every node builds the same table and picks the same backend for a flow.

use crate::maps::{Backend, MAGLEV_M, MaglevTable};

/// Builds the table for `backends` (slot `i` = `backends[i]`). An empty list gives a
/// table of zeros, which the programs never read (the service's count is 0).
pub fn table(backends: &[Backend]) -> MaglevTable {
    let m = MAGLEV_M as u64;
    let mut slots = [0u16; MAGLEV_M];
    let n = backends.len();
    if n == 0 {
        return MaglevTable { slot: slots };
    }
    // Permutation of each backend: offset + j * skip (mod M), from two hashes of its name.
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            let name = [&b.addr[..], &b.port[..]].concat();
            let offset = fnv1a(&name, 0xcbf2_9ce4_8422_2325) % m;
            let skip = fnv1a(&name, 0x8422_2325_cbf2_9ce4) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    // Fill in the order of the backends sorted by name, so input order does not matter.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (backends[i].addr, backends[i].port));

    let mut next = vec![0u64; n];
    let mut filled = vec![false; MAGLEV_M];
    let mut count = 0;
    'fill: loop {
        for &i in &order {
            let (offset, skip) = perms[i];
            let mut c = (offset + next[i] * skip) % m;
            while filled[c as usize] {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            filled[c as usize] = true;
            slots[c as usize] = i as u16;
            next[i] += 1;
            count += 1;
            if count == MAGLEV_M {
                break 'fill;
            }
        }
    }
    MaglevTable { slot: slots }
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche so nearby addresses spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn backends(n: u8) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend::new(Ipv4Addr::new(10, 244, i % 3, i), 8080, false))
            .collect()
    }

    fn shares(t: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in &t.slot {
            c[s as usize] += 1;
        }
        c
    }

    #[test]
    fn every_backend_gets_an_even_share() {
        for n in [1u8, 2, 3, 5, 7, 10] {
            let t = table(&backends(n));
            let c = shares(&t, n as usize);
            let even = MAGLEV_M / n as usize;
            for (i, &k) in c.iter().enumerate() {
                assert!(
                    k.abs_diff(even) <= 1,
                    "{n} backends: backend {i} owns {k} buckets, even is {even}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn order_of_backends_does_not_matter() {
        let b = backends(5);
        let mut r = b.clone();
        r.reverse();
        let (t1, t2) = (table(&b), table(&r));
        for k in 0..MAGLEV_M {
            assert_eq!(b[t1.slot[k] as usize], r[t2.slot[k] as usize], "bucket {k}");
        }
    }

    #[test]
    fn removing_a_backend_moves_few_other_buckets() {
        let b = backends(5);
        let before = table(&b);
        let removed = b[2];
        let rest: Vec<Backend> = b.iter().copied().filter(|x| *x != removed).collect();
        let after = table(&rest);
        let mut moved = 0;
        for k in 0..MAGLEV_M {
            let old = b[before.slot[k] as usize];
            let new = rest[after.slot[k] as usize];
            if old != removed && old != new {
                moved += 1;
            }
        }
        // Buckets of the removed backend must move; of the others, only a few do.
        assert!(
            moved < MAGLEV_M / 20,
            "{moved} buckets of surviving backends moved"
        );
    }

    #[test]
    fn adding_a_backend_takes_its_share_from_the_others_only() {
        let b = backends(4);
        let before = table(&b);
        let mut more = b.clone();
        more.push(Backend::new(Ipv4Addr::new(10, 244, 9, 9), 8080, false));
        let after = table(&more);
        let mut moved_between_old = 0;
        for k in 0..MAGLEV_M {
            let old = b[before.slot[k] as usize];
            let new = more[after.slot[k] as usize];
            if new != old && new != more[4] {
                moved_between_old += 1;
            }
        }
        assert!(moved_between_old < MAGLEV_M / 20, "{moved_between_old}");
    }

    #[test]
    fn empty_list_gives_zero_table() {
        assert!(table(&[]).slot.iter().all(|&s| s == 0));
    }
}
