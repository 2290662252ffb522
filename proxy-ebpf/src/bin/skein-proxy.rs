//! `skein-proxy`: not implemented yet (issue #7). It says so and exits non-zero, so that
//! nothing that calls it mistakes it for a working component.

fn main() -> std::process::ExitCode {
    eprintln!("skein-proxy: not implemented yet (skein issue #7)");
    std::process::ExitCode::from(2)
}
