// SPDX-License-Identifier: GPL-2.0-only
//! The step launcher: `scx_agentcg run`, how an agent runtime wraps a tool
//! call.
//!
//! ```text
//! scx_agentcg run --session S [--step T] [--class C] [--parent agentcg] -- CMD [ARGS...]
//! ```
//!
//! 1. Every name and the class are checked before anything is touched.
//! 2. The session cgroup `<root>/<parent>/S` and, with `--step`, the step
//!    cgroup `<root>/<parent>/S/T` are created if missing. The cgroup2 root,
//!    every level of the parent and (with `--step`) the session delegate the
//!    `cpu`, `cpuset` and `memory` controllers to their children through
//!    `cgroup.subtree_control`, one controller per write. `cpu` is required;
//!    a missing `cpuset` or `memory` only gives a warning. The parent itself
//!    is created only with `--create-parent`.
//! 3. `--class` is recorded on the leaf (the step, or the session without
//!    `--step`) as the user xattr `user.agentcg.class`, which the scheduler
//!    reads to pick the step's profile.
//! 4. The launcher moves itself into the leaf, runs CMD there with inherited
//!    stdio and waits for it. Without `--step` CMD runs in the session cgroup
//!    itself, which cgroup v2 allows only while the session has no children
//!    with controllers; otherwise the kernel refuses and the error says to
//!    pass `--step`.
//! 5. Afterwards it moves itself back to the cgroup it came from and removes
//!    the step cgroup if it is empty (no processes, no children). The
//!    session and the parent are never removed.
//!
//! The exit code is CMD's own, `128 + N` if signal N killed it (as a shell
//! reports it), 127 if CMD was not found and 126 if it could not be run.
//!
//! Signals: CMD runs in the launcher's process group, so a terminal's
//! SIGINT, SIGQUIT and SIGHUP reach it directly; the launcher then only
//! survives them to report CMD's status and clean up. When the launcher is
//! not in the terminal's foreground process group (an agent runtime without
//! a terminal), those signals are forwarded to CMD. SIGTERM is always
//! forwarded, so a runtime that stops a tool call by signalling the launcher
//! stops the tool too. SIGKILL cannot be forwarded: CMD then keeps running
//! in the step, which stays until it is empty.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{anyhow, bail, Context, Result};

/// The step classes `--class` accepts.
pub const CLASSES: [&str; 3] = ["interactive", "tool", "background"];

/// Controllers delegated to the sessions and steps; `cpu` is required.
const CONTROLLERS: [&str; 3] = ["cpu", "cpuset", "memory"];

/// Longest session, step or parent component name, in bytes.
const MAX_NAME_LEN: usize = 200;

/// Names starting with these would look like cgroup interface files (and may
/// clash with them once a controller is enabled).
const RESERVED_PREFIXES: [&str; 11] = [
    "cgroup.", "cpu.", "cpuset.", "memory.", "io.", "pids.", "hugetlb.", "rdma.", "misc.", "irq.",
    "dmem.",
];

/// Linux errno for "operation not supported" (EOPNOTSUPP == ENOTSUP).
const EOPNOTSUPP: i32 = 95;

const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGQUIT: c_int = 3;
const SIGTERM: c_int = 15;

// glibc symbols; std links the C library already.
unsafe extern "C" {
    fn setxattr(
        path: *const c_char,
        name: *const c_char,
        value: *const c_void,
        size: usize,
        flags: c_int,
    ) -> c_int;
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn kill(pid: i32, sig: c_int) -> c_int;
    fn getpgrp() -> i32;
    fn tcgetpgrp(fd: c_int) -> i32;
}

/// Arguments of `scx_agentcg run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Session name: the cgroup <PARENT>/<SESSION>, created if missing.
    #[arg(long)]
    pub session: String,

    /// Step name: the cgroup <PARENT>/<SESSION>/<STEP>, created if missing
    /// and removed after CMD if empty. Without it CMD runs in the session
    /// cgroup itself.
    #[arg(long)]
    pub step: Option<String>,

    /// Step class recorded for the policy: interactive, tool or background.
    #[arg(long)]
    pub class: Option<String>,

    /// The cgroup holding the sessions, relative to the cgroup2 root (the
    /// scheduler's --cell-parent-cgroup).
    #[arg(long, default_value = "agentcg")]
    pub parent: String,

    /// Create the parent cgroup if it does not exist.
    #[arg(long)]
    pub create_parent: bool,

    /// Where cgroup2 is mounted.
    #[arg(long, hide = true, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,

    /// The command to run and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Why @name cannot be a cgroup name, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.contains('/') {
        "it contains '/'".to_string()
    } else if name == "." || name == ".." {
        "it is a special directory name".to_string()
    } else if name.starts_with('.') {
        "it starts with '.'".to_string()
    } else if name.len() > MAX_NAME_LEN {
        format!("it is {} bytes long, more than {MAX_NAME_LEN}", name.len())
    } else if name.chars().any(char::is_control) {
        "it contains a control character".to_string()
    } else if let Some(p) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        format!("it starts with {p:?}, like a cgroup interface file")
    } else {
        return None;
    };
    Some(why)
}

fn check_name(flag: &str, name: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => bail!(
            "--{flag} {name:?} is not a usable cgroup name: {why}; \
             pick a plain name such as \"build-1\""
        ),
    }
}

/// The parent path relative to the cgroup2 root, without a trailing '/'.
fn parent_rel(args: &RunArgs) -> &str {
    args.parent.strip_suffix('/').unwrap_or(&args.parent)
}

/// Reject bad names, classes and commands before touching anything.
pub fn validate(args: &RunArgs) -> Result<()> {
    check_name("session", &args.session)?;
    if let Some(step) = &args.step {
        check_name("step", step)?;
    }
    if let Some(class) = &args.class {
        if !CLASSES.contains(&class.as_str()) {
            bail!(
                "--class {class:?} is not a step class: use one of {}",
                CLASSES.join(", ")
            );
        }
    }
    let parent = parent_rel(args);
    if parent.is_empty() {
        bail!("--parent is empty: give a path relative to the cgroup2 root, like \"agentcg\"");
    }
    if parent.starts_with('/') {
        bail!(
            "--parent {:?} is absolute: give it relative to the cgroup2 root ({}), \
             like \"agentcg\"",
            args.parent,
            args.cgroup_root.display()
        );
    }
    for comp in parent.split('/') {
        if comp == ".." {
            bail!(
                "--parent {:?} contains '..': give a path below the cgroup2 root, like \"agentcg\"",
                args.parent
            );
        }
        if let Some(why) = name_problem(comp) {
            bail!(
                "--parent {:?}: component {comp:?} is not a usable cgroup name: {why}",
                args.parent
            );
        }
    }
    if args.cmd.first().is_none_or(|c| c.is_empty()) {
        bail!("no command given: put it after --, like `scx_agentcg run --session S -- make test`");
    }
    Ok(())
}

/// An I/O error on @path, with what to do about a permission problem.
fn fs_error(e: std::io::Error, doing: &str, path: &Path) -> anyhow::Error {
    if e.kind() == ErrorKind::PermissionDenied {
        anyhow!(
            "{doing} {}: permission denied: run as root, or in a cgroup subtree delegated \
             to this user (point --parent into it)",
            path.display()
        )
    } else {
        anyhow!("{doing} {}: {e}", path.display())
    }
}

/// Fail unless @root is a cgroup2 mount.
fn check_root(root: &Path) -> Result<()> {
    if !root.is_dir() {
        bail!(
            "the cgroup2 root {} does not exist: mount cgroup2 there \
             (mount -t cgroup2 none {})",
            root.display(),
            root.display()
        );
    }
    if !root.join("cgroup.controllers").exists() {
        bail!(
            "{} has no cgroup.controllers: this host uses cgroup v1 (or hybrid): scx_agentcg \
             needs the unified cgroup2 hierarchy; boot with systemd.unified_cgroup_hierarchy=1",
            root.display()
        );
    }
    Ok(())
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

/// Delegate CONTROLLERS from @dir to its children, one write per controller
/// not yet in its cgroup.subtree_control. Each successful write is appended
/// to @writes. Only a missing `cpu` is an error.
fn enable_controllers(dir: &Path, writes: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = match std::fs::read_to_string(&file) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(fs_error(e, "cannot read", &file)),
    };
    // On cgroupfs every directory has cgroup.controllers; if it cannot be
    // read, let the writes find out.
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).ok();
    for ctl in CONTROLLERS {
        if has_word(&enabled, ctl) {
            continue;
        }
        let problem = if available.as_deref().is_some_and(|a| !has_word(a, ctl)) {
            anyhow!(
                "the {ctl} controller is not available in {} (not in its cgroup.controllers: \
                 the kernel lacks it or the cgroup above does not delegate it)",
                dir.display()
            )
        } else {
            let value = format!("+{ctl}");
            match std::fs::write(&file, &value) {
                Ok(()) => {
                    log::debug!("{}: wrote {value}", file.display());
                    writes.push((file.clone(), value));
                    continue;
                }
                Err(e) => controller_error(e, ctl, dir, &file),
            }
        };
        if ctl == "cpu" {
            return Err(problem.context("scx_agentcg needs the cpu controller for every session"));
        }
        log::warn!("{problem:#}; sessions and steps run without {ctl} control");
    }
    Ok(())
}

fn controller_error(e: std::io::Error, ctl: &str, dir: &Path, file: &Path) -> anyhow::Error {
    match e.kind() {
        ErrorKind::ResourceBusy => anyhow!(
            "cannot enable {ctl} in {}: {} has processes of its own, and cgroup v2 delegates \
             controllers only from cgroups without processes: move them into a child cgroup \
             (a session run without --step holds its session this way until it ends)",
            file.display(),
            dir.display()
        ),
        ErrorKind::NotFound => anyhow!(
            "the {ctl} controller is not available in {} (the kernel lacks it or the cgroup \
             above does not delegate it)",
            dir.display()
        ),
        _ => fs_error(e, &format!("cannot enable {ctl} in"), file),
    }
}

/// Create the cgroup @dir unless it exists.
fn ensure_dir(dir: &Path, flag: &str) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            log::debug!("created cgroup {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if dir.is_dir() {
                Ok(())
            } else {
                bail!(
                    "{} exists but is not a cgroup directory: choose another {flag} name",
                    dir.display()
                )
            }
        }
        Err(e) => Err(fs_error(e, "cannot create the cgroup", dir)),
    }
}

/// Record @class as the xattr user.agentcg.class of @dir. Ok(false) if the
/// kernel does not support user xattrs on cgroups.
fn set_class(dir: &Path, class: &str) -> Result<bool> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("{}: the path contains a NUL byte", dir.display()))?;
    let name = c"user.agentcg.class";
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // value is @class's bytes with their exact length.
    let r = unsafe {
        setxattr(
            path.as_ptr(),
            name.as_ptr(),
            class.as_ptr().cast(),
            class.len(),
            0,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(EOPNOTSUPP) {
        log::warn!(
            "{}: this kernel does not support user xattrs on cgroups (Linux 5.7+ does): \
             --class {class} is ignored and the policy file's selectors apply",
            dir.display()
        );
        return Ok(false);
    }
    Err(fs_error(
        e,
        "cannot record the class (xattr user.agentcg.class) on",
        dir,
    ))
}

/// Create what is missing and return the cgroup CMD runs in (the step, or
/// the session without --step). Does not move any process.
pub fn prepare(args: &RunArgs) -> Result<PathBuf> {
    prepare_logged(args, &mut Vec::new())
}

/// prepare(), appending each cgroup.subtree_control write to @writes.
fn prepare_logged(args: &RunArgs, writes: &mut Vec<(PathBuf, String)>) -> Result<PathBuf> {
    validate(args)?;
    let root = &args.cgroup_root;
    check_root(root)?;
    let rel = parent_rel(args);
    let parent = root.join(rel);
    if !parent.is_dir() && !args.create_parent {
        bail!(
            "cgroup {rel} does not exist under {}: start scx_agentcg with \
             --cell-parent-cgroup {rel}, create it, or pass --create-parent",
            root.display()
        );
    }
    enable_controllers(root, writes)?;
    let mut dir = root.clone();
    for comp in rel.split('/') {
        dir.push(comp);
        ensure_dir(&dir, "--parent")?;
        enable_controllers(&dir, writes)?;
    }
    let session = parent.join(&args.session);
    ensure_dir(&session, "--session")?;
    let leaf = match &args.step {
        Some(step) => {
            enable_controllers(&session, writes)?;
            let step = session.join(step);
            ensure_dir(&step, "--step")?;
            step
        }
        None => session,
    };
    if let Some(class) = &args.class {
        set_class(&leaf, class)?;
    }
    Ok(leaf)
}

/// Move the calling process into the cgroup @dir.
fn move_self(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

fn move_error(e: std::io::Error, dir: &Path) -> anyhow::Error {
    let procs = dir.join("cgroup.procs");
    match e.kind() {
        ErrorKind::ResourceBusy => anyhow!(
            "the kernel refuses processes in {}: it delegates controllers to child cgroups, \
             and cgroup v2 keeps processes in leaf cgroups only: pass --step NAME to run in \
             a step cgroup below it",
            dir.display()
        ),
        ErrorKind::PermissionDenied => anyhow!(
            "cannot move into {}: permission denied: moving a process needs root, or write \
             access to cgroup.procs of the source, the target and their common ancestor \
             (a delegated subtree)",
            procs.display()
        ),
        _ => fs_error(e, "cannot move into", &procs),
    }
}

/// prepare() and move into the leaf; if a concurrent run removes the step
/// between the two, create it again.
fn enter(args: &RunArgs) -> Result<PathBuf> {
    let mut tries = 0;
    loop {
        let leaf = prepare(args)?;
        match move_self(&leaf) {
            Ok(()) => return Ok(leaf),
            Err(e) if e.kind() == ErrorKind::NotFound && tries < 2 => {
                log::debug!("{} vanished before we moved in; again", leaf.display());
                tries += 1;
            }
            Err(e) => return Err(move_error(e, &leaf)),
        }
    }
}

/// The cgroup2 path in /proc/self/cgroup contents ("0::/path").
fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"))
}

/// The cgroup this process is in now, under @root.
fn current_cgroup(root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    Some(root.join(unified_path(&text)?.trim_start_matches('/')))
}

/// Move back to @origin (or, failing that, the root cgroup).
fn leave(leaf: &Path, origin: Option<&Path>, root: &Path) -> bool {
    for dir in origin.into_iter().chain([root]) {
        match move_self(dir) {
            Ok(()) => return true,
            Err(e) => log::debug!("cannot move back to {}: {e}", dir.display()),
        }
    }
    log::warn!(
        "could not move back out of {}: it stays until this process exits",
        leaf.display()
    );
    false
}

/// The exit code a shell would report for @status: the code, or 128 + N if
/// signal N killed the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// Report why @prog could not be started; return the shell's exit code.
fn spawn_failure(prog: &str, e: &std::io::Error) -> i32 {
    let path = Path::new(prog);
    let (code, why) = match e.kind() {
        ErrorKind::NotFound if !prog.contains('/') => (127, "command not found in PATH".into()),
        ErrorKind::NotFound if path.exists() => (
            127,
            "cannot run it: its interpreter (#! line) or loader does not exist".into(),
        ),
        ErrorKind::NotFound => (127, "no such file".into()),
        ErrorKind::PermissionDenied if path.is_dir() => (126, "it is a directory".into()),
        ErrorKind::PermissionDenied => (
            126,
            "permission denied: it is not executable (chmod +x) or a directory on its way \
             is not searchable"
                .into(),
        ),
        _ => (126, format!("cannot run it: {e}")),
    };
    eprintln!("scx_agentcg run: {prog}: {why}");
    code
}

/// Pid of the running CMD for the signal handler (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that came before CMD started.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// Forward SIGINT, SIGQUIT and SIGHUP too (no terminal sends them to CMD).
static FORWARD_TTY_SIGNALS: AtomicBool = AtomicBool::new(true);

extern "C" fn on_signal(sig: c_int) {
    // Only atomics and kill(): both are async-signal-safe.
    if sig != SIGTERM && !FORWARD_TTY_SIGNALS.load(Ordering::SeqCst) {
        return;
    }
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill() has no memory-safety preconditions.
        unsafe { kill(pid, sig) };
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// Whether this process is in the foreground process group of the terminal
/// on stdin, stdout or stderr (which then signals CMD directly).
fn in_terminal_foreground() -> bool {
    // SAFETY: neither call has preconditions; tcgetpgrp() fails with -1 on
    // a descriptor that is not our controlling terminal.
    let pgrp = unsafe { getpgrp() };
    (0..3).any(|fd| unsafe { tcgetpgrp(fd) } == pgrp)
}

fn install_forwarding() {
    FORWARD_TTY_SIGNALS.store(!in_terminal_foreground(), Ordering::SeqCst);
    for sig in [SIGHUP, SIGINT, SIGQUIT, SIGTERM] {
        // SAFETY: the handler only touches atomics and calls kill(); a
        // caught signal is reset to its default in CMD at exec.
        if unsafe { signal(sig, on_signal) } == usize::MAX {
            log::debug!(
                "cannot catch signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Run @cmd with inherited stdio and wait for it; return the exit code to
/// use. With @forward, SIGTERM (and terminal signals when no terminal sends
/// them) received meanwhile are passed on to it.
fn run_cmd(cmd: &[String], forward: bool) -> i32 {
    let Some((prog, rest)) = cmd.split_first() else {
        eprintln!("scx_agentcg run: no command given");
        return 127;
    };
    if forward {
        install_forwarding();
        let sig = PENDING.swap(0, Ordering::SeqCst);
        if sig != 0 {
            return 128 + sig;
        }
    }
    let mut child = match Command::new(prog).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => return spawn_failure(prog, &e),
    };
    if forward {
        let pid = child.id() as i32;
        CHILD.store(pid, Ordering::SeqCst);
        let sig = PENDING.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill() has no memory-safety preconditions.
            unsafe { kill(pid, sig) };
        }
    }
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    match status {
        Ok(status) => exit_code(status),
        Err(e) => {
            eprintln!("scx_agentcg run: waiting for {prog}: {e}");
            1
        }
    }
}

/// Remove the step cgroup @dir if it has no processes and no child
/// cgroups. Returns whether it was removed; anything else leaves it alone.
pub fn cleanup_step(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(procs) if !procs.trim().is_empty() => {
            log::debug!(
                "{}: still has processes (left behind by the command?); kept",
                dir.display()
            );
            return false;
        }
        Ok(_) => {}
        // not a cgroupfs directory: nothing to check
        Err(e) if e.kind() == ErrorKind::NotFound && dir.is_dir() => {}
        Err(e) => {
            log::debug!("{}: not removed: {e}", dir.display());
            return false;
        }
    }
    let has_children = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir())),
        Err(e) => {
            log::debug!("{}: not removed: {e}", dir.display());
            return false;
        }
    };
    if has_children {
        log::debug!("{}: has child cgroups; kept", dir.display());
        return false;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {
            log::debug!("removed the step cgroup {}", dir.display());
            true
        }
        Err(e) => {
            log::debug!("{}: not removed: {e}", dir.display());
            false
        }
    }
}

/// `scx_agentcg run`: prepare the cgroups, run CMD in the leaf, clean up.
/// Returns the exit code to exit with.
pub fn run(args: &RunArgs) -> Result<i32> {
    validate(args)?;
    let origin = current_cgroup(&args.cgroup_root);
    let leaf = enter(args)?;
    log::debug!("running {:?} in {}", args.cmd, leaf.display());
    let code = run_cmd(&args.cmd, true);
    let left = leave(&leaf, origin.as_deref(), &args.cgroup_root);
    if left && args.step.is_some() {
        cleanup_step(&leaf);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::atomic::AtomicUsize;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(v: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("t").chain(v.iter().copied()))
            .unwrap()
            .run
    }

    /// A fake cgroup2 root in a temp dir, removed on drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(controllers: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "agentcg-launcher-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
            FakeRoot(dir)
        }

        fn with_parent(self, rel: &str) -> Self {
            let p = self.0.join(rel);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("cgroup.subtree_control"), "").unwrap();
            self
        }

        fn args(&self, extra: &[&str]) -> RunArgs {
            let mut v = vec!["--cgroup-root", self.0.to_str().unwrap()];
            v.extend_from_slice(extra);
            v.extend_from_slice(&["--", "true"]);
            parse(&v)
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    fn writes_to(writes: &[(PathBuf, String)], dir: &Path) -> Vec<String> {
        let file = dir.join("cgroup.subtree_control");
        writes
            .iter()
            .filter(|(f, _)| *f == file)
            .map(|(_, v)| v.clone())
            .collect()
    }

    #[test]
    fn good_names_pass() {
        let long = "x".repeat(MAX_NAME_LEN);
        for name in ["s1", "build-1", "a.b", "my_session", long.as_str()] {
            let a = parse(&["--session", name, "--step", name, "--", "true"]);
            validate(&a).unwrap();
        }
        let a = parse(&["--session", "s", "--class", "tool", "--", "true"]);
        validate(&a).unwrap();
        for parent in ["agentcg", "agentcg/", "a/b/c", "user.slice/agents"] {
            let a = parse(&["--session", "s", "--parent", parent, "--", "true"]);
            validate(&a).unwrap();
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for (name, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            (".", "special"),
            ("..", "special"),
            (".hidden", "starts with '.'"),
            ("cgroup.procs", "interface file"),
            ("cpu.max", "interface file"),
            ("memory.x", "interface file"),
            ("a\nb", "control character"),
            (long.as_str(), "more than 200"),
        ] {
            let e = err(validate(&parse(&["--session", name, "--", "true"])));
            assert!(e.contains("--session") && e.contains(why), "{name:?}: {e}");
            let e = err(validate(&parse(&[
                "--session",
                "s",
                "--step",
                name,
                "--",
                "true",
            ])));
            assert!(e.contains("--step") && e.contains(why), "{name:?}: {e}");
        }
    }

    #[test]
    fn bad_parent_class_and_command_are_rejected() {
        for (parent, why) in [
            ("/sys/fs/cgroup/agentcg", "absolute"),
            ("a/../b", "'..'"),
            ("..", "'..'"),
            ("", "empty"),
            ("a//b", "empty"),
            ("a/.x", "starts with '.'"),
            ("a/cgroup.procs", "interface file"),
        ] {
            let a = parse(&["--session", "s", "--parent", parent, "--", "true"]);
            let e = err(validate(&a));
            assert!(e.contains("--parent") && e.contains(why), "{parent:?}: {e}");
        }
        let e = err(validate(&parse(&[
            "--session",
            "s",
            "--class",
            "fast",
            "--",
            "true",
        ])));
        assert!(e.contains("interactive, tool, background"), "{e}");
        let mut a = parse(&["--session", "s", "--", "true"]);
        a.cmd = vec![String::new()];
        assert!(err(validate(&a)).contains("no command"));
    }

    #[test]
    fn command_line() {
        assert!(Cli::try_parse_from(["t", "--session", "s"]).is_err());
        let a = parse(&["--session", "s", "--", "ls", "--step", "-l"]);
        assert_eq!(a.cmd, ["ls", "--step", "-l"]);
        assert_eq!(a.step, None);
        assert_eq!(a.parent, "agentcg");
        assert_eq!(a.cgroup_root, Path::new("/sys/fs/cgroup"));
        assert!(!a.create_parent);
    }

    #[test]
    fn nothing_is_touched_for_a_bad_name() {
        let root = FakeRoot::new("cpu cpuset memory").with_parent("agentcg");
        let e = err(prepare(&root.args(&[
            "--session",
            "s",
            "--step",
            "cgroup.x",
        ])));
        assert!(e.contains("--step"), "{e}");
        assert!(!root.0.join("agentcg/s").exists());
        assert_eq!(
            std::fs::read_to_string(root.0.join("cgroup.subtree_control")).unwrap(),
            ""
        );
    }

    #[test]
    fn prepare_creates_session_and_step() {
        let root = FakeRoot::new("cpu cpuset memory\n").with_parent("agentcg");
        let a = root.args(&["--session", "s1", "--step", "t1", "--class", "tool"]);
        let mut writes = Vec::new();
        let leaf = prepare_logged(&a, &mut writes).unwrap();
        assert_eq!(leaf, root.0.join("agentcg/s1/t1"));
        assert!(leaf.is_dir());
        let all = ["+cpu", "+cpuset", "+memory"];
        for dir in [
            root.0.clone(),
            root.0.join("agentcg"),
            root.0.join("agentcg/s1"),
        ] {
            assert_eq!(writes_to(&writes, &dir), all, "{}", dir.display());
            // a plain file keeps only the last write
            let file = dir.join("cgroup.subtree_control");
            assert_eq!(std::fs::read_to_string(file).unwrap(), "+memory");
        }
        assert!(
            writes_to(&writes, &leaf).is_empty(),
            "the leaf delegates nothing"
        );
        assert_eq!(writes.len(), 9);

        // again: everything exists; nothing breaks
        prepare(&a).unwrap();
        assert!(cleanup_step(&leaf));
        assert!(!leaf.exists());
        assert!(root.0.join("agentcg/s1").is_dir(), "the session stays");
    }

    #[test]
    fn enabled_controllers_are_not_written_again() {
        let root = FakeRoot::new("cpu cpuset memory io").with_parent("agentcg");
        std::fs::write(
            root.0.join("cgroup.subtree_control"),
            "cpuset cpu io memory\n",
        )
        .unwrap();
        std::fs::write(root.0.join("agentcg/cgroup.subtree_control"), "cpu\n").unwrap();
        let mut writes = Vec::new();
        prepare_logged(&root.args(&["--session", "s"]), &mut writes).unwrap();
        assert!(writes_to(&writes, &root.0).is_empty());
        assert_eq!(
            writes_to(&writes, &root.0.join("agentcg")),
            ["+cpuset", "+memory"]
        );
        // without --step the session is the leaf and delegates nothing
        assert!(writes_to(&writes, &root.0.join("agentcg/s")).is_empty());
        assert!(!root.0.join("agentcg/s/cgroup.subtree_control").exists());
    }

    #[test]
    fn session_leaf_without_step() {
        let root = FakeRoot::new("cpu cpuset memory").with_parent("agentcg");
        let leaf = prepare(&root.args(&["--session", "s", "--class", "background"])).unwrap();
        assert_eq!(leaf, root.0.join("agentcg/s"));
        assert!(leaf.is_dir());
    }

    #[test]
    fn nested_parent_is_created_on_request() {
        let root = FakeRoot::new("cpu cpuset memory");
        let a = root.args(&["--parent", "a/b", "--session", "s", "--step", "t"]);
        let e = err(prepare(&a));
        assert!(e.contains("cgroup a/b does not exist under"), "{e}");
        assert!(!root.0.join("a").exists());

        let a = root.args(&["--parent", "a/b/", "--create-parent", "--session", "s"]);
        let mut writes = Vec::new();
        let leaf = prepare_logged(&a, &mut writes).unwrap();
        assert_eq!(leaf, root.0.join("a/b/s"));
        for dir in [root.0.clone(), root.0.join("a"), root.0.join("a/b")] {
            assert_eq!(writes_to(&writes, &dir).len(), 3, "{}", dir.display());
        }
    }

    #[test]
    fn missing_parent_error() {
        let root = FakeRoot::new("cpu cpuset memory");
        let e = err(prepare(&root.args(&["--session", "s"])));
        assert!(
            e.contains(&format!(
                "cgroup agentcg does not exist under {}: start scx_agentcg with \
                 --cell-parent-cgroup agentcg, create it, or pass --create-parent",
                root.0.display()
            )),
            "{e}"
        );
        assert!(!root.0.join("agentcg").exists());
    }

    #[test]
    fn cgroup_v1_and_missing_root_errors() {
        let root = FakeRoot::new("").with_parent("agentcg");
        std::fs::remove_file(root.0.join("cgroup.controllers")).unwrap();
        let e = err(prepare(&root.args(&["--session", "s"])));
        assert!(e.contains("this host uses cgroup v1 (or hybrid)"), "{e}");
        assert!(e.contains("systemd.unified_cgroup_hierarchy=1"), "{e}");
        assert!(!root.0.join("agentcg/s").exists());

        let mut a = root.args(&["--session", "s"]);
        a.cgroup_root = root.0.join("nonexistent");
        let e = err(prepare(&a));
        assert!(e.contains("does not exist: mount cgroup2 there"), "{e}");
    }

    #[test]
    fn unavailable_controllers() {
        // memory and cpuset missing: warnings only
        let root = FakeRoot::new("cpu io").with_parent("agentcg");
        let mut writes = Vec::new();
        prepare_logged(&root.args(&["--session", "s"]), &mut writes).unwrap();
        assert_eq!(writes_to(&writes, &root.0), ["+cpu"]);

        // cpu missing: an error
        let root = FakeRoot::new("cpuset memory").with_parent("agentcg");
        let e = err(prepare(&root.args(&["--session", "s"])));
        assert!(e.contains("needs the cpu controller"), "{e}");
        assert!(e.contains("the cpu controller is not available"), "{e}");
    }

    #[test]
    fn a_file_in_the_way() {
        let root = FakeRoot::new("cpu cpuset memory").with_parent("agentcg");
        std::fs::write(root.0.join("agentcg/s"), "").unwrap();
        let e = err(prepare(&root.args(&["--session", "s"])));
        assert!(
            e.contains("not a cgroup directory") && e.contains("--session"),
            "{e}"
        );
    }

    #[test]
    fn class_is_recorded_or_ignored() {
        unsafe extern "C" {
            fn getxattr(
                path: *const c_char,
                name: *const c_char,
                v: *mut c_void,
                n: usize,
            ) -> isize;
        }
        let root = FakeRoot::new("");
        if set_class(&root.0, "interactive").unwrap() {
            let path = CString::new(root.0.as_os_str().as_bytes()).unwrap();
            let mut buf = [0u8; 32];
            // SAFETY: valid strings; buf's real length is passed.
            let n = unsafe {
                getxattr(
                    path.as_ptr(),
                    c"user.agentcg.class".as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            assert_eq!(&buf[..n as usize], b"interactive");
        }
    }

    #[test]
    fn cleanup_keeps_busy_steps() {
        let root = FakeRoot::new("");
        let step = root.0.join("t");
        std::fs::create_dir(&step).unwrap();
        std::fs::create_dir(step.join("child")).unwrap();
        assert!(!cleanup_step(&step), "has a child cgroup");
        std::fs::remove_dir(step.join("child")).unwrap();
        std::fs::write(step.join("cgroup.procs"), "1234\n").unwrap();
        assert!(!cleanup_step(&step), "has a process");
        assert!(step.is_dir());
        std::fs::remove_file(step.join("cgroup.procs")).unwrap();
        assert!(cleanup_step(&step));
        assert!(!cleanup_step(&step), "already gone");
    }

    #[test]
    fn proc_self_cgroup() {
        assert_eq!(unified_path("0::/agentcg/s/t\n"), Some("/agentcg/s/t"));
        let hybrid = "12:cpu,cpuacct:/user.slice\n1:name=systemd:/x\n0::/user.slice/a.scope\n";
        assert_eq!(unified_path(hybrid), Some("/user.slice/a.scope"));
        assert_eq!(unified_path("0::/gone (deleted)\n"), None);
        assert_eq!(unified_path("3:cpu:/x\n"), None);
    }

    fn sh(script: &str) -> i32 {
        run_cmd(&["sh".into(), "-c".into(), script.into()], false)
    }

    #[test]
    fn exit_codes_like_a_shell() {
        assert_eq!(sh("exit 0"), 0);
        assert_eq!(sh("exit 3"), 3);
        assert_eq!(sh("kill -TERM $$"), 128 + 15);
        assert_eq!(sh("kill -KILL $$"), 128 + 9);
        let st = Command::new("sh").args(["-c", "exit 42"]).status().unwrap();
        assert_eq!(exit_code(st), 42);
    }

    #[test]
    fn commands_that_cannot_run() {
        let run = |p: &str| run_cmd(&[p.to_string()], false);
        assert_eq!(run("agentcg-no-such-command"), 127);
        assert_eq!(run("/no/such/dir/cmd"), 127);
        let root = FakeRoot::new("");
        let file = root.0.join("not-executable");
        std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(run(file.to_str().unwrap()), 126);
        assert_eq!(run(root.0.to_str().unwrap()), 126);
    }

    #[test]
    fn sigterm_is_forwarded() {
        let worker = std::thread::spawn(|| run_cmd(&["sleep".into(), "30".into()], true));
        let start = std::time::Instant::now();
        while CHILD.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed().as_secs() < 10, "sleep did not start");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // SAFETY: kill() has no memory-safety preconditions; the handler is
        // installed (CHILD is set after it).
        unsafe { kill(std::process::id() as i32, SIGTERM) };
        assert_eq!(worker.join().unwrap(), 128 + 15);
        assert!(start.elapsed().as_secs() < 10);
    }
}
