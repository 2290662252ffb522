//! The runtime's environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`), checked per verb as the spec requires.

use crate::error::{CniError, CniResult};

/// The operation the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach; idempotent.
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Report readiness (1.1.0).
    Status,
    /// Release what is not in the valid attachments (1.1.0).
    Gc,
}

/// A checked invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION/STATUS/GC).
    pub container_id: String,
    /// `CNI_NETNS`, when given.
    pub netns: Option<String>,
    /// `CNI_IFNAME` (empty for VERSION/STATUS/GC).
    pub ifname: String,
    /// `CNI_ARGS`, as given.
    pub args: String,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<String>,
}

/// Reads and checks the environment through `get` (so tests need no process env).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> CniResult<Invocation> {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some("STATUS") => Command::Status,
        Some("GC") => Command::Gc,
        Some(other) => {
            return Err(CniError::env(format!(
                "unknown CNI_COMMAND {other:?} (expected ADD, DEL, CHECK, VERSION, STATUS or GC)"
            )));
        }
        None => return Err(CniError::env("CNI_COMMAND is not set")),
    };
    let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
    let require = |k: &str| {
        get(k).ok_or_else(|| CniError::env(format!("{k} is not set (required for {command:?})")))
    };
    let (container_id, ifname) = if per_container {
        (require("CNI_CONTAINERID")?, require("CNI_IFNAME")?)
    } else {
        (String::new(), String::new())
    };
    let netns = if matches!(command, Command::Add | Command::Check) {
        Some(require("CNI_NETNS")?)
    } else {
        get("CNI_NETNS")
    };
    if per_container {
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
    }
    Ok(Invocation {
        command,
        container_id,
        netns,
        ifname,
        args: get("CNI_ARGS").unwrap_or_default(),
        path: get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Container IDs: alphanumerics first, then alphanumerics, `_`, `.`, `-` (as libcni).
pub fn validate_container_id(id: &str) -> CniResult<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(CniError::env(format!(
            "invalid CNI_CONTAINERID {id:?}: must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// Interface names: 1 to 15 bytes, no '/', ':' or whitespace, not `.` or `..`.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    let bad = |why: &str| Err(CniError::env(format!("invalid CNI_IFNAME {name:?}: {why}")));
    if name.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return bad("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> CniResult<Invocation> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let inv = env(&full).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let partial: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = env(&partial).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(missing), "{}", err.msg);
        }
    }

    #[test]
    fn del_does_not_need_netns_and_version_needs_nothing() {
        let inv = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(inv.netns, None);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        assert_eq!(env(&[("CNI_COMMAND", "GC")]).unwrap().command, Command::Gc);
    }

    #[test]
    fn bad_values_are_code_4() {
        assert_eq!(env(&[]).unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "PUT")]).unwrap_err().code, 4);
        let bad_id = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(bad_id.unwrap_err().msg.contains("CNI_CONTAINERID"));
        let bad_if = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "averyveryverylongname"),
        ]);
        assert!(bad_if.unwrap_err().msg.contains("CNI_IFNAME"));
    }
}
