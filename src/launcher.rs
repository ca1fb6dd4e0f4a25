// SPDX-License-Identifier: GPL-2.0-only
//! `scx_agentcg run`: run one tool call as a step of an agent session.
//!
//! `scx_agentcg run --session S [--step T] [--class C] -- CMD [ARGS]`
//! creates `<parent>/S` (and `<parent>/S/T`) if needed, with the cpu,
//! cpuset and memory controllers enabled for children, moves itself into
//! the step (or the session, without --step), runs CMD there, and exits
//! with CMD's status (128 + N if a signal N killed it, 127 if CMD was not
//! found, 126 if it could not be run). Afterwards it moves itself back and
//! removes the step cgroup if it is empty; the session and the parent stay.
//! `--class` is recorded as the xattr `user.agentcg.class` of the step, so
//! the scheduler's policy can pick a profile of that class. CMD is in the
//! same process group, so terminal signals reach it directly.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Session name (a child of --parent).
    #[arg(long)]
    pub session: String,

    /// Step name (a child of the session); without it CMD runs in the
    /// session cgroup itself.
    #[arg(long)]
    pub step: Option<String>,

    /// Step class for the policy: interactive, tool or background.
    #[arg(long)]
    pub class: Option<String>,

    /// The managed parent, relative to the cgroup2 root.
    #[arg(long, default_value = "agentcg")]
    pub parent: String,

    /// Create the managed parent if it does not exist.
    #[arg(long)]
    pub create_parent: bool,

    #[arg(long, hide = true, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,

    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

const CLASSES: [&str; 3] = ["interactive", "tool", "background"];

fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| -> Result<()> {
        bail!("--{what} {name:?} is not a usable cgroup name: {why}")
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with("cgroup.") || name.contains('\n') {
        return bad("it looks like a cgroup interface file");
    }
    Ok(())
}

/// Reject bad names and classes before touching anything.
pub fn validate(args: &RunArgs) -> Result<()> {
    check_name("session", &args.session)?;
    if let Some(s) = &args.step {
        check_name("step", s)?;
    }
    if let Some(c) = &args.class {
        if !CLASSES.contains(&c.as_str()) {
            bail!("--class {c:?} is not a step class: use interactive, tool or background");
        }
    }
    let p = args.parent.trim_end_matches('/');
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("--parent {:?} must be a path relative to the cgroup2 root, like \"agentcg\"", args.parent);
    }
    Ok(())
}

fn io_context(e: std::io::Error, file: &Path) -> anyhow::Error {
    match e.kind() {
        ErrorKind::PermissionDenied => anyhow::anyhow!(
            "{}: permission denied: run as root or in a cgroup delegated to you",
            file.display()
        ),
        _ => anyhow::anyhow!("{}: {e}", file.display()),
    }
}

/// Write each controller to @dir/cgroup.subtree_control separately; cpu is
/// required, the others are optional.
fn enable_controllers(dir: &Path) -> Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let have = std::fs::read_to_string(&file).unwrap_or_default();
    for ctl in ["cpu", "cpuset", "memory"] {
        if have.split_whitespace().any(|c| c == ctl) {
            continue;
        }
        if let Err(e) = std::fs::write(&file, format!("+{ctl}")) {
            if ctl == "cpu" {
                return Err(io_context(e, &file)).context("enabling the cpu controller");
            }
            log::warn!("{}: cannot enable {ctl}: {e}", file.display());
        }
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_context(e, dir)),
    }
}

/// Create what is missing and return the cgroup CMD runs in.
pub fn prepare(args: &RunArgs) -> Result<PathBuf> {
    validate(args)?;
    let root = &args.cgroup_root;
    if !root.join("cgroup.controllers").exists() {
        bail!(
            "{} has no cgroup.controllers: this host uses cgroup v1 (or hybrid); scx_agentcg needs \
             the unified cgroup2 hierarchy: boot with systemd.unified_cgroup_hierarchy=1",
            root.display()
        );
    }
    let parent = root.join(args.parent.trim_end_matches('/'));
    if !parent.is_dir() {
        if !args.create_parent {
            bail!(
                "cgroup {} does not exist under {}: start scx_agentcg with --cell-parent-cgroup {}, \
                 create it, or pass --create-parent",
                args.parent,
                root.display(),
                args.parent
            );
        }
        std::fs::create_dir_all(&parent).map_err(|e| io_context(e, &parent))?;
    }
    // every level down to the parent delegates the controllers
    let mut dir = root.clone();
    enable_controllers(&dir)?;
    for comp in args.parent.trim_end_matches('/').split('/') {
        dir = dir.join(comp);
        enable_controllers(&dir)?;
    }
    let session = parent.join(&args.session);
    ensure_dir(&session)?;
    let Some(step) = &args.step else {
        return Ok(session);
    };
    enable_controllers(&session)?;
    let step = session.join(step);
    ensure_dir(&step)?;
    if let Some(class) = &args.class {
        set_class(&step, class);
    }
    Ok(step)
}

fn set_class(dir: &Path, class: &str) {
    let (Ok(path), Ok(name)) = (CString::new(dir.as_os_str().as_bytes()), CString::new("user.agentcg.class")) else {
        return;
    };
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(path.as_ptr(), name.as_ptr(), class.as_ptr() as *const libc::c_void, class.len(), 0)
    };
    if r != 0 {
        log::warn!(
            "{}: cannot record the class ({}); the policy file's selectors decide",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Move the calling process into @dir.
fn move_self(dir: &Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            anyhow::anyhow!(
                "{}: the kernel refuses tasks here (it has child cgroups with controllers): pass --step",
                procs.display()
            )
        } else {
            io_context(e, &procs)
        }
    })
}

/// This process's cgroup, from /proc/self/cgroup ("0::/path").
fn current_cgroup(root: &Path) -> Option<PathBuf> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim_start_matches('/')))
}

/// The exit code a shell would report for @st.
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

/// Spawn @cmd with inherited stdio and wait; 127/126 if it cannot start.
pub fn run_cmd(cmd: &[String]) -> i32 {
    match std::process::Command::new(&cmd[0]).args(&cmd[1..]).status() {
        Ok(st) => exit_code(st),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("scx_agentcg run: {}: command not found", cmd[0]);
            127
        }
        Err(e) => {
            eprintln!("scx_agentcg run: {}: {e}", cmd[0]);
            126
        }
    }
}

/// Remove @dir if it has no tasks and no children. Returns whether it did.
pub fn cleanup_step(dir: &Path) -> bool {
    let busy = std::fs::read_to_string(dir.join("cgroup.procs")).map(|s| !s.trim().is_empty()).unwrap_or(false);
    if busy {
        return false;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("{}: not removed: {e}", dir.display());
            false
        }
    }
}

pub fn run(args: &RunArgs) -> Result<i32> {
    let target = prepare(args)?;
    let back = current_cgroup(&args.cgroup_root);
    move_self(&target)?;
    let code = run_cmd(&args.cmd);
    if let Some(back) = back {
        let _ = std::fs::write(back.join("cgroup.procs"), std::process::id().to_string());
    }
    if args.step.is_some() {
        cleanup_step(&target);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(v: &[&str]) -> RunArgs {
        let mut a = vec!["t"];
        a.extend_from_slice(v);
        T::try_parse_from(a).unwrap().run
    }

    fn fake_root(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcg-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup.controllers"), "cpu cpuset memory\n").unwrap();
        d
    }

    #[test]
    fn names_and_classes_are_checked() {
        assert!(validate(&args(&["--session", "s1", "--", "true"])).is_ok());
        for bad in ["a/b", "", ".x", "cgroup.procs", &"x".repeat(201)] {
            let e = validate(&args(&["--session", bad, "--", "true"])).unwrap_err().to_string();
            assert!(e.contains("--session"), "{e}");
        }
        let e = validate(&args(&["--session", "s", "--step", "..", "--", "true"])).unwrap_err().to_string();
        assert!(e.contains("--step"), "{e}");
        let e = validate(&args(&["--session", "s", "--class", "fast", "--", "true"])).unwrap_err().to_string();
        assert!(e.contains("interactive, tool or background"), "{e}");
        let e = validate(&args(&["--session", "s", "--parent", "/abs", "--", "true"])).unwrap_err().to_string();
        assert!(e.contains("--parent"), "{e}");
        assert!(T::try_parse_from(["t", "--session", "s"]).is_err(), "a command is required");
    }

    #[test]
    fn prepare_creates_and_delegates() {
        let root = fake_root("prep");
        std::fs::create_dir(root.join("agentcg")).unwrap();
        let a = args(&["--session", "s1", "--step", "t1", "--cgroup-root", root.to_str().unwrap(), "--", "true"]);
        let dir = prepare(&a).unwrap();
        assert_eq!(dir, root.join("agentcg/s1/t1"));
        assert!(dir.is_dir());
        // on a plain directory each "+ctl" write replaces the file: the
        // last controller written is what is left
        for d in [root.clone(), root.join("agentcg"), root.join("agentcg/s1")] {
            assert_eq!(std::fs::read_to_string(d.join("cgroup.subtree_control")).unwrap(), "+memory");
        }
        assert!(cleanup_step(&dir));
        assert!(!dir.exists() && root.join("agentcg/s1").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn clear_errors() {
        let root = fake_root("err");
        let a = args(&["--session", "s", "--cgroup-root", root.to_str().unwrap(), "--", "true"]);
        let e = prepare(&a).unwrap_err().to_string();
        assert!(e.contains("agentcg does not exist") && e.contains("--create-parent"), "{e}");
        std::fs::remove_file(root.join("cgroup.controllers")).unwrap();
        let e = prepare(&a).unwrap_err().to_string();
        assert!(e.contains("cgroup v1"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn exit_codes_like_a_shell() {
        let sh = |s: &str| run_cmd(&["sh".into(), "-c".into(), s.into()]);
        assert_eq!(sh("exit 3"), 3);
        assert_eq!(sh("kill -TERM $$"), 128 + 15);
        assert_eq!(run_cmd(&["/no/such/command".into()]), 127);
    }
}
