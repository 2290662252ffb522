//! Which skein binaries in the bin dir can run: present, and not a placeholder that
//! only says it is not implemented yet. `up` starts the usable ones and names the rest.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether one component's binary can be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Present and answers `--help`.
    Usable(PathBuf),
    /// Not in the bin dir.
    Missing(PathBuf),
    /// Present but cannot serve (a placeholder, or `--help` fails); the reason says why.
    Unusable { path: PathBuf, reason: String },
}

impl Availability {
    /// The binary's path when it is usable.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Availability::Usable(p) => Some(p),
            _ => None,
        }
    }

    /// A warning line for a component that is skipped, `None` when it is usable.
    pub fn warning(&self, name: &str, skipped: &str) -> Option<String> {
        match self {
            Availability::Usable(_) => None,
            Availability::Missing(p) => Some(format!(
                "WARNING: {name} is missing ({} does not exist): {skipped} skipped",
                p.display()
            )),
            Availability::Unusable { path, reason } => Some(format!(
                "WARNING: {name} cannot run ({}: {reason}): {skipped} skipped",
                path.display()
            )),
        }
    }
}

/// Decides from the result of `<binary> --help` (or a CNI VERSION) whether the binary
/// is usable.
pub fn classify(help_succeeded: bool, output: &str) -> Result<(), String> {
    let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if output.contains("not implemented yet") {
        return Err(format!("placeholder binary: {}", first.trim()));
    }
    if !help_succeeded {
        return Err(format!("it fails to answer: {}", first.trim()));
    }
    Ok(())
}

/// Looks for `name` in `bin_dir` and asks it for `--help`.
pub fn probe(bin_dir: &Path, name: &str) -> Availability {
    probe_with(bin_dir, name, |cmd| {
        cmd.arg("--help");
    })
}

/// Looks for the CNI plugin `name` in `bin_dir` and asks it for `CNI_COMMAND=VERSION`,
/// as a runtime would (a CNI plugin has no `--help`).
pub fn probe_cni(bin_dir: &Path, name: &str) -> Availability {
    probe_with(bin_dir, name, |cmd| {
        cmd.env("CNI_COMMAND", "VERSION");
    })
}

fn probe_with(bin_dir: &Path, name: &str, ask: impl FnOnce(&mut Command)) -> Availability {
    let path = bin_dir.join(name);
    if !path.is_file() {
        return Availability::Missing(path);
    }
    let mut cmd = Command::new(&path);
    ask(&mut cmd);
    let out = cmd.stdin(Stdio::null()).output();
    let verdict = match out {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            classify(out.status.success(), &text)
        }
        Err(e) => Err(format!("cannot execute: {e}")),
    };
    match verdict {
        Ok(()) => Availability::Usable(path),
        Err(reason) => Availability::Unusable { path, reason },
    }
}

/// Every binary `up` may start, probed once.
#[derive(Debug, Clone)]
pub struct Components {
    /// `flanneld`.
    pub flanneld: Availability,
    /// `skein-cni`.
    pub cni: Availability,
    /// `skein-apiserver`.
    pub apiserver: Availability,
    /// `skein-scheduler`.
    pub scheduler: Availability,
    /// `skein-controller-manager`.
    pub controller_manager: Availability,
    /// `skein-dns`.
    pub dns: Availability,
    /// `skein-agent`.
    pub agent: Availability,
    /// `skein-proxy`.
    pub proxy: Availability,
}

impl Components {
    /// Probes every binary in `bin_dir`.
    pub fn probe(bin_dir: &Path) -> Components {
        Components {
            flanneld: probe(bin_dir, "flanneld"),
            cni: probe_cni(bin_dir, "skein-cni"),
            apiserver: probe(bin_dir, "skein-apiserver"),
            scheduler: probe(bin_dir, "skein-scheduler"),
            controller_manager: probe(bin_dir, "skein-controller-manager"),
            dns: probe(bin_dir, "skein-dns"),
            agent: probe(bin_dir, "skein-agent"),
            proxy: probe(bin_dir, "skein-proxy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_is_not_usable_even_when_help_exits_zero() {
        let r = classify(true, "skein-dns: not implemented yet (skein issue #8)\n");
        assert!(r.unwrap_err().contains("placeholder"));
    }

    #[test]
    fn a_failing_help_is_not_usable() {
        let r = classify(false, "\nerror: unexpected argument\n");
        assert_eq!(
            r.unwrap_err(),
            "it fails to answer: error: unexpected argument"
        );
    }

    #[test]
    fn a_real_help_is_usable() {
        assert_eq!(classify(true, "Usage: flanneld [OPTIONS]\n"), Ok(()));
    }

    #[test]
    fn probe_tells_missing_from_placeholder_from_usable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write("real", "#!/bin/sh\necho 'Usage: real'\n");
        write(
            "stub",
            "#!/bin/sh\necho 'stub: not implemented yet (skein issue #5)' >&2\nexit 2\n",
        );
        assert_eq!(
            probe(dir.path(), "real"),
            Availability::Usable(dir.path().join("real"))
        );
        let stub = probe(dir.path(), "stub");
        assert!(matches!(stub, Availability::Unusable { .. }), "{stub:?}");
        let w = stub.warning("stub", "the API").unwrap();
        assert!(
            w.contains("not implemented yet") && w.contains("the API skipped"),
            "{w}"
        );
        write(
            "cni",
            "#!/bin/sh\n[ \"$CNI_COMMAND\" = VERSION ] && echo '{\"cniVersion\":\"1.1.0\"}' && exit 0\nexit 1\n",
        );
        assert_eq!(
            probe_cni(dir.path(), "cni"),
            Availability::Usable(dir.path().join("cni"))
        );
        assert!(matches!(
            probe(dir.path(), "cni"),
            Availability::Unusable { .. }
        ));
        assert_eq!(
            probe(dir.path(), "absent"),
            Availability::Missing(dir.path().join("absent"))
        );
    }
}
