// SPDX-License-Identifier: GPL-2.0-only
//! The OCI runtime hook: `scx_agentcg hook EVENT`, the session registry's
//! client for containers (the protocol is in src/registry_proto.rs).
//!
//! ```text
//! scx_agentcg hook create-runtime|poststart|poststop [--socket PATH] [--timeout-ms N]
//!                  [--fail-closed] [--default-profile NAME]
//! ```
//!
//! A container runtime (runc, or podman and CRI-O through oci-hooks.d) runs
//! the hook at a stage of a container's life, in the runtime's own
//! namespaces, with the container's OCI state JSON on stdin: its `id`, the
//! `pid` of its first process and its `annotations`.
//!
//! - `createRuntime` and `poststart`: runc runs createRuntime once the
//!   container's process is in its cgroup, before the user program starts.
//!   runc releases run poststart hooks later in `runc create`, still before
//!   the program starts (runc's development branch has moved them to after
//!   the start). Both stages get the pid. If the
//!   container has the `agentcg.io/profile` annotation (or the hook has
//!   `--default-profile`), the hook reads the cgroup2 line (`0::/path`) of
//!   `/proc/<pid>/cgroup` and registers that path with the profile. The
//!   session name is the `agentcg.io/session` annotation, else the id;
//!   every `agentcg.io/` annotation goes along as a label. A container
//!   without a profile is skipped: nothing is sent.
//! - `poststop`: runc runs it after the container's cgroup is removed and
//!   passes no pid; the hook unregisters the id (an id the registry does not
//!   know is not an error).
//!
//! The path is the one the hook sees: /proc/<pid>/cgroup prints paths
//! relative to the reader's cgroup namespace, which for a hook is the
//! runtime's, normally the host's (the scheduler's).
//!
//! Failing open: a scheduling hint must never stop a container. By default
//! every error (bad state, no cgroup, no scheduler, a refusal) is printed
//! as one line `scx_agentcg hook: ...` on stderr and the hook exits 0;
//! `--fail-closed` exits 1 instead, which makes runc fail the container
//! (at poststart runc kills it). The registry exchange (connect, send one
//! line, read one line) must fit in `--timeout-ms` (2000 by default), well
//! inside the runtime's own timeout for the hook. The hook reads no
//! environment variables: what a runtime passes there varies (runc passes
//! its own environment unless the hook entry has `env`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::registry_client::send;
use crate::registry_proto::{Request, DEFAULT_SOCKET};

/// The annotation naming the container's profile (of the `--policy` file).
pub const PROFILE_ANNOTATION: &str = "agentcg.io/profile";

/// The annotation naming the session in stats and metrics (default: the
/// container id).
pub const SESSION_ANNOTATION: &str = "agentcg.io/session";

/// Annotations whose key starts with this are forwarded as labels.
pub const LABEL_PREFIX: &str = "agentcg.io/";

/// The largest OCI state read from stdin.
pub const MAX_STATE_BYTES: usize = 1 << 20;

/// The OCI hook stage a call is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookEvent {
    /// The container's process is in its cgroup; its program has not started.
    #[value(alias = "createRuntime")]
    CreateRuntime,
    /// The container's process is in its cgroup (runc releases: its program
    /// has not started yet either; later runtimes: it has).
    Poststart,
    /// The container and its cgroup are gone (no pid).
    Poststop,
}

impl HookEvent {
    /// The stage's name as the OCI runtime spec spells it.
    pub fn oci_name(self) -> &'static str {
        match self {
            HookEvent::CreateRuntime => "createRuntime",
            HookEvent::Poststart => "poststart",
            HookEvent::Poststop => "poststop",
        }
    }

    /// Does this stage register the container (rather than unregister it)?
    fn registers(self) -> bool {
        !matches!(self, HookEvent::Poststop)
    }
}

/// Arguments of `scx_agentcg hook`: an OCI runtime hook that registers a
/// container's cgroup with the scheduler's session registry
/// (create-runtime, poststart) or unregisters it (poststop).
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// The OCI hook stage: create-runtime (also spelt createRuntime) and
    /// poststart register the container's cgroup, poststop unregisters it.
    #[arg(value_enum)]
    pub event: HookEvent,

    /// The registry socket (the scheduler's --registry-socket).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Time for connecting to the registry, sending and getting the reply,
    /// in milliseconds; keep it well below the runtime's hook timeout.
    #[arg(long, value_name = "N", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,

    /// Exit 1 on any error, which fails the container, instead of printing
    /// the error and exiting 0.
    #[arg(long)]
    pub fail_closed: bool,

    /// Register a container without the agentcg.io/profile annotation with
    /// this profile (without it such containers are skipped).
    #[arg(long, value_name = "NAME")]
    pub default_profile: Option<String>,

    /// Where procfs is mounted (for tests).
    #[arg(
        long = "proc",
        value_name = "PATH",
        hide = true,
        default_value = "/proc"
    )]
    pub proc_root: PathBuf,
}

/// The container state a runtime passes on stdin (the OCI runtime spec's
/// "State"). Fields a runtime adds are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[allow(dead_code)] // oci_version and bundle are part of the state; nothing here needs them
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    /// creating, created, running or stopped
    #[serde(default)]
    pub status: String,
    /// The container's first process as the runtime sees it; absent (or
    /// 0) at poststop.
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub bundle: String,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl State {
    /// The value of annotation @key, if the container has it.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// The annotations under `agentcg.io/`, as the registry's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Parse the OCI state JSON a runtime writes on a hook's stdin.
pub fn parse_state(text: &str) -> Result<State> {
    if text.trim().is_empty() {
        bail!("no OCI state on stdin (the runtime passes the container's state JSON there)");
    }
    let state: State = serde_json::from_str(text).context("the OCI state on stdin is not valid")?;
    if state.id.is_empty() {
        bail!("the OCI state has an empty container id");
    }
    Ok(state)
}

/// The cgroup2 path in the text of a `/proc/<pid>/cgroup` file: its
/// `0::/path` line.
pub fn cgroup_from_proc_text(text: &str) -> Result<String> {
    let path = match text.lines().find_map(|l| l.strip_prefix("0::")) {
        Some(p) => p,
        None => bail!(
            "no cgroup v2 line (\"0::/...\") in the process's cgroup file: cgroup v1 and hybrid \
             hierarchies are not supported (scx_agentcg needs cgroup v2)"
        ),
    };
    if !path.starts_with('/') {
        bail!("unexpected cgroup v2 path {path:?}");
    }
    if path.ends_with(" (deleted)") {
        bail!("the process's cgroup {path:?} is already removed");
    }
    if path == "/" {
        bail!("the process is in the root cgroup, not in a cgroup of its own");
    }
    Ok(path.to_string())
}

/// The profile a container registers with: its annotation, else
/// @default_profile; None if it has neither (it is skipped).
fn profile_for<'a>(state: &'a State, default_profile: Option<&'a str>) -> Result<Option<&'a str>> {
    match state.annotation(PROFILE_ANNOTATION) {
        Some("") => bail!(
            "container {}: the {} annotation is empty",
            state.id,
            PROFILE_ANNOTATION
        ),
        Some(p) => Ok(Some(p)),
        None => Ok(default_profile.filter(|p| !p.is_empty())),
    }
}

/// The request a hook call sends: for create-runtime and poststart a
/// Register of @cgroup (which the caller read from the container's pid) if
/// the container has a profile, None if it is skipped; for poststop an
/// Unregister of the id (no pid or cgroup needed).
pub fn request_for(
    event: HookEvent,
    state: &State,
    cgroup: Option<&str>,
    default_profile: Option<&str>,
) -> Result<Option<Request>> {
    if state.id.is_empty() {
        bail!("the OCI state has an empty container id");
    }
    if !event.registers() {
        return Ok(Some(Request::Unregister {
            id: state.id.clone(),
        }));
    }
    let Some(profile) = profile_for(state, default_profile)? else {
        return Ok(None);
    };
    let Some(cgroup) = cgroup else {
        bail!(
            "container {}: no cgroup to register at {}",
            state.id,
            event.oci_name()
        );
    };
    let session = match state.annotation(SESSION_ANNOTATION) {
        Some("") => bail!(
            "container {}: the {} annotation is empty",
            state.id,
            SESSION_ANNOTATION
        ),
        Some(s) => s.to_string(),
        None => state.id.clone(),
    };
    Ok(Some(Request::Register {
        id: state.id.clone(),
        cgroup: cgroup.to_string(),
        profile: profile.to_string(),
        session: Some(session),
        labels: state.labels(),
    }))
}

/// All of stdin as text, at most MAX_STATE_BYTES.
fn read_state(stdin: impl Read) -> Result<String> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_STATE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading the OCI state from stdin")?;
    if buf.len() > MAX_STATE_BYTES {
        bail!(
            "the OCI state on stdin is larger than {} KiB",
            MAX_STATE_BYTES / 1024
        );
    }
    String::from_utf8(buf).context("the OCI state on stdin is not UTF-8")
}

/// The cgroup2 path of the container's first process, from
/// `<proc_root>/<pid>/cgroup`.
fn container_cgroup(proc_root: &Path, state: &State) -> Result<String> {
    if state.status == "stopped" {
        bail!("container {} is already stopped", state.id);
    }
    let pid = match state.pid {
        Some(p) if p > 0 && p <= i64::from(i32::MAX) => p,
        Some(p) => bail!(
            "container {}: the OCI state has no usable pid ({p})",
            state.id
        ),
        None => bail!(
            "container {}: the OCI state has no pid (status {:?})",
            state.id,
            state.status
        ),
    };
    let file = proc_root.join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("container {}: reading {}", state.id, file.display()))?;
    cgroup_from_proc_text(&text).with_context(|| format!("container {} (pid {pid})", state.id))
}

/// One hook call; any error is the caller's to report.
fn hook(args: &HookArgs, stdin: impl Read) -> Result<()> {
    let started = Instant::now();
    let timeout = Duration::from_millis(args.timeout_ms);
    let text = read_state(stdin)?;
    let state = parse_state(&text)?;
    let default_profile = args.default_profile.as_deref();

    // a skipped container needs no pid and no cgroup
    let cgroup = if args.event.registers() && profile_for(&state, default_profile)?.is_some() {
        Some(container_cgroup(&args.proc_root, &state)?)
    } else {
        None
    };
    let Some(req) = request_for(args.event, &state, cgroup.as_deref(), default_profile)? else {
        return Ok(());
    };

    let left = timeout.saturating_sub(started.elapsed());
    if left.is_zero() {
        bail!(
            "no time left for the registry (--timeout-ms {})",
            args.timeout_ms
        );
    }
    let reply = send(&args.socket, &req, left)?;
    if !reply.ok {
        let what = if args.event.registers() {
            "register"
        } else {
            "unregister"
        };
        bail!(
            "the registry refused to {what} container {}: {}",
            state.id,
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(())
}

/// `scx_agentcg hook`: read the OCI state from @stdin, register or
/// unregister the container, and return the exit status: 0 on success, on
/// a skipped container and (unless --fail-closed) on any error, which is
/// printed as one line on stderr; 1 on an error with --fail-closed.
pub fn run(args: &HookArgs, stdin: impl Read) -> i32 {
    match hook(args, stdin) {
        Ok(()) => 0,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            if args.fail_closed {
                eprintln!("scx_agentcg hook: {}: {msg}", args.event.oci_name());
                1
            } else {
                eprintln!(
                    "scx_agentcg hook: {}: {msg} (ignored: the container goes on; --fail-closed fails it)",
                    args.event.oci_name()
                );
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry_client::tests::{scratch, serve_one};
    use clap::{CommandFactory, Parser};
    use std::os::unix::net::UnixListener;

    /// `scx_agentcg hook`'s arguments as a command of their own.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        hook: HookArgs,
    }

    /// A state as runc writes it for a hook, plus fields `runc state` adds.
    const RUNC_STATE: &str = r#"{"ociVersion":"1.0.2-dev","id":"c1","status":"running","pid":4242,
        "bundle":"/tmp/bundle","annotations":{"agentcg.io/profile":"bg","agentcg.io/session":"pod-a",
        "agentcg.io/team":"infra","io.kubernetes.pod.name":"web"},
        "rootfs":"/tmp/bundle/rootfs","created":"2024-01-01T00:00:00Z","owner":""}"#;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn state(annotations: &[(&str, &str)]) -> State {
        State {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: "running".into(),
            pid: Some(4242),
            bundle: "/b".into(),
            annotations: if annotations.is_empty() {
                None
            } else {
                Some(map(annotations))
            },
        }
    }

    fn args(event: HookEvent, socket: PathBuf) -> HookArgs {
        HookArgs {
            event,
            socket,
            timeout_ms: 2000,
            fail_closed: false,
            default_profile: None,
            proc_root: PathBuf::from("/nonexistent-proc"),
        }
    }

    #[test]
    fn command_line_events_and_defaults() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["hook", "poststart"]).unwrap().hook;
        assert_eq!(c.event, HookEvent::Poststart);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.timeout_ms, 2000);
        assert!(!c.fail_closed);
        assert_eq!(c.default_profile, None);
        assert_eq!(c.proc_root, PathBuf::from("/proc"));
        for (word, want) in [
            ("create-runtime", HookEvent::CreateRuntime),
            ("createRuntime", HookEvent::CreateRuntime),
            ("poststop", HookEvent::Poststop),
        ] {
            assert_eq!(
                Cli::try_parse_from(["hook", word]).unwrap().hook.event,
                want,
                "{word}"
            );
        }
        let c = Cli::try_parse_from([
            "hook",
            "poststop",
            "--socket",
            "/tmp/r.sock",
            "--timeout-ms",
            "500",
            "--fail-closed",
            "--default-profile",
            "bg",
            "--proc",
            "/x",
        ])
        .unwrap()
        .hook;
        assert_eq!(c.socket, PathBuf::from("/tmp/r.sock"));
        assert_eq!(c.timeout_ms, 500);
        assert!(c.fail_closed);
        assert_eq!(c.default_profile.as_deref(), Some("bg"));
        assert_eq!(c.proc_root, PathBuf::from("/x"));
        assert!(Cli::try_parse_from(["hook", "prestart"]).is_err());
        assert!(Cli::try_parse_from(["hook"]).is_err());
        assert!(Cli::try_parse_from(["hook", "poststart", "--timeout-ms", "0"]).is_err());
    }

    #[test]
    fn runc_state_with_unknown_fields_parses() {
        let s = parse_state(RUNC_STATE).unwrap();
        assert_eq!(s.oci_version, "1.0.2-dev");
        assert_eq!(s.id, "c1");
        assert_eq!(s.status, "running");
        assert_eq!(s.pid, Some(4242));
        assert_eq!(s.bundle, "/tmp/bundle");
        assert_eq!(s.annotation(PROFILE_ANNOTATION), Some("bg"));
        assert_eq!(s.annotation(SESSION_ANNOTATION), Some("pod-a"));
        assert_eq!(s.annotation("agentcg.io/none"), None);
    }

    #[test]
    fn poststop_state_without_pid_or_annotations_parses() {
        let s = parse_state(r#"{"ociVersion":"1.0.2","id":"c1","status":"stopped","bundle":"/b"}"#)
            .unwrap();
        assert_eq!(s.pid, None);
        assert_eq!(s.annotations, None);
        assert_eq!(s.annotation(PROFILE_ANNOTATION), None);
        assert!(s.labels().is_empty());
        let s = parse_state(
            r#"{"ociVersion":"1.0.2","id":"c1","status":"stopped","pid":0,"bundle":"/b","annotations":null}"#,
        )
        .unwrap();
        assert_eq!(s.pid, Some(0));
        assert_eq!(s.annotations, None);
        // the bare minimum, with the newline an echo leaves
        let s = parse_state("\n {\"ociVersion\":\"1.0.2\",\"id\":\"c9\"}\n").unwrap();
        assert_eq!(s.id, "c9");
        assert_eq!(s.status, "");
    }

    #[test]
    fn bad_states_are_refused() {
        for (text, want) in [
            ("", "no OCI state on stdin"),
            (" \n", "no OCI state on stdin"),
            ("not json", "is not valid"),
            (r#"{"ociVersion":"1.0.2"}"#, "missing field `id`"),
            (r#"{"id":"c1"}"#, "missing field `ociVersion`"),
            (r#"{"ociVersion":"1.0.2","id":""}"#, "empty container id"),
            (
                r#"{"ociVersion":"1.0.2","id":"c1","pid":"12"}"#,
                "is not valid",
            ),
            (
                r#"{"ociVersion":"1.0.2","id":"c1","annotations":{"a":1}}"#,
                "is not valid",
            ),
        ] {
            let e = format!("{:#}", parse_state(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_cgroup_v2_line_is_picked() {
        assert_eq!(
            cgroup_from_proc_text("0::/agentcg-pods/c1\n").unwrap(),
            "/agentcg-pods/c1"
        );
        assert_eq!(cgroup_from_proc_text("0::/a b/c").unwrap(), "/a b/c");
        let hybrid = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
        assert_eq!(cgroup_from_proc_text(hybrid).unwrap(), "/docker/abc");
        let v1 = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
        let e = cgroup_from_proc_text(v1).unwrap_err().to_string();
        assert!(
            e.contains("cgroup v1") && e.contains("not supported"),
            "{e}"
        );
        for bad in ["", "0::/\n", "0::/gone (deleted)\n", "0::relative\n"] {
            assert!(cgroup_from_proc_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn register_stages_make_register_requests() {
        let s = state(&[(PROFILE_ANNOTATION, "bg"), (SESSION_ANNOTATION, "pod-a")]);
        for ev in [HookEvent::CreateRuntime, HookEvent::Poststart] {
            // the annotation wins over a default profile
            for default in [None, Some("tool")] {
                assert_eq!(
                    request_for(ev, &s, Some("/agentcg-pods/c1"), default).unwrap(),
                    Some(Request::Register {
                        id: "c1".into(),
                        cgroup: "/agentcg-pods/c1".into(),
                        profile: "bg".into(),
                        session: Some("pod-a".into()),
                        labels: map(&[(PROFILE_ANNOTATION, "bg"), (SESSION_ANNOTATION, "pod-a")]),
                    }),
                    "{ev:?} {default:?}"
                );
            }
            // the caller must have read the cgroup
            assert!(request_for(ev, &s, None, None).is_err());
        }
        let mut s = s;
        s.id.clear();
        assert!(request_for(HookEvent::Poststart, &s, Some("/x"), None).is_err());
    }

    #[test]
    fn containers_without_a_profile_are_skipped_unless_there_is_a_default() {
        let s = state(&[("io.kubernetes.pod.name", "web")]);
        assert_eq!(
            request_for(HookEvent::Poststart, &s, Some("/x/c1"), None).unwrap(),
            None
        );
        assert_eq!(
            request_for(HookEvent::CreateRuntime, &state(&[]), Some("/x/c1"), None).unwrap(),
            None
        );
        // skipped before the cgroup is needed
        assert_eq!(
            request_for(HookEvent::Poststart, &s, None, None).unwrap(),
            None
        );
        assert_eq!(
            request_for(HookEvent::Poststart, &s, Some("/x/c1"), Some("")).unwrap(),
            None
        );
        assert_eq!(
            request_for(HookEvent::Poststart, &s, Some("/x/c1"), Some("tool")).unwrap(),
            Some(Request::Register {
                id: "c1".into(),
                cgroup: "/x/c1".into(),
                profile: "tool".into(),
                session: Some("c1".into()),
                labels: BTreeMap::new(),
            })
        );
        // an empty annotation is a mistake, not a skip
        let s = state(&[(PROFILE_ANNOTATION, "")]);
        assert!(request_for(HookEvent::Poststart, &s, Some("/x"), Some("tool")).is_err());
        let s = state(&[(PROFILE_ANNOTATION, "bg"), (SESSION_ANNOTATION, "")]);
        assert!(request_for(HookEvent::Poststart, &s, Some("/x"), None).is_err());
    }

    #[test]
    fn poststop_unregisters_without_pid_or_cgroup() {
        let want = Some(Request::Unregister { id: "c1".into() });
        let mut s = state(&[]);
        s.pid = None;
        s.status = "stopped".into();
        assert_eq!(
            request_for(HookEvent::Poststop, &s, None, None).unwrap(),
            want
        );
        let mut s = state(&[(PROFILE_ANNOTATION, "bg")]);
        s.pid = Some(0);
        assert_eq!(
            request_for(HookEvent::Poststop, &s, None, Some("tool")).unwrap(),
            want
        );
        s.id.clear();
        assert!(request_for(HookEvent::Poststop, &s, None, None).is_err());
    }

    #[test]
    fn agentcg_annotations_are_forwarded_as_labels() {
        let s = parse_state(RUNC_STATE).unwrap();
        let Some(Request::Register { labels, .. }) =
            request_for(HookEvent::Poststart, &s, Some("/p/c1"), None).unwrap()
        else {
            panic!("not a register request");
        };
        assert_eq!(
            labels,
            map(&[
                ("agentcg.io/profile", "bg"),
                ("agentcg.io/session", "pod-a"),
                ("agentcg.io/team", "infra")
            ])
        );
        // keys that only look alike stay behind
        let s = state(&[
            (PROFILE_ANNOTATION, "bg"),
            ("agentcg.io.x/y", "1"),
            ("xagentcg.io/y", "2"),
            ("agentcg.io", "3"),
        ]);
        assert_eq!(s.labels(), map(&[(PROFILE_ANNOTATION, "bg")]));
    }

    #[test]
    fn run_fails_open_by_default_and_closed_when_asked() {
        let dir = scratch("run-missing");
        let mut a = args(HookEvent::Poststop, dir.join("none.sock"));
        let stopped = r#"{"ociVersion":"1.0.2","id":"c1","status":"stopped","bundle":"/b"}"#;
        assert_eq!(run(&a, stopped.as_bytes()), 0);
        assert_eq!(run(&a, &b"not json"[..]), 0);
        a.fail_closed = true;
        assert_eq!(run(&a, stopped.as_bytes()), 1);
        assert_eq!(run(&a, &b"not json"[..]), 1);
        let big = vec![b' '; MAX_STATE_BYTES + 1];
        assert_eq!(run(&a, &big[..]), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_skips_containers_without_a_profile_and_needs_a_pid_otherwise() {
        let dir = scratch("run-skip");
        let mut a = args(HookEvent::Poststart, dir.join("none.sock"));
        a.fail_closed = true;
        // nothing to send: no socket, no /proc needed
        let plain = r#"{"ociVersion":"1.0.2","id":"c2","status":"running","pid":77,"bundle":"/b"}"#;
        assert_eq!(run(&a, plain.as_bytes()), 0);
        let no_pid = r#"{"ociVersion":"1.0.2","id":"c1","status":"running","bundle":"/b",
            "annotations":{"agentcg.io/profile":"bg"}}"#;
        assert_eq!(run(&a, no_pid.as_bytes()), 1);
        // with a default profile c2 must be registered, and its pid is not in --proc
        a.default_profile = Some("bg".into());
        assert_eq!(run(&a, plain.as_bytes()), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_registers_the_cgroup_of_the_containers_pid() {
        let dir = scratch("run-register");
        let proc_root = dir.join("proc");
        std::fs::create_dir_all(proc_root.join("4242")).unwrap();
        std::fs::write(proc_root.join("4242/cgroup"), "0::/agentcg-pods/c1\n").unwrap();
        let sock = dir.join("reg.sock");
        let server = serve_one(UnixListener::bind(&sock).unwrap(), "{\"ok\":true}\n");
        let mut a = args(HookEvent::Poststart, sock);
        a.proc_root = proc_root;
        a.fail_closed = true;
        assert_eq!(run(&a, RUNC_STATE.as_bytes()), 0);
        let got: Request = serde_json::from_str(&server.join().unwrap()).unwrap();
        assert_eq!(
            got,
            Request::Register {
                id: "c1".into(),
                cgroup: "/agentcg-pods/c1".into(),
                profile: "bg".into(),
                session: Some("pod-a".into()),
                labels: map(&[
                    ("agentcg.io/profile", "bg"),
                    ("agentcg.io/session", "pod-a"),
                    ("agentcg.io/team", "infra"),
                ]),
            }
        );
        // a refusal is an error like any other
        let sock = dir.join("reg2.sock");
        let server = serve_one(
            UnixListener::bind(&sock).unwrap(),
            "{\"ok\":false,\"error\":\"no profile bg\"}\n",
        );
        a.socket = sock;
        assert_eq!(run(&a, RUNC_STATE.as_bytes()), 1);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_shipped_oci_hooks_files_run_this_hook_at_their_stage() {
        for (text, stage) in [
            (include_str!("../deploy/oci-hooks.d/scx_agentcg.json"), "poststart"),
            (include_str!("../deploy/oci-hooks.d/scx_agentcg-poststop.json"), "poststop"),
        ] {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["version"], "1.0.0");
            assert_eq!(v["stages"], serde_json::json!([stage]));
            let args: Vec<&str> = v["hook"]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(&args[1..3], ["hook", stage], "{args:?}");
            assert!(v["hook"]["path"].as_str().unwrap().ends_with("/scx_agentcg"));
            assert!(v["when"]["annotations"].get("^agentcg\\.io/profile$").is_some(), "{text}");
            // the hook's own parser accepts the stage name
            assert!(<HookEvent as clap::ValueEnum>::from_str(stage, false).is_ok());
        }
    }
}

