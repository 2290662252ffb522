//! `skein-cni`: not implemented yet (issue #3). It says so and exits non-zero, so that
//! nothing that calls it mistakes it for a working component.

fn main() -> std::process::ExitCode {
    eprintln!("skein-cni: not implemented yet (skein issue #3)");
    std::process::ExitCode::from(2)
}
