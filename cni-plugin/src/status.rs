//! STATUS (1.1.0): ready when the subnet and IPAM config are usable and the data dir is
//! writable; error 50 otherwise.

use crate::config::{IpamPlan, Need, NetConf, resolve};
use crate::error::{CniError, CniResult, code};
use crate::result::at_least;

/// Runs STATUS.
pub fn status(conf: &NetConf, path: &[String], stdin: &[u8]) -> CniResult<()> {
    let version = conf.cni_version.clone().unwrap_or_default();
    crate::result::check_version(&version)?;
    if !at_least(&version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("STATUS is not supported by cniVersion {version}"),
        ));
    }
    let not_ready = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let plan = resolve(conf, Need::Full).map_err(|e| not_ready(format!("not ready: {}", e.msg)))?;
    match &plan.ipam {
        IpamPlan::BuiltIn { data_dir, .. } => {
            let dir = data_dir.join(&plan.name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| not_ready(format!("not ready: create {}: {e}", dir.display())))?;
            let probe = dir.join(format!(".status-probe-{}", std::process::id()));
            std::fs::write(&probe, b"").map_err(|e| {
                not_ready(format!(
                    "not ready: data dir {} is not writable: {e}",
                    dir.display()
                ))
            })?;
            let _ = std::fs::remove_file(&probe);
        }
        IpamPlan::Delegated { plugin } => {
            crate::ipam::delegate::find(plugin, path)
                .map_err(|e| not_ready(format!("not ready: {}", e.msg)))?;
            // The spec: a plugin that delegates asks its delegate and passes errors on.
            crate::ipam::delegate::exec(plugin, "STATUS", path, stdin)?;
        }
    }
    Ok(())
}
