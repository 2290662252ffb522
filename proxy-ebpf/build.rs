//! Compiles the eBPF programs in `bpf/` with clang-19 (`-target bpf -O2 -g`) into
//! `$OUT_DIR/<name>.o`, against a `vmlinux.h` that bpftool dumps from the running
//! kernel's BTF. Any failure stops the build with the compiler's own message.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["cgroup_sock", "tc_nodeport"];
const CLANG: &str = "clang-19";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("bpf");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=SKEIN_BPF_CLANG");

    let vmlinux = out.join("vmlinux.h");
    if !vmlinux.exists() {
        let dump = Command::new("bpftool")
            .args(["btf", "dump", "file", KERNEL_BTF, "format", "c"])
            .output()
            .unwrap_or_else(|e| panic!("run bpftool (Debian package bpftool): {e}"));
        if !dump.status.success() {
            panic!(
                "bpftool btf dump file {KERNEL_BTF} failed: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
        }
        std::fs::write(&vmlinux, dump.stdout).expect("write vmlinux.h");
    }

    let clang = std::env::var("SKEIN_BPF_CLANG").unwrap_or_else(|_| CLANG.to_owned());
    for name in PROGRAMS {
        compile(&clang, &src, &out, name);
    }
}

fn compile(clang: &str, src: &Path, out: &Path, name: &str) {
    let input = src.join(format!("{name}.c"));
    let output = out.join(format!("{name}.o"));
    let result = Command::new(clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg("-D__TARGET_ARCH_x86")
        .arg(format!("-I{}", out.display()))
        .arg(format!("-I{}", src.display()))
        .arg("-c")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap_or_else(|e| panic!("run {clang} (Debian package clang-19): {e}"));
    if !result.status.success() {
        panic!(
            "{clang} failed on {}:\n{}",
            input.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
}
