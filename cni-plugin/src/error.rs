//! CNI errors: a code from the spec (or ours, 100+), a message, details; printed as the
//! spec's error JSON on stdout.

use serde_json::json;

/// Error codes of the CNI spec, and ours from 100.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// Ours: a kernel (netlink, sysctl, nftables) operation failed.
    pub const KERNEL: u32 = 100;
    /// Ours: the address ranges have no free address left.
    pub const EXHAUSTED: u32 = 101;
    /// Ours: IPAM (allocation store or delegated plugin) failed.
    pub const IPAM: u32 = 102;
    /// Ours: CHECK found the sandbox's network not as the previous result says.
    pub const CHECK_MISMATCH: u32 = 103;
    /// Ours: this container ID and interface already hold an address.
    pub const DUPLICATE: u32 = 104;
}

/// A CNI error: printed as `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// The error code.
    pub code: u32,
    /// What failed, naming the object.
    pub msg: String,
    /// More context, when there is any.
    pub details: String,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Code 7, invalid network config.
    pub fn config(msg: impl Into<String>) -> CniError {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// Code 4, invalid environment.
    pub fn env(msg: impl Into<String>) -> CniError {
        Self::new(code::INVALID_ENV, msg)
    }

    /// Code 100, a kernel operation failed.
    pub fn kernel(msg: impl std::fmt::Display) -> CniError {
        Self::new(code::KERNEL, msg.to_string())
    }

    /// The spec's error JSON for a result of version `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

/// Result alias for the plugin.
pub type CniResult<T> = std::result::Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::config("bad subnet").details("10.0.0.0/33");
        let v = e.to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "bad subnet");
        assert_eq!(v["details"], "10.0.0.0/33");
        assert!(CniError::env("x").to_json("1.1.0").get("details").is_none());
    }
}
