//! skeinctl's commands. `demo` builds a test bed and proves its paths; `down` removes a
//! cluster or bed by name (see [`skein_testbed::sweep`]).

pub mod demo;

use std::process::ExitCode;

/// `skeinctl down`: sweeps one prefix, or all of them.
pub fn down(name: Option<&str>) -> anyhow::Result<ExitCode> {
    let report = match name {
        Some(n) => {
            skein_testbed::validate_prefix(n)?;
            skein_testbed::sweep(n)
        }
        None => skein_testbed::sweep_all(),
    };
    for r in &report.removed {
        println!("removed {r}");
    }
    if report.removed.is_empty() && report.errors.is_empty() {
        println!("nothing to remove");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
