//! Delegated IPAM: any `ipam.type` other than `host-local` is exec'ed from `CNI_PATH`
//! with the same environment and config, as the reference bridge plugin does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{CniError, CniResult, code};
use crate::result::CniOutput;

/// Finds `plugin` in the `CNI_PATH` directories.
pub fn find(plugin: &str, path: &[String]) -> CniResult<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::config(format!("invalid ipam.type {plugin:?}")));
    }
    path.iter()
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::config(format!(
                "IPAM plugin {plugin:?} not found in CNI_PATH ({})",
                path.join(":")
            ))
        })
}

/// Runs the IPAM plugin with `command` (ADD, DEL, CHECK); ADD returns its result.
pub fn exec(
    plugin: &str,
    command: &str,
    path: &[String],
    stdin: &[u8],
) -> CniResult<Option<CniOutput>> {
    let bin = find(plugin, path)?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IPAM,
                format!("exec IPAM plugin {}: {e}", bin.display()),
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin; its exit status says what happened.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            code::IPAM,
            format!("wait for IPAM plugin {}: {e}", bin.display()),
        )
    })?;
    let stdout: serde_json::Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(
                code::IPAM,
                format!("IPAM plugin {plugin} {command}: unreadable output: {e}"),
            )
        })?
    };
    if !out.status.success() {
        let c = stdout
            .get("code")
            .and_then(|c| c.as_u64())
            .unwrap_or(u64::from(code::IPAM));
        let msg = stdout
            .get("msg")
            .and_then(|m| m.as_str())
            .unwrap_or("failed without an error message");
        let details = stdout.get("details").and_then(|m| m.as_str()).unwrap_or("");
        return Err(
            CniError::new(c as u32, format!("IPAM plugin {plugin} {command}: {msg}"))
                .details(details),
        );
    }
    if command == "ADD" {
        Ok(Some(CniOutput::from_json(&stdout)?))
    } else {
        Ok(None)
    }
}
