// SPDX-License-Identifier: GPL-2.0-only
//! Memory escalation for agent sessions on mainline kernels
//! (`--mem-escalation`): watching each session's memory pressure and
//! stepping it through throttled, frozen and killed.
//!
//! Sessions are the direct child cgroups of the managed parent (for
//! example `/sys/fs/cgroup/agentcg/sess_x`). Every tick (100 ms) each
//! session's `memory.pressure` (`full avg10`), `memory.events` (deltas of
//! `high`, `max`, `oom`, `oom_kill`), `memory.current` and `memory.high` are
//! read and fed to [`step`], a pure function, which moves the session
//! through these states:
//!
//! - **running → throttled** when `full avg10 > throttle_full_pct`.
//!   Throttled writes nothing: the BPF thrash penalty already slows the
//!   session's CPU use; the state starts the watch for the next steps.
//! - **throttled → running** once `full avg10 < thaw_below_pct` has held
//!   for `thaw_after_ms`.
//! - **throttled → soft-paused** once `full avg10 > freeze_full_pct` has
//!   held for `freeze_after_ms`: `1` is written to `cgroup.freeze`.
//! - **soft-paused, after `kill_after_ms` frozen → killed** (`1` written
//!   to `cgroup.kill`) if the session is still beyond its own limits: its
//!   `memory.current` is above a finite `memory.high`, or it hit
//!   `memory.max` (a `max` or `oom` event) while throttled. Pressure cannot
//!   decide this: a frozen cgroup's tasks do not stall, so its PSI decays
//!   whatever its memory looks like. A frozen session within its limits is
//!   not killed (a machine-wide shortage is the kernel OOM killer's
//!   business): it is thawed (`0` to `cgroup.freeze`) back to throttled,
//!   where it returns to running once pressure clears, or is frozen again;
//!   at the end of that second freeze it is killed (memory.high keeps a
//!   thrashing session just under its limit, so "beyond its limits" alone
//!   would let it cycle between frozen and thawed for ever).
//! - **killed → running** once the session has no tasks left
//!   (`populated 0` in `cgroup.events`): it is thawed so that later steps
//!   of the session do not start frozen. If it still has tasks
//!   `kill_after_ms` after the kill, the kill is written again.
//!
//! The escalator never writes to a path that is not a file directly inside
//! a directory directly below the managed parent, checked on the
//! canonical paths before every write. On exit it thaws the sessions it
//! froze. It can also set `memory.high` / `memory.max` of a session from
//! the policy profile its path or name selects (see src/policy.rs).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use log::{info, warn};

use crate::policy::{MemLimit, Policy};

/// How often [`Escalator::spawn`] ticks.
pub const TICK_MS: u64 = 100;
/// Longest dwell time the policy file accepts (one day).
pub const MAX_DWELL_MS: u64 = 86_400_000;

/// Thresholds (percent of `full avg10` in `memory.pressure`) and dwell
/// times of the escalation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EscalationConfig {
    /// above this a running session is throttled
    pub throttle_full_pct: f64,
    /// above this, for freeze_after_ms, a throttled session is frozen
    pub freeze_full_pct: f64,
    pub freeze_after_ms: u64,
    /// how long a session stays frozen before it is killed or thawed
    pub kill_after_ms: u64,
    /// below this, for thaw_after_ms, a throttled session runs again
    pub thaw_below_pct: f64,
    pub thaw_after_ms: u64,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            throttle_full_pct: 10.0,
            freeze_full_pct: 40.0,
            freeze_after_ms: 2000,
            kill_after_ms: 10_000,
            thaw_below_pct: 5.0,
            thaw_after_ms: 1000,
        }
    }
}

impl EscalationConfig {
    /// Every problem: (keys involved, the first the one to change;
    /// message). Keys are the names in the policy file's `[escalation]`.
    pub fn problems(&self) -> Vec<(&'static [&'static str], String)> {
        let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
        let pcts: [(&'static [&'static str], f64); 3] = [
            (&["throttle_full_pct"], self.throttle_full_pct),
            (&["freeze_full_pct"], self.freeze_full_pct),
            (&["thaw_below_pct"], self.thaw_below_pct),
        ];
        let mut pcts_ok = true;
        for (k, v) in pcts {
            if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                pcts_ok = false;
                out.push((
                    k,
                    format!(
                        "{} = {v} is out of range: use a percentage above 0, at most 100",
                        k[0]
                    ),
                ));
            }
        }
        if pcts_ok {
            if self.thaw_below_pct >= self.throttle_full_pct {
                out.push((
                    &["thaw_below_pct", "throttle_full_pct"],
                    format!(
                        "thaw_below_pct = {} must be below throttle_full_pct = {} (the gap keeps a session from flapping): \
                         lower thaw_below_pct or raise throttle_full_pct",
                        self.thaw_below_pct, self.throttle_full_pct
                    ),
                ));
            }
            if self.throttle_full_pct > self.freeze_full_pct {
                out.push((
                    &["throttle_full_pct", "freeze_full_pct"],
                    format!(
                        "throttle_full_pct = {} is above freeze_full_pct = {} (a session is throttled before it is frozen): \
                         lower throttle_full_pct or raise freeze_full_pct",
                        self.throttle_full_pct, self.freeze_full_pct
                    ),
                ));
            }
        }
        let dwells: [(&'static [&'static str], u64); 3] = [
            (&["freeze_after_ms"], self.freeze_after_ms),
            (&["kill_after_ms"], self.kill_after_ms),
            (&["thaw_after_ms"], self.thaw_after_ms),
        ];
        for (k, v) in dwells {
            if v == 0 {
                out.push((k, format!("{} = 0: a dwell time must be above 0 ms", k[0])));
            }
        }
        if self.kill_after_ms <= self.freeze_after_ms {
            out.push((
                &["kill_after_ms", "freeze_after_ms"],
                format!(
                    "kill_after_ms = {} must be above freeze_after_ms = {} (a frozen session gets longer to recover \
                     than it took to freeze it): raise kill_after_ms or lower freeze_after_ms",
                    self.kill_after_ms, self.freeze_after_ms
                ),
            ));
        }
        out
    }

    /// Check thaw_below < throttle <= freeze <= 100, dwell times above 0
    /// and kill_after above freeze_after.
    pub fn validate(&self) -> Result<(), String> {
        crate::policy::problems_result(self.problems())
    }
}

/// Where a session is in the escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    Throttled,
    SoftPaused,
    Killed,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Throttled => "throttled",
            Phase::SoftPaused => "soft_paused",
            Phase::Killed => "killed",
        }
    }
}

/// One session's escalation state; times are ms of the escalator's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub phase: Phase,
    /// when the session entered this phase
    pub since_ms: u64,
    /// throttled: since when full pressure has been above freeze_full_pct
    pub above_freeze_since: Option<u64>,
    /// throttled: since when full pressure has been below thaw_below_pct
    pub below_thaw_since: Option<u64>,
    /// a memory.max (or oom) event happened since the session was throttled
    pub max_hit: bool,
    /// freezes since the session last ran free (Running)
    pub freezes: u32,
}

impl SessionState {
    pub fn running(now_ms: u64) -> Self {
        SessionState {
            phase: Phase::Running,
            since_ms: now_ms,
            above_freeze_since: None,
            below_thaw_since: None,
            max_hit: false,
            freezes: 0,
        }
    }

    fn enter(phase: Phase, now_ms: u64) -> Self {
        SessionState {
            phase,
            ..Self::running(now_ms)
        }
    }
}

/// `memory.events` counters (cumulative, or the growth over one tick).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
}

impl MemEvents {
    /// Growth since @prev (a counter that went back counts as 0).
    pub fn delta(&self, prev: &MemEvents) -> MemEvents {
        MemEvents {
            low: self.low.saturating_sub(prev.low),
            high: self.high.saturating_sub(prev.high),
            max: self.max.saturating_sub(prev.max),
            oom: self.oom.saturating_sub(prev.oom),
            oom_kill: self.oom_kill.saturating_sub(prev.oom_kill),
        }
    }
}

/// What one tick saw of a session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inputs {
    /// `full avg10` of memory.pressure, percent
    pub full_avg10: f64,
    /// `some avg10` of memory.pressure, percent (for the log)
    pub some_avg10: f64,
    /// memory.events growth since the last tick
    pub events: MemEvents,
    /// memory.current, when readable
    pub current: Option<u64>,
    /// memory.high; None for "max" or unreadable
    pub high: Option<u64>,
    /// the session still has tasks (cgroup.events "populated")
    pub populated: bool,
    /// the kernel reports a requested freeze complete (cgroup.events
    /// "frozen"); None if unreadable
    pub frozen: Option<bool>,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs {
            full_avg10: 0.0,
            some_avg10: 0.0,
            events: MemEvents::default(),
            current: None,
            high: None,
            populated: true,
            frozen: None,
        }
    }
}

impl Inputs {
    /// memory.max was hit (or the OOM killer ran) since the last tick
    pub fn hit_max(&self) -> bool {
        self.events.max > 0 || self.events.oom > 0
    }

    /// memory.current above a finite memory.high
    pub fn over_high(&self) -> bool {
        matches!((self.current, self.high), (Some(c), Some(h)) if c > h)
    }
}

/// What the escalator does to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// running -> throttled (no write)
    Throttle,
    /// throttled -> running (no write)
    Release,
    /// write 1 to cgroup.freeze
    Freeze,
    /// write 0 to cgroup.freeze
    Thaw,
    /// write 1 to cgroup.kill
    Kill,
}

/// The escalation decision for one session and one tick (the rules are in
/// the module documentation). The caller keeps the returned state only
/// when the action (if any) was carried out.
pub fn step(
    s: &SessionState,
    i: &Inputs,
    now_ms: u64,
    cfg: &EscalationConfig,
) -> (SessionState, Option<Action>) {
    let full = i.full_avg10;
    let hit_max = i.hit_max();
    match s.phase {
        Phase::Running => {
            if full > cfg.throttle_full_pct {
                let mut n = SessionState::enter(Phase::Throttled, now_ms);
                n.above_freeze_since = (full > cfg.freeze_full_pct).then_some(now_ms);
                n.max_hit = hit_max;
                (n, Some(Action::Throttle))
            } else {
                (*s, None)
            }
        }
        Phase::Throttled => {
            let mut n = *s;
            n.max_hit |= hit_max;
            n.above_freeze_since = if full > cfg.freeze_full_pct {
                Some(s.above_freeze_since.unwrap_or(now_ms))
            } else {
                None
            };
            n.below_thaw_since = if full < cfg.thaw_below_pct {
                Some(s.below_thaw_since.unwrap_or(now_ms))
            } else {
                None
            };
            if n.above_freeze_since
                .is_some_and(|t| now_ms.saturating_sub(t) >= cfg.freeze_after_ms)
            {
                let mut f = SessionState::enter(Phase::SoftPaused, now_ms);
                f.max_hit = n.max_hit;
                f.freezes = s.freezes + 1;
                return (f, Some(Action::Freeze));
            }
            if n.below_thaw_since
                .is_some_and(|t| now_ms.saturating_sub(t) >= cfg.thaw_after_ms)
            {
                return (SessionState::running(now_ms), Some(Action::Release));
            }
            (n, None)
        }
        Phase::SoftPaused => {
            let mut n = *s;
            n.max_hit |= hit_max;
            if now_ms.saturating_sub(s.since_ms) < cfg.kill_after_ms {
                return (n, None);
            }
            // a session that is still over its limits, or that needed a
            // second freeze before its pressure cleared, is killed
            if n.max_hit || i.over_high() || s.freezes >= 2 {
                (
                    SessionState::enter(Phase::Killed, now_ms),
                    Some(Action::Kill),
                )
            } else {
                let mut t = SessionState::enter(Phase::Throttled, now_ms);
                t.freezes = s.freezes;
                (t, Some(Action::Thaw))
            }
        }
        Phase::Killed => {
            if !i.populated {
                (SessionState::running(now_ms), Some(Action::Thaw))
            } else if now_ms.saturating_sub(s.since_ms) >= cfg.kill_after_ms {
                (
                    SessionState::enter(Phase::Killed, now_ms),
                    Some(Action::Kill),
                )
            } else {
                (*s, None)
            }
        }
    }
}

/// `some avg10` and `full avg10` of a pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Psi {
    pub some_avg10: f64,
    pub full_avg10: f64,
}

/// Parse a PSI file ("some avg10=1.00 avg60=... total=...", "full ...").
/// Unknown lines and fields are skipped; a missing `full` line reads as 0;
/// None when neither line has a usable avg10.
pub fn parse_pressure(text: &str) -> Option<Psi> {
    let mut psi = Psi::default();
    let mut found = false;
    for line in text.lines() {
        let mut tok = line.split_whitespace();
        let slot = match tok.next() {
            Some("some") => &mut psi.some_avg10,
            Some("full") => &mut psi.full_avg10,
            _ => continue,
        };
        let avg10 = tok
            .filter_map(|t| t.strip_prefix("avg10="))
            .filter_map(|v| v.parse::<f64>().ok())
            .find(|v| v.is_finite() && *v >= 0.0);
        if let Some(v) = avg10 {
            *slot = v.min(100.0);
            found = true;
        }
    }
    found.then_some(psi)
}

/// Parse `memory.events` ("high 3" lines); unknown keys and bad lines are
/// skipped.
pub fn parse_mem_events(text: &str) -> MemEvents {
    let mut ev = MemEvents::default();
    for line in text.lines() {
        let mut tok = line.split_whitespace();
        let (Some(k), Some(v)) = (tok.next(), tok.next()) else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        match k {
            "low" => ev.low = v,
            "high" => ev.high = v,
            "max" => ev.max = v,
            "oom" => ev.oom = v,
            "oom_kill" => ev.oom_kill = v,
            _ => {}
        }
    }
    ev
}

/// Parse `memory.high` / `memory.max`: None for "max" or garbage.
pub fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()
}

/// A flag (`populated`, `frozen`) of a `cgroup.events` text; None when
/// it is not there.
pub fn parse_events_flag(text: &str, key: &str) -> Option<bool> {
    text.lines().find_map(|l| {
        let mut tok = l.split_whitespace();
        (tok.next() == Some(key)).then(|| tok.next() != Some("0"))
    })
}

/// Why a session is killed (@old: its state before the kill), for the log.
pub fn kill_reason(old: &SessionState, i: &Inputs, now_ms: u64) -> String {
    if old.phase == Phase::Killed {
        return "it still had tasks after the last kill".to_string();
    }
    let held = now_ms.saturating_sub(old.since_ms);
    let why = if old.max_hit || i.hit_max() {
        format!("frozen {held} ms and it hit memory.max while throttled or frozen")
    } else if i.over_high() {
        format!("frozen {held} ms and still above its memory.high")
    } else {
        format!("frozen {held} ms, its second freeze before its memory pressure cleared")
    };
    why + freeze_note(i)
}

/// For the log of a thaw or kill: whether the kernel had finished the
/// freeze. Tasks in reclaim or in memory.high throttling stop only when
/// they get back to user space, which under heavy reclaim can take longer
/// than the session stays frozen.
pub fn freeze_note(i: &Inputs) -> &'static str {
    if i.frozen == Some(false) {
        "; the kernel had not completed the freeze (tasks still in reclaim or throttling)"
    } else {
        ""
    }
}

/// Counters of the escalator's actions and each session's phase, for the
/// stats.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EscalationStats {
    pub throttled: u64,
    pub released: u64,
    pub frozen: u64,
    pub thawed: u64,
    pub killed: u64,
    /// writes that failed (the action is retried on the next tick)
    pub errors: u64,
    /// session name -> phase name
    pub sessions: BTreeMap<String, String>,
}

struct Session {
    state: SessionState,
    events: Option<MemEvents>,
    /// the memory.high / memory.max this escalator wrote
    applied: (Option<MemLimit>, Option<MemLimit>),
    last_error: Option<String>,
    /// memory.pressure could not be read (said once)
    psi_warned: bool,
}

/// The escalation loop over the sessions of one managed parent cgroup.
pub struct Escalator {
    root: PathBuf,
    parent: PathBuf,
    parent_rel: String,
    cfg: EscalationConfig,
    sessions: BTreeMap<String, Session>,
    stats: Arc<Mutex<EscalationStats>>,
    policy: Arc<Mutex<Option<Policy>>>,
    warned_parent: bool,
}

/// @rel as a relative path of normal components only, without the
/// slashes at its ends.
fn clean_rel(rel: &str) -> Result<String> {
    let t = rel.trim_matches('/');
    if t.is_empty() {
        bail!("the managed parent cgroup must be a cgroup below the root, not {rel:?}");
    }
    if Path::new(t)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("the managed parent cgroup {rel:?} must not contain \".\" or \"..\" components");
    }
    Ok(t.to_string())
}

impl Escalator {
    /// Watch the sessions below @cgroot/@parent_rel.
    pub fn new(cgroot: PathBuf, parent_rel: &str, cfg: EscalationConfig) -> Result<Self> {
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("--mem-escalation: {e}"))?;
        let rel = clean_rel(parent_rel)?;
        Ok(Escalator {
            parent: cgroot.join(&rel),
            root: cgroot,
            parent_rel: rel,
            cfg,
            sessions: BTreeMap::new(),
            stats: Arc::new(Mutex::new(EscalationStats::default())),
            policy: Arc::new(Mutex::new(None)),
            warned_parent: false,
        })
    }

    /// The counters the stats code reads (shared with the escalator thread).
    pub fn stats_handle(&self) -> Arc<Mutex<EscalationStats>> {
        self.stats.clone()
    }

    /// A copy of the counters.
    pub fn counters(&self) -> EscalationStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The policy whose profiles give sessions memory.high / memory.max
    /// (None: the escalator sets no limits). Store a reloaded policy here.
    pub fn policy_handle(&self) -> Arc<Mutex<Option<Policy>>> {
        self.policy.clone()
    }

    /// Each session's phase.
    pub fn session_phases(&self) -> BTreeMap<String, Phase> {
        self.sessions
            .iter()
            .map(|(k, s)| (k.clone(), s.state.phase))
            .collect()
    }

    /// The canonical managed parent, when it exists and lies strictly
    /// below the canonical cgroup root.
    fn canonical_parent(&self) -> std::result::Result<PathBuf, String> {
        let root = self
            .root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", self.root.display()))?;
        let parent = self
            .parent
            .canonicalize()
            .map_err(|e| format!("{}: {e}", self.parent.display()))?;
        if parent == root || !parent.starts_with(&root) {
            return Err(format!(
                "{} resolves to {}, which is not below {}",
                self.parent.display(),
                parent.display(),
                root.display()
            ));
        }
        Ok(parent)
    }

    /// Write @value to @file of session @name, only if the file is
    /// directly inside a directory directly below the managed parent (on
    /// canonical paths). Never creates files.
    fn guarded_write(
        &self,
        name: &str,
        file: &str,
        value: &str,
    ) -> std::result::Result<(), String> {
        let single = |s: &str| {
            let mut c = Path::new(s).components();
            matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
        };
        if !single(name) || !single(file) {
            return Err(format!(
                "refusing to write {file:?} of {name:?}: not a plain name"
            ));
        }
        let parent = self.canonical_parent()?;
        let dir = parent.join(name);
        let cdir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if cdir.parent() != Some(parent.as_path()) {
            return Err(format!(
                "refusing to write {file} of {}: it resolves to {}, which is not directly below {}",
                dir.display(),
                cdir.display(),
                parent.display()
            ));
        }
        let target = cdir.join(file);
        let ctarget = target
            .canonicalize()
            .map_err(|e| format!("{}: {e}", target.display()))?;
        if ctarget.parent() != Some(cdir.as_path()) {
            return Err(format!(
                "refusing to write {}: it resolves to {}, outside {}",
                target.display(),
                ctarget.display(),
                cdir.display()
            ));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&ctarget)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| format!("writing {value:?} to {}: {e}", ctarget.display()))
    }

    fn read(dir: &Path, file: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(file)).ok()
    }

    /// The sessions now below the parent: real directories, by name.
    fn list_sessions(parent: &Path) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(parent) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The memory.high / memory.max the policy gives session @name.
    fn wanted_limits(&self, name: &str) -> (Option<MemLimit>, Option<MemLimit>) {
        let Ok(guard) = self.policy.lock() else {
            return (None, None);
        };
        let Some(policy) = guard.as_ref() else {
            return (None, None);
        };
        let rel = format!("{}/{name}", self.parent_rel);
        match policy.resolve(&rel, Some(name), None) {
            Some(i) => (
                policy.profiles[i].memory_high,
                policy.profiles[i].memory_max,
            ),
            None => (None, None),
        }
    }

    fn note_error(&mut self, name: &str, msg: String) {
        if let Ok(mut st) = self.stats.lock() {
            st.errors += 1;
        }
        if let Some(s) = self.sessions.get_mut(name) {
            if s.last_error.as_deref() != Some(msg.as_str()) {
                warn!("mem-escalation: session {name}: {msg}");
                s.last_error = Some(msg);
            }
        }
    }

    /// Set memory.max then memory.high when the policy's values differ
    /// from what this escalator last wrote (a limit the policy drops goes
    /// back to "max"; limits the escalator never wrote are left alone).
    fn apply_limits(&mut self, name: &str) {
        let want = self.wanted_limits(name);
        let Some(applied) = self.sessions.get(name).map(|s| s.applied) else {
            return;
        };
        for (idx, file) in [(1usize, "memory.max"), (0, "memory.high")] {
            let (w, a) = if idx == 0 {
                (want.0, applied.0)
            } else {
                (want.1, applied.1)
            };
            if w == a {
                continue;
            }
            let value = w.unwrap_or(MemLimit::Max).to_cgroup_value();
            match self.guarded_write(name, file, &value) {
                Ok(()) => {
                    info!("mem-escalation: session {name}: {file} set to {value} (policy)");
                    if let Some(s) = self.sessions.get_mut(name) {
                        if idx == 0 {
                            s.applied.0 = w;
                        } else {
                            s.applied.1 = w;
                        }
                    }
                }
                Err(e) => self.note_error(name, e),
            }
        }
    }

    fn inputs_of(&mut self, name: &str, dir: &Path) -> Option<Inputs> {
        let psi = parse_pressure(&Self::read(dir, "memory.pressure")?)?;
        let now_ev = Self::read(dir, "memory.events").map(|t| parse_mem_events(&t));
        let cg_events = Self::read(dir, "cgroup.events");
        let s = self.sessions.get_mut(name)?;
        let events = match (now_ev, s.events) {
            (Some(n), Some(p)) => n.delta(&p),
            _ => MemEvents::default(),
        };
        if now_ev.is_some() {
            s.events = now_ev;
        }
        Some(Inputs {
            full_avg10: psi.full_avg10,
            some_avg10: psi.some_avg10,
            events,
            current: Self::read(dir, "memory.current").and_then(|t| parse_limit(&t)),
            high: Self::read(dir, "memory.high").and_then(|t| parse_limit(&t)),
            populated: cg_events
                .as_deref()
                .and_then(|t| parse_events_flag(t, "populated"))
                .unwrap_or(true),
            frozen: cg_events.as_deref().and_then(|t| parse_events_flag(t, "frozen")),
        })
    }

    fn describe(i: &Inputs) -> String {
        let mut s = format!(
            "full avg10 {:.2}%, some avg10 {:.2}%",
            i.full_avg10, i.some_avg10
        );
        if let Some(c) = i.current {
            s += &format!(", memory.current {c}");
        }
        if let Some(h) = i.high {
            s += &format!(", memory.high {h}");
        }
        s
    }

    /// Carry out @action on session @name; Err leaves the state as it was.
    fn act(
        &mut self,
        name: &str,
        action: Action,
        old: &SessionState,
        i: &Inputs,
        now_ms: u64,
    ) -> std::result::Result<(), String> {
        let rel = format!("{}/{name}", self.parent_rel);
        let what = Self::describe(i);
        match action {
            Action::Throttle => info!("mem-escalation: session {rel} throttled ({what})"),
            Action::Release => info!("mem-escalation: session {rel} back to running ({what})"),
            Action::Freeze => {
                self.guarded_write(name, "cgroup.freeze", "1")?;
                warn!(
                    "mem-escalation: session {rel} frozen: full memory pressure above {}% for {} ms ({what})",
                    self.cfg.freeze_full_pct, self.cfg.freeze_after_ms
                );
            }
            Action::Thaw => {
                self.guarded_write(name, "cgroup.freeze", "0")?;
                if old.phase == Phase::Killed {
                    info!("mem-escalation: session {rel} has no tasks left after the kill: unfrozen for later steps");
                } else {
                    info!(
                        "mem-escalation: session {rel} thawed after {} ms frozen: it is within its memory limits{} ({what})",
                        now_ms.saturating_sub(old.since_ms),
                        freeze_note(i)
                    );
                }
            }
            Action::Kill => {
                self.guarded_write(name, "cgroup.kill", "1")?;
                let why = kill_reason(old, i, now_ms);
                warn!("mem-escalation: session {rel} killed: {why} ({what})");
            }
        }
        if let Ok(mut st) = self.stats.lock() {
            match action {
                Action::Throttle => st.throttled += 1,
                Action::Release => st.released += 1,
                Action::Freeze => st.frozen += 1,
                Action::Thaw => st.thawed += 1,
                Action::Kill => st.killed += 1,
            }
        }
        Ok(())
    }

    /// One pass over the sessions at @now_ms (a monotonic clock in ms).
    pub fn tick(&mut self, now_ms: u64) {
        let parent = match self.canonical_parent() {
            Ok(p) => {
                self.warned_parent = false;
                p
            }
            Err(e) => {
                if !self.warned_parent {
                    warn!("mem-escalation: not watching sessions: {e}");
                    self.warned_parent = true;
                }
                self.sessions.clear();
                self.publish();
                return;
            }
        };
        let names = Self::list_sessions(&parent);
        self.sessions.retain(|k, _| names.contains(k));
        for name in names {
            self.sessions
                .entry(name.clone())
                .or_insert_with(|| Session {
                    state: SessionState::running(now_ms),
                    events: None,
                    applied: (None, None),
                    last_error: None,
                    psi_warned: false,
                });
            self.apply_limits(&name);
            let dir = parent.join(&name);
            let Some(inputs) = self.inputs_of(&name, &dir) else {
                if let Some(s) = self.sessions.get_mut(&name) {
                    if !s.psi_warned {
                        s.psi_warned = true;
                        warn!(
                            "mem-escalation: session {}/{name}: memory.pressure is not readable (is PSI off? boot with psi=1): \
                             not watching it",
                            self.parent_rel
                        );
                    }
                }
                continue;
            };
            let old = self.sessions[&name].state;
            let (new, action) = step(&old, &inputs, now_ms, &self.cfg);
            let res = match action {
                Some(a) => self.act(&name, a, &old, &inputs, now_ms),
                None => Ok(()),
            };
            match res {
                Ok(()) => {
                    if let Some(s) = self.sessions.get_mut(&name) {
                        s.state = new;
                    }
                }
                Err(e) => self.note_error(&name, e),
            }
        }
        self.publish();
    }

    fn publish(&self) {
        if let Ok(mut st) = self.stats.lock() {
            st.sessions = self
                .sessions
                .iter()
                .map(|(k, s)| (k.clone(), s.state.phase.as_str().to_string()))
                .collect();
        }
    }

    /// Thaw every session this escalator froze (on exit).
    pub fn release_all(&mut self) {
        let frozen: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.state.phase, Phase::SoftPaused | Phase::Killed))
            .map(|(k, _)| k.clone())
            .collect();
        for name in frozen {
            match self.guarded_write(&name, "cgroup.freeze", "0") {
                Ok(()) => {
                    info!(
                        "mem-escalation: session {}/{name} thawed on exit",
                        self.parent_rel
                    );
                    if let Ok(mut st) = self.stats.lock() {
                        st.thawed += 1;
                    }
                    if let Some(s) = self.sessions.get_mut(&name) {
                        s.state = SessionState::running(s.state.since_ms);
                    }
                }
                Err(e) => warn!("mem-escalation: session {name}: could not thaw it on exit: {e}"),
            }
        }
        self.publish();
    }

    /// Run [`Escalator::tick`] every 100 ms on a thread of its own until
    /// @stop is set, then thaw what it froze. Read the counters through
    /// [`Escalator::stats_handle`] (take it before calling this).
    pub fn spawn(self, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("agentcg-memesc".into())
            .spawn(move || {
                let mut me = self;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    me.tick(start.elapsed().as_millis() as u64);
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                }
                me.release_all();
            })
            .context("starting the memory escalation thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn cfg() -> EscalationConfig {
        EscalationConfig::default()
    }

    fn inp(full: f64) -> Inputs {
        Inputs {
            full_avg10: full,
            ..Inputs::default()
        }
    }

    /// Feed @full every 100 ms from @from (exclusive) to @to (inclusive);
    /// the actions taken, with their times.
    fn run(s: &mut SessionState, i: Inputs, from: u64, to: u64) -> Vec<(u64, Action)> {
        let mut acts = Vec::new();
        let mut t = from + 100;
        while t <= to {
            let (n, a) = step(s, &i, t, &cfg());
            if let Some(a) = a {
                acts.push((t, a));
            }
            *s = n;
            t += 100;
        }
        acts
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = cfg();
        assert_eq!(
            (
                c.throttle_full_pct,
                c.freeze_full_pct,
                c.freeze_after_ms,
                c.kill_after_ms,
                c.thaw_below_pct,
                c.thaw_after_ms
            ),
            (10.0, 40.0, 2000, 10_000, 5.0, 1000)
        );
        c.validate().unwrap();
        let bad = |f: fn(&mut EscalationConfig)| {
            let mut c = cfg();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.thaw_below_pct = 10.0)
            .contains("thaw_below_pct = 10 must be below throttle_full_pct = 10"));
        assert!(bad(|c| c.throttle_full_pct = 50.0).contains("above freeze_full_pct = 40"));
        assert!(
            bad(|c| c.freeze_full_pct = 101.0).contains("freeze_full_pct = 101 is out of range")
        );
        assert!(bad(|c| c.thaw_below_pct = 0.0).contains("thaw_below_pct = 0 is out of range"));
        assert!(bad(|c| c.throttle_full_pct = f64::NAN).contains("throttle_full_pct = NaN"));
        assert!(bad(|c| c.freeze_after_ms = 0).contains("freeze_after_ms = 0"));
        assert!(bad(|c| c.thaw_after_ms = 0).contains("thaw_after_ms = 0"));
        assert!(bad(|c| c.kill_after_ms = 2000)
            .contains("kill_after_ms = 2000 must be above freeze_after_ms = 2000"));
        // equal throttle and freeze thresholds are allowed
        let mut c = cfg();
        c.throttle_full_pct = 40.0;
        c.validate().unwrap();
        assert_eq!(cfg().problems().len(), 0);
    }

    #[test]
    fn running_stays_below_the_threshold_and_throttles_above() {
        let mut s = SessionState::running(0);
        assert!(run(&mut s, inp(10.0), 0, 5000).is_empty());
        assert_eq!(s.phase, Phase::Running);
        // memory.max events alone do not throttle
        let mut i = inp(3.0);
        i.events.max = 5;
        assert!(run(&mut s, i, 5000, 6000).is_empty());
        assert_eq!(
            run(&mut s, inp(10.5), 6000, 6100),
            [(6100, Action::Throttle)]
        );
        assert_eq!((s.phase, s.since_ms), (Phase::Throttled, 6100));
    }

    #[test]
    fn throttled_releases_after_the_thaw_dwell_only() {
        let mut s = SessionState::running(0);
        run(&mut s, inp(20.0), 0, 100);
        // between thaw and throttle: stays throttled
        assert!(run(&mut s, inp(7.0), 100, 5000).is_empty());
        // below thaw for 900 ms, then a spike: the dwell starts over
        assert!(run(&mut s, inp(4.0), 5000, 5900).is_empty());
        assert!(run(&mut s, inp(6.0), 5900, 6000).is_empty());
        assert_eq!(run(&mut s, inp(4.0), 6000, 8000), [(7100, Action::Release)]);
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s, SessionState::running(7100));
    }

    #[test]
    fn freeze_needs_continuous_severe_pressure() {
        let mut s = SessionState::running(0);
        assert_eq!(run(&mut s, inp(45.0), 0, 100), [(100, Action::Throttle)]);
        assert_eq!(s.above_freeze_since, Some(100));
        // 1.9 s above, one tick at the threshold (not above), resets the dwell
        assert!(run(&mut s, inp(45.0), 100, 2000).is_empty());
        assert!(run(&mut s, inp(40.0), 2000, 2100).is_empty());
        assert_eq!(s.above_freeze_since, None);
        assert_eq!(run(&mut s, inp(45.0), 2100, 6000), [(4200, Action::Freeze)]);
        assert_eq!((s.phase, s.since_ms), (Phase::SoftPaused, 4200));
    }

    #[test]
    fn frozen_session_over_its_high_is_killed() {
        let mut s = SessionState::running(0);
        run(&mut s, inp(90.0), 0, 100);
        assert_eq!(run(&mut s, inp(90.0), 100, 2100), [(2100, Action::Freeze)]);
        // while frozen PSI decays; memory stays above memory.high
        let frozen = Inputs {
            full_avg10: 1.0,
            current: Some(600),
            high: Some(512),
            ..Inputs::default()
        };
        assert_eq!(run(&mut s, frozen, 2100, 20_000), [(12_100, Action::Kill)]);
        assert_eq!(s.phase, Phase::Killed);
        // still populated kill_after later: killed again; empty: thawed for reuse
        assert_eq!(
            run(&mut s, frozen, 12_100, 22_100),
            [(22_100, Action::Kill)]
        );
        let empty = Inputs {
            populated: false,
            ..frozen
        };
        assert_eq!(run(&mut s, empty, 22_100, 22_200), [(22_200, Action::Thaw)]);
        assert_eq!(s, SessionState::running(22_200));
    }

    #[test]
    fn kill_reasons_name_what_decided() {
        let mut old = SessionState::enter(Phase::SoftPaused, 1000);
        let over = Inputs { current: Some(600), high: Some(512), frozen: Some(true), ..Inputs::default() };
        assert_eq!(kill_reason(&old, &over, 4000), "frozen 3000 ms and still above its memory.high");
        // under memory.high: the second freeze decided, and the log must not
        // claim otherwise; a freeze the kernel never completed is said too
        old.freezes = 2;
        let under = Inputs { current: Some(300), high: Some(512), frozen: Some(false), ..Inputs::default() };
        let why = kill_reason(&old, &under, 4000);
        assert!(why.starts_with("frozen 3000 ms, its second freeze"), "{why}");
        assert!(why.contains("had not completed the freeze"), "{why}");
        // memory.max hit in the very tick that kills: that is the reason
        let mut hit = under;
        hit.events.max = 1;
        assert!(kill_reason(&old, &hit, 4000).contains("hit memory.max"));
        old.max_hit = true;
        assert!(kill_reason(&old, &under, 4000).contains("hit memory.max"));
        let killed = SessionState::enter(Phase::Killed, 1000);
        assert_eq!(kill_reason(&killed, &under, 4000), "it still had tasks after the last kill");
        assert_eq!(freeze_note(&over), "");
    }

    #[test]
    fn frozen_session_that_hit_max_is_killed() {
        let mut s = SessionState::running(0);
        run(&mut s, inp(90.0), 0, 100);
        let mut hit = inp(90.0);
        hit.events.max = 2;
        run(&mut s, hit, 100, 200);
        assert!(s.max_hit);
        assert_eq!(run(&mut s, inp(90.0), 200, 2100), [(2100, Action::Freeze)]);
        assert!(s.max_hit);
        // memory.high is "max", memory.current at the limit: the max event decides
        let frozen = Inputs {
            full_avg10: 0.0,
            current: Some(1 << 30),
            high: None,
            ..Inputs::default()
        };
        assert_eq!(run(&mut s, frozen, 2100, 12_100), [(12_100, Action::Kill)]);
        // an oom event counts the same
        let mut s = SessionState::running(0);
        let mut oom = inp(90.0);
        oom.events.oom = 1;
        run(&mut s, oom, 0, 100);
        assert!(s.max_hit);
    }

    #[test]
    fn a_second_freeze_ends_in_a_kill() {
        // within its limits after the first freeze (thawed), the pressure
        // comes back: frozen again, and killed at the end of that freeze
        let within = |full: f64| Inputs {
            full_avg10: full,
            current: Some(400),
            high: Some(512),
            ..Inputs::default()
        };
        let mut s = SessionState::running(0);
        run(&mut s, inp(90.0), 0, 2100);
        assert_eq!((s.phase, s.freezes), (Phase::SoftPaused, 1));
        assert_eq!(run(&mut s, within(30.0), 2100, 12_100), [(12_100, Action::Thaw)]);
        assert_eq!((s.phase, s.freezes), (Phase::Throttled, 1));
        assert_eq!(run(&mut s, within(90.0), 12_100, 14_200), [(14_200, Action::Freeze)]);
        assert_eq!(s.freezes, 2);
        assert_eq!(run(&mut s, within(30.0), 14_200, 24_200), [(24_200, Action::Kill)]);
        // running free again starts the count over
        let mut s = SessionState::running(0);
        run(&mut s, inp(90.0), 0, 2100);
        run(&mut s, within(30.0), 2100, 12_100);
        run(&mut s, inp(2.0), 12_100, 14_000);
        assert_eq!((s.phase, s.freezes), (Phase::Running, 0));
    }

    #[test]
    fn frozen_session_within_its_limits_is_thawed_not_killed() {
        let mut s = SessionState::running(0);
        run(&mut s, inp(90.0), 0, 2100);
        assert_eq!(s.phase, Phase::SoftPaused);
        let frozen = Inputs {
            full_avg10: 30.0,
            current: Some(400),
            high: Some(512),
            ..Inputs::default()
        };
        assert_eq!(run(&mut s, frozen, 2100, 12_100), [(12_100, Action::Thaw)]);
        assert_eq!(
            (s.phase, s.max_hit, s.above_freeze_since),
            (Phase::Throttled, false, None)
        );
        // and from throttled back to running once pressure clears
        assert_eq!(
            run(&mut s, inp(2.0), 12_100, 14_000),
            [(13_200, Action::Release)]
        );
        // no limits at all (global shortage): never killed by us
        let mut s = SessionState::running(0);
        run(&mut s, inp(90.0), 0, 2100);
        let unlimited = Inputs {
            full_avg10: 0.0,
            current: Some(u64::MAX),
            high: None,
            ..Inputs::default()
        };
        assert_eq!(
            run(&mut s, unlimited, 2100, 12_100),
            [(12_100, Action::Thaw)]
        );
    }

    #[test]
    fn parsers_are_robust() {
        let p = parse_pressure(
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=7.25 avg60=1.00 avg300=0.00 total=45\n",
        )
        .unwrap();
        assert_eq!((p.some_avg10, p.full_avg10), (12.5, 7.25));
        let p = parse_pressure("some avg10=1.00 avg60=0.00 avg300=0.00 total=1").unwrap();
        assert_eq!((p.some_avg10, p.full_avg10), (1.0, 0.0));
        let p =
            parse_pressure("  full   total=9 avg10=3.5\n\njunk line\nsome avg10=bad\n").unwrap();
        assert_eq!((p.some_avg10, p.full_avg10), (0.0, 3.5));
        assert_eq!(
            parse_pressure("full avg10=250.0").unwrap().full_avg10,
            100.0
        );
        assert!(parse_pressure("").is_none());
        assert!(parse_pressure("some avg10=-1 avg60=0").is_none());
        assert!(parse_pressure("some avg10=nan").is_none());

        let e = parse_mem_events(
            "low 1\nhigh 22\nmax 3\noom 4\noom_kill 5\noom_group_kill 9\nbad\nmax x\n",
        );
        assert_eq!(
            e,
            MemEvents {
                low: 1,
                high: 22,
                max: 3,
                oom: 4,
                oom_kill: 5
            }
        );
        let d = MemEvents {
            high: 30,
            max: 3,
            ..e
        }
        .delta(&e);
        assert_eq!(
            d,
            MemEvents {
                high: 8,
                low: 0,
                max: 0,
                oom: 0,
                oom_kill: 0
            }
        );
        assert_eq!(MemEvents::default().delta(&e), MemEvents::default());

        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_events_flag("populated 0\nfrozen 1\n", "populated"), Some(false));
        assert_eq!(parse_events_flag("populated 1\n", "populated"), Some(true));
        assert_eq!(parse_events_flag("frozen 0\n", "populated"), None);
        assert_eq!(parse_events_flag("populated 0\nfrozen 1\n", "frozen"), Some(true));
        assert_eq!(parse_events_flag("populated 1\nfrozen 0\n", "frozen"), Some(false));
    }

    /// A fake cgroup tree in a temp dir, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!(
                "agentcg-esc-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Tree(d)
        }

        /// A cgroup dir with the files the escalator reads and writes.
        fn cgroup(&self, rel: &str, full: f64, current: u64, high: &str) -> PathBuf {
            let d = self.0.join(rel);
            std::fs::create_dir_all(&d).unwrap();
            self.pressure(rel, full);
            std::fs::write(
                d.join("memory.events"),
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            )
            .unwrap();
            std::fs::write(d.join("memory.current"), format!("{current}\n")).unwrap();
            std::fs::write(d.join("memory.high"), format!("{high}\n")).unwrap();
            std::fs::write(d.join("memory.max"), "max\n").unwrap();
            std::fs::write(d.join("cgroup.freeze"), "0\n").unwrap();
            std::fs::write(d.join("cgroup.kill"), "0\n").unwrap();
            std::fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
            d
        }

        fn pressure(&self, rel: &str, full: f64) {
            std::fs::write(
                self.0.join(rel).join("memory.pressure"),
                format!("some avg10={full:.2} avg60=0.00 avg300=0.00 total=1\nfull avg10={full:.2} avg60=0.00 avg300=0.00 total=1\n"),
            )
            .unwrap();
        }

        fn file(&self, rel: &str, f: &str) -> String {
            std::fs::read_to_string(self.0.join(rel).join(f))
                .unwrap()
                .trim()
                .to_string()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ticks(e: &mut Escalator, from: u64, to: u64) {
        let mut t = from;
        while t <= to {
            e.tick(t);
            t += TICK_MS;
        }
    }

    #[test]
    fn rejects_bad_parents_and_configs() {
        let t = Tree::new();
        for bad in ["", "/", "../x", "agentcg/../other", "./agentcg"] {
            assert!(Escalator::new(t.0.clone(), bad, cfg()).is_err(), "{bad:?}");
        }
        Escalator::new(t.0.clone(), "/agentcg/", cfg()).unwrap();
        let c = EscalationConfig {
            kill_after_ms: 1,
            ..cfg()
        };
        let e = Escalator::new(t.0.clone(), "agentcg", c)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("kill_after_ms = 1"), "{e}");
    }

    #[test]
    fn acts_only_strictly_below_the_parent() {
        let t = Tree::new();
        t.cgroup("agentcg", 90.0, 1 << 30, "max"); // the parent itself is under pressure too
        t.cgroup("agentcg/sess_a", 90.0, 600, "512");
        // same files outside the parent, under pressure and over their limit
        t.cgroup("agentcg_evil/sess_b", 90.0, 600, "512");
        t.cgroup("other/sess_c", 90.0, 600, "512");
        // a session-looking symlink to a cgroup outside the parent
        std::os::unix::fs::symlink(t.0.join("other/sess_c"), t.0.join("agentcg/sess_link"))
            .unwrap();
        // a session whose control file is a symlink to a file outside
        let d = t.cgroup("agentcg/sess_d", 90.0, 600, "512");
        std::fs::remove_file(d.join("cgroup.freeze")).unwrap();
        std::os::unix::fs::symlink(
            t.0.join("other/sess_c/cgroup.freeze"),
            d.join("cgroup.freeze"),
        )
        .unwrap();

        let mut e = Escalator::new(t.0.clone(), "agentcg", cfg()).unwrap();
        ticks(&mut e, 0, 2000);
        assert_eq!(t.file("agentcg/sess_a", "cgroup.freeze"), "1");
        let phases = e.session_phases();
        assert_eq!(phases.keys().collect::<Vec<_>>(), ["sess_a", "sess_d"]);
        assert_eq!(phases["sess_a"], Phase::SoftPaused);
        // sess_d's freeze was refused (its file leads outside): still throttled, counted as an error
        assert_eq!(phases["sess_d"], Phase::Throttled);
        ticks(&mut e, 2100, 12_100);
        assert_eq!(t.file("agentcg/sess_a", "cgroup.kill"), "1");
        assert_eq!(e.session_phases()["sess_a"], Phase::Killed);
        for outside in ["agentcg", "agentcg_evil/sess_b", "other/sess_c"] {
            assert_eq!(t.file(outside, "cgroup.freeze"), "0", "{outside}");
            assert_eq!(t.file(outside, "cgroup.kill"), "0", "{outside}");
        }
        let c = e.counters();
        assert_eq!((c.throttled, c.frozen, c.killed), (2, 1, 1));
        assert!(c.errors >= 1);
        assert_eq!(c.sessions["sess_a"], "killed");
        assert_eq!(c.sessions["sess_d"], "throttled");
        // direct calls with names that leave the parent are refused
        for name in ["..", "../other/sess_c", "sess_link", "/tmp", "."] {
            assert!(e.guarded_write(name, "cgroup.kill", "1").is_err(), "{name}");
        }
        assert!(e.guarded_write("sess_a", "../cgroup.kill", "1").is_err());
        assert!(e.guarded_write("sess_a", "nonexistent", "1").is_err());
        assert!(!t.0.join("agentcg/sess_a/nonexistent").exists());
        assert_eq!(t.file("other/sess_c", "cgroup.kill"), "0");
    }

    #[test]
    fn a_parent_that_resolves_outside_the_root_is_not_watched() {
        let t = Tree::new();
        let outside = Tree::new();
        outside.cgroup("sess_x", 90.0, 600, "512");
        std::os::unix::fs::symlink(&outside.0, t.0.join("agentcg")).unwrap();
        let mut e = Escalator::new(t.0.clone(), "agentcg", cfg()).unwrap();
        ticks(&mut e, 0, 3000);
        assert!(e.session_phases().is_empty());
        assert_eq!(outside.file("sess_x", "cgroup.freeze"), "0");
    }

    #[test]
    fn thaws_when_within_limits_releases_and_thaws_on_exit() {
        let t = Tree::new();
        t.cgroup("agentcg/s1", 90.0, 400, "512");
        t.cgroup("agentcg/s2", 90.0, 400, "512");
        let mut e = Escalator::new(t.0.clone(), "agentcg", cfg()).unwrap();
        let stats = e.stats_handle();
        ticks(&mut e, 0, 2000);
        assert_eq!(t.file("agentcg/s1", "cgroup.freeze"), "1");
        // frozen: PSI decays; s1 within its memory.high: thawed at kill_after
        t.pressure("agentcg/s1", 2.0);
        t.pressure("agentcg/s2", 30.0);
        ticks(&mut e, 2100, 12_000);
        assert_eq!(t.file("agentcg/s1", "cgroup.freeze"), "0");
        assert_eq!(t.file("agentcg/s1", "cgroup.kill"), "0");
        assert_eq!(e.session_phases()["s1"], Phase::Throttled);
        ticks(&mut e, 12_100, 13_200);
        assert_eq!(e.session_phases()["s1"], Phase::Running);
        // s2 was thawed to throttled at 12000 too and stays there at 30 %
        assert_eq!(e.session_phases()["s2"], Phase::Throttled);
        // freeze s2 again, then stop: it is thawed on exit
        t.pressure("agentcg/s2", 80.0);
        ticks(&mut e, 13_300, 16_000);
        assert_eq!(t.file("agentcg/s2", "cgroup.freeze"), "1");
        e.release_all();
        assert_eq!(t.file("agentcg/s2", "cgroup.freeze"), "0");
        let c = stats.lock().unwrap().clone();
        assert_eq!((c.frozen, c.thawed, c.released, c.killed), (3, 3, 1, 0));
        assert_eq!(c.sessions["s2"], "running");
        // a session that goes away is forgotten
        std::fs::remove_dir_all(t.0.join("agentcg/s1")).unwrap();
        e.tick(16_100);
        assert!(!e.counters().sessions.contains_key("s1"));
    }

    #[test]
    fn limits_from_the_policy_when_sessions_join() {
        let t = Tree::new();
        t.cgroup("agentcg/batch_1", 0.0, 0, "max");
        t.cgroup("agentcg/chat_1", 0.0, 0, "max");
        let policy = Policy::parse_str(
            "[profile.bg]\nclass = \"background\"\nmemory_high = \"1G\"\nmemory_max = \"2G\"\n\
             [[select]]\nprofile = \"bg\"\nsession = \"batch_*\"\n",
            "p.toml",
        )
        .unwrap();
        let mut e = Escalator::new(t.0.clone(), "agentcg", cfg()).unwrap();
        *e.policy_handle().lock().unwrap() = Some(policy);
        e.tick(0);
        assert_eq!(t.file("agentcg/batch_1", "memory.high"), "1073741824");
        assert_eq!(t.file("agentcg/batch_1", "memory.max"), "2147483648");
        assert_eq!(t.file("agentcg/chat_1", "memory.high"), "max");
        // not written again while unchanged
        std::fs::write(t.0.join("agentcg/batch_1/memory.high"), "7\n").unwrap();
        e.tick(100);
        assert_eq!(t.file("agentcg/batch_1", "memory.high"), "7");
        // a reload without limits puts back "max"
        *e.policy_handle().lock().unwrap() = Some(Policy::builtin());
        e.tick(200);
        assert_eq!(t.file("agentcg/batch_1", "memory.high"), "max");
        assert_eq!(t.file("agentcg/batch_1", "memory.max"), "max");
    }

    #[test]
    fn a_session_without_psi_is_listed_but_left_alone() {
        let t = Tree::new();
        let d = t.cgroup("agentcg/nopsi", 90.0, 600, "512");
        std::fs::remove_file(d.join("memory.pressure")).unwrap();
        let mut e = Escalator::new(t.0.clone(), "agentcg", cfg()).unwrap();
        ticks(&mut e, 0, 3000);
        assert_eq!(e.session_phases()["nopsi"], Phase::Running);
        assert_eq!(t.file("agentcg/nopsi", "cgroup.freeze"), "0");
        assert_eq!(e.counters().errors, 0);
    }

    #[test]
    fn spawned_loop_stops_and_thaws() {
        // a session under heavy pressure is frozen by the loop's own ticks;
        // stopping the loop thaws it
        let t = Tree::new();
        t.cgroup("agentcg/s", 90.0, 400, "512");
        let e = Escalator::new(t.0.clone(), "agentcg", cfg()).unwrap();
        let stats = e.stats_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let h = e.spawn(stop.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.file("agentcg/s", "cgroup.freeze") != "1" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(t.file("agentcg/s", "cgroup.freeze"), "1", "the loop never froze the session");
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        assert_eq!(t.file("agentcg/s", "cgroup.freeze"), "0", "not thawed on exit");
        let c = stats.lock().unwrap().clone();
        assert_eq!((c.frozen, c.thawed), (1, 1));
        assert_eq!(c.sessions["s"], "running");
    }
}
