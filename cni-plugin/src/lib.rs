//! skein-cni: a CNI plugin (spec 0.3.0 to 1.1.0) for a bridge network with
//! host-local-compatible IPAM and the node's pod subnet from flanneld's subnet file.
//!
//! ```text
//!   runtime ── CNI_* env + config on stdin ──► env::parse, config::parse/resolve ──► Plan
//!        ADD    ipam (store on disk | delegated plugin) → wire (bridge, veth, pod addresses
//!               and routes over netlink) → masq (nftables) → result JSON on stdout
//!        DEL    release by container ID + ifname, delete the veth, unmasquerade
//!        CHECK  compare the sandbox with prevResult
//!        STATUS / GC / VERSION
//!   any error ─► the spec's error JSON on stdout, a non-zero exit, what was done undone
//! ```
//!
//! The whole plugin is synchronous and speaks netlink itself (no `ip`, no async
//! runtime), so an ADD costs a few system calls beyond the kernel work it asks for.

pub mod add;
pub mod check;
pub mod cidr;
pub mod config;
pub mod del;
pub mod env;
pub mod error;
pub mod gc;
pub mod ipam;
pub mod log;
pub mod masq;
pub mod result;
pub mod status;
pub mod subnet_file;
pub mod wire;

use env::Command;
use error::CniError;
use result::{LATEST, SUPPORTED_VERSIONS};

/// What the binary prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Stdout (a result or an error JSON; empty for a successful DEL, CHECK, STATUS, GC).
    pub stdout: String,
    /// Exit status.
    pub exit_code: u8,
}

/// Runs one invocation: environment through `get`, the config in `stdin`.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // One lenient look at the config for what error reporting needs: the version to
    // answer in and where to log.
    let lenient: Option<serde_json::Value> = serde_json::from_slice(stdin).ok();
    let field = |k: &str| {
        lenient
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let declared = field("cniVersion");
    let out_version = declared
        .clone()
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_owned());
    let logger = log::Logger::new(field("logFile").as_deref());
    match dispatch(&get, stdin, declared.as_deref()) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => {
            logger.error(&format!(
                "{} {}: {} (code {}){}",
                get("CNI_COMMAND").unwrap_or_default(),
                get("CNI_CONTAINERID").unwrap_or_default(),
                e.msg,
                e.code,
                if e.details.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.details)
                }
            ));
            Outcome {
                stdout: e.to_json(&out_version).to_string(),
                exit_code: 1,
            }
        }
    }
}

fn dispatch(
    get: &impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    declared: Option<&str>,
) -> Result<String, CniError> {
    let inv = env::parse(get)?;
    if inv.command == Command::Version {
        return Ok(result::version_json(declared).to_string());
    }
    let conf = config::parse(stdin)?;
    config::check_basics(&conf)?;
    match inv.command {
        Command::Add => Ok(add::add(&inv, &conf, stdin)?.to_string()),
        Command::Del => del::del(&inv, &conf, stdin).map(|()| String::new()),
        Command::Check => check::check(&inv, &conf, stdin).map(|()| String::new()),
        Command::Status => status::status(&conf, &inv.path, stdin).map(|()| String::new()),
        Command::Gc => gc::gc(&conf, &inv.path, stdin).map(|_| String::new()),
        Command::Version => unreachable!("handled above"),
    }
}
