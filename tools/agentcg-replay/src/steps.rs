// SPDX-License-Identifier: GPL-2.0-only
//! Step cgroups: the replay process moves itself into
//! `<parent>/step_<n>_<tool>` while tool call n runs and into
//! `<parent>/step_idle` between tool calls (cgroup v2's "no internal
//! processes" rule keeps it out of `<parent>` itself once the parent has
//! children with controllers enabled).
//!
//! Writing the PID to `cgroup.procs` moves every thread of the process.
//! Memory already charged stays charged where it was first touched (cgroup v2
//! does not move charges), but all ancestors see it hierarchically.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Resolve a cgroup path: absolute as given, else relative to /sys/fs/cgroup.
pub fn cgroup_dir(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(CGROUP_ROOT).join(p)
    }
}

/// Lowercase the tool name and keep `[a-z0-9_-]` (anything else becomes
/// `_`), at most 40 characters; `tool` if nothing is left.
pub fn sanitize_tool(tool: &str) -> String {
    let mut s: String = tool
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() {
        s.push_str("tool");
    }
    s
}

pub fn step_name(seq: usize, tool: &str) -> String {
    format!("step_{seq}_{}", sanitize_tool(tool))
}

/// The cgroup v2 directory this process is in now, if it can be found.
fn current_cgroup() -> Option<PathBuf> {
    let s = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/')))
}

fn move_self(dir: &Path) -> std::io::Result<()> {
    fs::write(
        dir.join("cgroup.procs"),
        format!("{}\n", std::process::id()),
    )
}

fn rmdir_quiet(dir: &Path) {
    // EBUSY (still populated) and ENOENT are expected; nothing to do then.
    let _ = fs::remove_dir(dir);
}

pub struct Steps {
    parent: PathBuf,
    idle: PathBuf,
    original: Option<PathBuf>,
    /// The step cgroup the process is in, with its tool-call number.
    current: Option<(usize, PathBuf)>,
    pub entered: u64,
    pub enabled: bool,
    /// Whether the process ever left its original cgroup.
    moved: bool,
}

impl Steps {
    /// Create `<parent>/step_idle` and move there. On failure warn and return
    /// a disabled instance (the replay goes on without steps).
    pub fn new(parent: &Path) -> Steps {
        let parent = cgroup_dir(parent);
        let idle = parent.join("step_idle");
        // Going back at the end only makes sense within the cgroup2 mount.
        let original = if parent.starts_with(CGROUP_ROOT) {
            current_cgroup()
        } else {
            None
        };
        let mut s = Steps {
            parent,
            idle,
            original,
            current: None,
            entered: 0,
            enabled: false,
            moved: false,
        };
        if !s.parent.join("cgroup.procs").exists() {
            eprintln!(
                "agentcg-replay: warning: {} is not a cgroup v2 directory; replaying without steps",
                s.parent.display()
            );
            return s;
        }
        if let Err(e) = mkdir(&s.idle).and_then(|_| move_self(&s.idle)) {
            eprintln!(
                "agentcg-replay: warning: cannot use {}: {e}; replaying without steps",
                s.idle.display()
            );
            return s;
        }
        s.enabled = true;
        s.moved = true;
        s
    }

    fn fail(&mut self, what: &str, dir: &Path, e: std::io::Error) {
        eprintln!(
            "agentcg-replay: warning: cannot {what} {}: {e}; continuing without steps",
            dir.display()
        );
        self.enabled = false;
        let _ = move_self(&self.idle);
        if let Some((_, d)) = self.current.take() {
            rmdir_quiet(&d);
        }
    }

    /// Enter the step cgroup of tool call `seq`.
    pub fn enter(&mut self, seq: usize, tool: &str) {
        if !self.enabled {
            return;
        }
        let dir = self.parent.join(step_name(seq, tool));
        if let Err(e) = mkdir(&dir) {
            return self.fail("create", &dir, e);
        }
        if let Err(e) = move_self(&dir) {
            rmdir_quiet(&dir);
            return self.fail("move into", &dir, e);
        }
        self.entered += 1;
        if let Some((_, old)) = self.current.replace((seq, dir)) {
            rmdir_quiet(&old);
        }
    }

    /// Leave the step of tool call `seq` for step_idle, if the process is
    /// still in it (a later call may have started meanwhile).
    pub fn leave(&mut self, seq: usize) {
        if !self.enabled || self.current.as_ref().map(|c| c.0) != Some(seq) {
            return;
        }
        let idle = self.idle.clone();
        if let Err(e) = move_self(&idle) {
            return self.fail("move into", &idle, e);
        }
        if let Some((_, old)) = self.current.take() {
            rmdir_quiet(&old);
        }
    }

    /// Go back to the cgroup the process started in (if that is allowed) and
    /// remove the step cgroups; whatever cannot be removed is left to the
    /// harness.
    pub fn finish(&mut self) {
        if !self.moved {
            return;
        }
        if let Some(orig) = &self.original {
            if orig != &self.idle && move_self(orig).is_ok() {
                if let Some((_, d)) = self.current.take() {
                    rmdir_quiet(&d);
                }
                rmdir_quiet(&self.idle);
                return;
            }
        }
        if self.enabled {
            let _ = move_self(&self.idle);
        }
        if let Some((_, d)) = self.current.take() {
            rmdir_quiet(&d);
        }
    }
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(step_name(3, "Bash"), "step_3_bash");
        assert_eq!(
            step_name(12, "mcp__web/Fetch x"),
            "step_12_mcp__web_fetch_x"
        );
        assert_eq!(step_name(1, ""), "step_1_tool");
        assert_eq!(sanitize_tool(&"A".repeat(100)).len(), 40);
        assert_eq!(
            cgroup_dir(Path::new("agentcg/s1")),
            Path::new("/sys/fs/cgroup/agentcg/s1")
        );
        assert_eq!(cgroup_dir(Path::new("/x/y")), Path::new("/x/y"));
    }

    /// A directory tree that looks like cgroupfs to the code (regular files
    /// named cgroup.procs), to follow the moves without touching real cgroups.
    pub fn fake_parent(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcg-replay-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup.procs"), "").unwrap();
        d
    }

    #[test]
    fn moves_between_steps() {
        let d = fake_parent("steps");
        let pid = format!("{}\n", std::process::id());
        let mut s = Steps::new(&d);
        assert!(s.enabled);
        assert!(s.original.is_none());
        assert_eq!(
            fs::read_to_string(d.join("step_idle/cgroup.procs")).unwrap(),
            pid
        );
        s.enter(1, "Bash");
        assert_eq!(
            fs::read_to_string(d.join("step_1_bash/cgroup.procs")).unwrap(),
            pid
        );
        fs::write(d.join("step_idle/cgroup.procs"), "").unwrap();
        s.enter(2, "Read");
        assert!(d.join("step_2_read/cgroup.procs").exists());
        s.leave(1); // already in step 2: no move
        assert_eq!(
            fs::read_to_string(d.join("step_idle/cgroup.procs")).unwrap(),
            ""
        );
        s.leave(2);
        assert_eq!(
            fs::read_to_string(d.join("step_idle/cgroup.procs")).unwrap(),
            pid
        );
        assert_eq!(s.entered, 2);
        s.finish();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn not_a_cgroup_disables_steps() {
        let mut s = Steps::new(&std::env::temp_dir());
        assert!(!s.enabled);
        s.enter(1, "Bash");
        s.leave(1);
        assert_eq!(s.entered, 0);
    }
}
