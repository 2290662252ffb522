//! `flanneld`: not implemented yet (issue #4). It says so and exits non-zero, so that
//! nothing that calls it mistakes it for a working component.

fn main() -> std::process::ExitCode {
    eprintln!("flanneld: not implemented yet (skein issue #4)");
    std::process::ExitCode::from(2)
}
