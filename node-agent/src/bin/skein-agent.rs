//! `skein-agent`: the kubelet of a skein node. `skein-agent pause` is the sandbox's
//! pause process (the agent re-executes itself for it).

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("pause") {
        skein_node_agent::sandbox::pause_main();
    }
    eprintln!("skein-agent: the API-facing agent is not implemented yet (skein issue #6)");
    std::process::ExitCode::from(2)
}
