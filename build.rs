// SPDX-License-Identifier: GPL-2.0-only
use std::process::Command;

/// `git ARGS`'s trimmed output, or None when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The build id: the git commit the binary is built from ("-dirty" when the
/// tree has changes), or "unknown" outside a git checkout.
fn git_build_id() -> String {
    match git(&["rev-parse", "--short=7", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .map(|s| !s.is_empty())
                .unwrap_or(false);
            format!("g{hash}{}", if dirty { "-dirty" } else { "" })
        }
        _ => "unknown".to_string(),
    }
}

fn main() {
    println!("cargo:rustc-env=AGENTCG_BUILD_ID={}", git_build_id());
    // any rerun-if-changed line turns off cargo's default of watching the
    // whole package, so the BPF sources are named too
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/bpf");
    // The build id follows the commit. .git/HEAD only names the branch; a
    // commit (an amend too) moves the branch's ref, loose or packed.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]).map(|r| format!(".git/{r}"));
    for f in [".git/HEAD", ".git/index", ".git/packed-refs"]
        .into_iter()
        .map(String::from)
        .chain(branch)
    {
        if std::path::Path::new(&f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .unwrap();
    // the memcg BPF ops: its own object, loaded only where the kernel has them
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_skel("src/bpf/memcg_ops.bpf.c", "memcg_ops")
        .build()
        .unwrap();
    // --observe: tracepoints only, loaded instead of the scheduler
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_skel("src/bpf/observe.bpf.c", "observe")
        .build()
        .unwrap();
}
