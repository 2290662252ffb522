//! `skein-cni`: the CNI plugin binary. The runtime sets `CNI_*`, writes the network
//! config to stdin, and reads the result or error JSON from stdout.

use std::io::{Read, Write};

fn main() -> std::process::ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = skein_cni::error::CniError::new(
            skein_cni::error::code::IO_FAILURE,
            format!("read config from stdin: {e}"),
        );
        println!("{}", err.to_json(skein_cni::result::LATEST));
        return std::process::ExitCode::from(1);
    }
    let out = skein_cni::run(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    if !out.stdout.is_empty() {
        let _ = writeln!(stdout, "{}", out.stdout);
    }
    let _ = stdout.flush();
    std::process::ExitCode::from(out.exit_code)
}
