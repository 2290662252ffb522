//! Executing one plugin as the CNI spec says: the binary `<bin-dir>/<type>`, `CNI_*`
//! environment, the network config on stdin, a result or error JSON on stdout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Attachment, show};
use crate::error::{Error, Result};

/// How long one plugin call may take before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds the binary for plugin type `ty` in the bin dirs.
pub(crate) fn find_plugin(bin_dirs: &[PathBuf], ty: &str) -> std::result::Result<PathBuf, String> {
    if ty.contains('/') || ty.is_empty() {
        return Err(format!("invalid plugin type {ty:?}"));
    }
    bin_dirs
        .iter()
        .map(|d| d.join(ty))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = bin_dirs.iter().map(|d| show(d)).collect();
            format!("failed to find plugin {ty:?} in path [{}]", dirs.join(" "))
        })
}

/// The CNI_PATH value: the bin dirs joined with ':'.
fn cni_path(bin_dirs: &[PathBuf]) -> String {
    bin_dirs
        .iter()
        .map(|d| show(d))
        .collect::<Vec<_>>()
        .join(":")
}

/// CNI_ARGS: `K=V;K=V`.
pub(crate) fn cni_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Turns a plugin's failure output into a message: the CNI error JSON when there is one
/// (`code`, `msg`, `details`), else stderr.
pub(crate) fn failure_message(status: &str, stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout)
        && let Some(code) = v.get("code").and_then(Value::as_u64)
    {
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = v.get("details").and_then(Value::as_str).unwrap_or("");
        return if details.is_empty() {
            format!("error code {code}: {msg}")
        } else {
            format!("error code {code}: {msg} ({details})")
        };
    }
    let err = String::from_utf8_lossy(stderr).trim().to_owned();
    if err.is_empty() {
        format!("plugin exited with {status} and no error output")
    } else {
        format!("plugin exited with {status}: {err}")
    }
}

/// Runs `command` (ADD, DEL, CHECK, GC) for one plugin config. Returns the parsed stdout
/// for ADD, `Value::Null` otherwise.
pub(crate) async fn exec(
    bin_dirs: &[PathBuf],
    command: &str,
    conf: &Value,
    att: Option<&Attachment>,
) -> Result<Value> {
    let ty = conf.get("type").and_then(Value::as_str).unwrap_or("");
    let fail = |message: String| Error::CniPlugin {
        plugin: ty.to_owned(),
        command: command.to_owned(),
        container_id: att.map(|a| a.container_id.clone()).unwrap_or_default(),
        message,
    };
    let bin = find_plugin(bin_dirs, ty).map_err(fail)?;
    let mut cmd = tokio::process::Command::new(&bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CNI_COMMAND", command)
        .env("CNI_PATH", cni_path(bin_dirs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(a) = att {
        cmd.env("CNI_CONTAINERID", &a.container_id)
            .env("CNI_NETNS", &a.netns)
            .env("CNI_IFNAME", &a.ifname)
            .env("CNI_ARGS", cni_args(&a.args));
    }
    let input = serde_json::to_vec(conf).map_err(|e| fail(format!("encode config: {e}")))?;
    tracing::debug!(plugin = ty, command, bin = %show(&bin), "cni exec");
    let run = async {
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await?;
            drop(stdin);
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(PLUGIN_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(fail(format!("exec {}: {e}", show(&bin)))),
        Err(_) => return Err(fail(format!("timed out after {PLUGIN_TIMEOUT:?}"))),
    };
    if !out.status.success() {
        return Err(fail(failure_message(
            &out.status.to_string(),
            &out.stdout,
            &out.stderr,
        )));
    }
    if command != "ADD" {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "result is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_becomes_the_message() {
        let m = failure_message(
            "exit status: 1",
            br#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"bad subnet"}"#,
            b"",
        );
        assert_eq!(m, "error code 7: invalid network config (bad subnet)");
        let m = failure_message("exit status: 2", b"", b"boom\n");
        assert_eq!(m, "plugin exited with exit status: 2: boom");
    }

    #[test]
    fn plugin_lookup_names_the_path() {
        let e = find_plugin(&[PathBuf::from("/nonexistent")], "bridge").unwrap_err();
        assert!(
            e.contains("\"bridge\"") && e.contains("/nonexistent"),
            "{e}"
        );
        assert!(find_plugin(&[PathBuf::from("/")], "../etc/passwd").is_err());
    }

    #[test]
    fn cni_args_are_semicolon_separated() {
        let a = [
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAME".into(), "p".into()),
        ];
        assert_eq!(cni_args(&a), "IgnoreUnknown=1;K8S_POD_NAME=p");
    }
}
