//! `skein-apiserver`: not implemented yet (issue #5). It says so and exits non-zero, so that
//! nothing that calls it mistakes it for a working component.

fn main() -> std::process::ExitCode {
    eprintln!("skein-apiserver: not implemented yet (skein issue #5)");
    std::process::ExitCode::from(2)
}
