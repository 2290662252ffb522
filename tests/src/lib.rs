//! Helpers shared by the end-to-end tests in `tests/tests/`. Every test builds its own
//! [`skein_testbed::TestBed`] with a unique prefix, so tests run in parallel.

pub mod cluster;

/// Fails the test with a clear reason unless it runs as root: the tests change kernel
/// state inside namespaces they create, which needs CAP_SYS_ADMIN and CAP_NET_ADMIN.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces); run `make test` as root"
    );
}

/// The path of a workspace binary built next to this test (`target/<profile>/<name>`).
/// `make test` builds every binary before running the tests; a missing one fails the test
/// with that instruction.
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir of the test executable");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (`make test` does)",
        path.display()
    );
    path
}
