//! The Kubernetes remote-command protocol over WebSocket, as `kubectl exec` speaks it:
//! the request's query, the channel framing, and the final metav1.Status.
//!
//! ```text
//! subprotocol v5.channel.k8s.io (v4.channel.k8s.io: the same without 255)
//! every binary message: [channel byte][payload]
//!   0 stdin  (client → agent)      1 stdout, 2 stderr (agent → client)
//!   3 error: one metav1.Status JSON, then the connection closes
//!   4 resize (client → agent, tty only; ignored)
//!   255 close (v5, client → agent): payload [0] = the client closed stdin
//! ```

use serde_json::{Value, json};

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel of the process's stdin.
pub const STDIN: u8 = 0;
/// Channel of the process's stdout.
pub const STDOUT: u8 = 1;
/// Channel of the process's stderr.
pub const STDERR: u8 = 2;
/// Channel of the final status.
pub const ERROR: u8 = 3;
/// Channel of terminal resizes.
pub const RESIZE: u8 = 4;
/// v5's stream-close channel.
pub const CLOSE: u8 = 255;

/// What `/exec/...?command=..&stdin=..&stdout=..&stderr=..&tty=..` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments (one `command` parameter each, in order).
    pub command: Vec<String>,
    /// Stream stdin from the client.
    pub stdin: bool,
    /// Stream stdout to the client.
    pub stdout: bool,
    /// Stream stderr to the client.
    pub stderr: bool,
    /// A terminal was asked for.
    pub tty: bool,
}

fn flag(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "True" | "" => Ok(true),
        "0" | "false" | "False" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean")),
    }
}

impl ExecRequest {
    /// Reads the query's (decoded) pairs; bad input gets a message naming it.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ExecRequest, String> {
        let mut r = ExecRequest {
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        };
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "command" => {
                    r.command.push(v.clone());
                    continue;
                }
                "input" | "stdin" => &mut r.stdin,
                "output" | "stdout" => &mut r.stdout,
                "error" | "stderr" => &mut r.stderr,
                "tty" => &mut r.tty,
                _ => continue,
            };
            *slot = flag(v).map_err(|e| format!("query parameter {k}: {e}"))?;
        }
        if r.command.is_empty() || r.command[0].is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(r)
    }
}

/// One message to the client: the channel byte, then the payload.
pub fn frame(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(channel);
    out.extend_from_slice(payload);
    out
}

/// What a message from the client means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Bytes for the process's stdin.
    Stdin(&'a [u8]),
    /// The client closed the given stream (v5).
    Close(u8),
    /// A terminal resize (ignored: no tty).
    Resize,
    /// Empty, or a channel the client may not write.
    Ignored,
}

/// Splits a binary message from the client into its channel and payload.
pub fn parse_inbound(msg: &[u8]) -> Inbound<'_> {
    match msg.split_first() {
        Some((&STDIN, rest)) => Inbound::Stdin(rest),
        Some((&CLOSE, rest)) => rest
            .first()
            .map_or(Inbound::Ignored, |&s| Inbound::Close(s)),
        Some((&RESIZE, _)) => Inbound::Resize,
        _ => Inbound::Ignored,
    }
}

/// The exit code of a finished process: its code, or 128+signal.
pub fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// The status sent on channel 3 when the command finished with `code`; kubectl exits
/// with the code of a `NonZeroExitCode` failure.
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The status sent on channel 3 when the command could not run at all.
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_keeps_command_order_and_reads_flags() {
        let r = ExecRequest::from_pairs(&pairs(&[
            ("command", "sh"),
            ("container", "c"),
            ("command", "-c"),
            ("stdout", "true"),
            ("command", "echo hi"),
            ("stderr", "1"),
            ("stdin", "false"),
        ]))
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert!(r.stdout && r.stderr && !r.stdin && !r.tty);
    }

    #[test]
    fn query_errors_name_the_problem() {
        let e = ExecRequest::from_pairs(&pairs(&[("stdout", "1")])).unwrap_err();
        assert!(e.contains("at least 1 command"), "{e}");
        let e = ExecRequest::from_pairs(&pairs(&[("command", "ls")])).unwrap_err();
        assert!(e.contains("stdin, stdout, stderr"), "{e}");
        let e =
            ExecRequest::from_pairs(&pairs(&[("command", "ls"), ("tty", "maybe")])).unwrap_err();
        assert!(e.contains("tty") && e.contains("maybe"), "{e}");
    }

    #[test]
    fn frames_carry_the_channel_first() {
        assert_eq!(frame(STDOUT, b"out\n"), b"\x01out\n");
        assert_eq!(frame(ERROR, b""), [3]);
        assert_eq!(parse_inbound(b"\x00data"), Inbound::Stdin(b"data"));
        assert_eq!(parse_inbound(&[255, 0]), Inbound::Close(STDIN));
        assert_eq!(parse_inbound(&[4, b'{']), Inbound::Resize);
        assert_eq!(parse_inbound(&[]), Inbound::Ignored);
        assert_eq!(parse_inbound(&[1, b'x']), Inbound::Ignored);
        assert_eq!(parse_inbound(&[255]), Inbound::Ignored);
    }

    #[test]
    fn status_json_is_what_kubectl_reads() {
        assert_eq!(
            exit_status(&[], 0).to_string(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let s = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert!(s["message"].as_str().unwrap().contains("exit code 3"));
        let f = failure_status("start \"nope\": No such file or directory");
        assert_eq!(f["status"], "Failure");
        assert!(f["details"].is_null());
        assert!(f["message"].as_str().unwrap().contains("nope"));
    }

    #[test]
    fn exit_codes_of_signals_are_128_plus() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
    }
}
