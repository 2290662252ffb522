//! Logs of a short-lived plugin: errors to stderr, or appended to the config's
//! `logFile`; never stdout (stdout is the runtime's).

use std::io::Write;

/// Where log lines go.
#[derive(Debug)]
pub struct Logger {
    file: Option<std::path::PathBuf>,
}

impl Logger {
    /// Logs to `file` when given, else stderr.
    pub fn new(file: Option<&str>) -> Logger {
        Logger {
            file: file.map(Into::into),
        }
    }

    /// Logs an error line.
    pub fn error(&self, msg: &str) {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let line = format!("{secs:.3} skein-cni[{}] error: {msg}\n", std::process::id());
        let wrote = self.file.as_ref().is_some_and(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .is_ok()
        });
        if !wrote {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}
