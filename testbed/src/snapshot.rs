//! What the root network namespace and mount table look like, to prove a teardown left
//! the machine as it found it.

use std::collections::BTreeSet;
use std::process::Command;

use crate::{Result, run_checked};

/// Links, routes, named namespaces and mounts of the root namespace at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSnapshot {
    /// `name@ifindex` for every link.
    pub links: BTreeSet<String>,
    /// Every IPv4 and IPv6 route in every table, without ageing fields.
    pub routes: BTreeSet<String>,
    /// Names under /run/netns.
    pub netns: BTreeSet<String>,
    /// `mountpoint fstype source` for every mount.
    pub mounts: BTreeSet<String>,
}

impl RootSnapshot {
    /// Reads the current state. Must be called from a thread in the root namespace.
    pub fn take() -> Result<RootSnapshot> {
        let links = run_checked(Command::new("ip").args(["-o", "link", "show"]))?
            .lines()
            .filter_map(|l| {
                let mut f = l.split(": ");
                let idx = f.next()?;
                let name = f.next()?.split('@').next()?;
                Some(format!("{name}@{idx}"))
            })
            .collect();
        let mut routes = BTreeSet::new();
        for family in ["-4", "-6"] {
            let out = run_checked(
                Command::new("ip").args([family, "-o", "route", "show", "table", "all"]),
            )?;
            for l in out.lines() {
                routes.insert(strip_ageing(l));
            }
        }
        let netns = skein_netns::list_named()
            .map_err(crate::io_err("list /run/netns"))?
            .into_iter()
            .collect();
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(crate::io_err("read /proc/self/mountinfo"))?;
        let mounts = info
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mp = left.split_whitespace().nth(4)?;
                let mut r = right.split_whitespace();
                Some(format!("{mp} {} {}", r.next()?, r.next()?))
            })
            .collect();
        Ok(RootSnapshot {
            links,
            routes,
            netns,
            mounts,
        })
    }

    /// Human-readable differences (`+` appeared, `-` disappeared); empty when equal.
    pub fn diff(&self, after: &RootSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (what, a, b) in [
            ("link", &self.links, &after.links),
            ("route", &self.routes, &after.routes),
            ("netns", &self.netns, &after.netns),
            ("mount", &self.mounts, &after.mounts),
        ] {
            out.extend(b.difference(a).map(|x| format!("+ {what} {x}")));
            out.extend(a.difference(b).map(|x| format!("- {what} {x}")));
        }
        out
    }
}

fn strip_ageing(route: &str) -> String {
    let mut out = Vec::new();
    let mut skip = false;
    for tok in route.split_whitespace() {
        if skip {
            skip = false;
            continue;
        }
        if tok == "expires" {
            skip = true;
            continue;
        }
        out.push(tok);
    }
    out.join(" ")
}
