//! `skein-scheduler`: not implemented yet (issue #6). It says so and exits non-zero, so that
//! nothing that calls it mistakes it for a working component.

fn main() -> std::process::ExitCode {
    eprintln!("skein-scheduler: not implemented yet (skein issue #6)");
    std::process::ExitCode::from(2)
}
