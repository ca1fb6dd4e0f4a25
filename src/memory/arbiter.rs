// SPDX-License-Identifier: GPL-2.0-only
//! The arbitration loop (`--mem-arbitration`): reads the sessions' cgroup
//! files and the BPF guard's state, applies [`super::decide`], writes
//! protection, freezes, reclaims, thaws and kills. Every write goes to a
//! file directly inside the managed parent or inside one of its direct
//! children (checked on canonical paths), or to `/proc/PID/oom_score_adj`
//! of a task listed in a session's cgroups.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use log::{info, warn};

use super::{decide, fill_permille, hold_timing, oom_score_adj, pause_order, protection, protection_update, session_budget};
use super::{kept_running, reclaim_line_pct, reclaim_step, tick_ms, RECLAIM_STEP};
use super::{Act, DecideState, MemoryConfig, SessionView};
use crate::bpf_intf;
use crate::policy::{Policy, StepClass};

/// Counters and per-session state for the stats.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ArbitrationStats {
    pub fill_permille: u64,
    pub swap: bool,
    pub holds: u64,
    pub frozen: u64,
    pub thawed: u64,
    pub reclaims: u64,
    pub reclaimed_bytes: u64,
    pub killed: u64,
    pub errors: u64,
    /// guard line crossed -> the held session's last growth, per first
    /// hold of an episode (us)
    pub reactions_us: Vec<u64>,
    /// hold -> the held session's last growth, per hold (us)
    pub stops_us: Vec<u64>,
    pub sessions: BTreeMap<String, ArbSession>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ArbSession {
    /// running, held, frozen, killing
    pub state: String,
    pub class: String,
    pub low_bytes: u64,
    pub min_bytes: u64,
    pub holds: u64,
    pub held_ms: u64,
}

/// BPF maps the loop uses (duplicated fds: the thread owns them).
pub struct Maps {
    pub cgrp_ctxs: MapHandle,
    pub mem_ctls: MapHandle,
    pub mem_order: MapHandle,
}

struct Sess {
    dir: File,
    cgid: u64,
    class: Option<StepClass>,
    frozen_since: Option<u64>,
    killing: bool,
    populated: bool,
    /// BPF: held now, since (ms on our clock), holds so far, held ns
    held_since: Option<u64>,
    nr_holds: u64,
    held_ns: u64,
    /// the hold whose reaction time was recorded
    reacted_hold: u64,
    mode: u32,
    low: u64,
    min: u64,
    oom_group_set: bool,
    /// pid -> oom_score_adj before we changed it
    oom_orig: BTreeMap<i32, i32>,
}

/// The arbitration loop over the sessions of one managed parent.
pub struct Arbiter {
    root: PathBuf,
    parent: PathBuf,
    parent_rel: String,
    cfg: MemoryConfig,
    policy: Arc<Mutex<Policy>>,
    maps: Maps,
    sessions: BTreeMap<String, Sess>,
    order: Vec<String>,
    dstate: DecideState,
    stats: Arc<Mutex<ArbitrationStats>>,
    /// reclaims of frozen sessions, for the reclaim thread
    reclaims: Reclaims,
    swap: bool,
    parent_low: u64,
    parent_min: u64,
    start: Instant,
    /// ktime (ns) at `start`, to put BPF's timestamps on our clock
    ktime0: u64,
}

fn single(s: &str) -> bool {
    let mut c = Path::new(s).components();
    matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// A memory.* value in bytes, None for "max".
fn bytes_of(t: &str) -> Option<u64> {
    t.trim().parse().ok()
}

/// (memory.current, memory.max) of @parent and each of its ancestors below
/// @root; None for "max".
fn path_levels(root: &Path, parent: &Path) -> Vec<(u64, Option<u64>)> {
    let mut levels = Vec::new();
    let mut d = parent.to_path_buf();
    while d.starts_with(root) && d != root {
        if let (Some(u), Some(m)) = (read(&d, "memory.current"), read(&d, "memory.max")) {
            if let Some(u) = bytes_of(&u) {
                levels.push((u, bytes_of(&m)));
            }
        }
        if !d.pop() {
            break;
        }
    }
    levels
}

/// @parent canonicalized, if it is strictly below @root (canonicalized).
fn canonical_below(root: &Path, parent: &Path) -> std::result::Result<PathBuf, String> {
    let root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
    let parent = parent.canonicalize().map_err(|e| format!("{}: {e}", parent.display()))?;
    if parent == root || !parent.starts_with(&root) {
        return Err(format!("{} is not below {}", parent.display(), root.display()));
    }
    Ok(parent)
}

/// The canonical directory of session @name, if it is directly inside the
/// canonical @parent (no link or ".." leads elsewhere).
fn session_dir(parent: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    if !single(name) {
        return Err(format!("session {name:?}: not a plain name"));
    }
    let d = parent.join(name).canonicalize().map_err(|e| format!("{name}: {e}"))?;
    if d.parent() != Some(parent) {
        return Err(format!("{}: not directly below {}", d.display(), parent.display()));
    }
    Ok(d)
}

/// Reclaims of frozen sessions, shared between the loop and the reclaim
/// thread.
#[derive(Default)]
struct ReclaimQueue {
    /// first frozen, first reclaimed
    pending: VecDeque<String>,
    /// queued or being reclaimed: the loop makes no "stuck" kill meanwhile
    busy: BTreeSet<String>,
    /// thawed or killed after they were queued: stop there
    cancelled: BTreeSet<String>,
}

type Reclaims = Arc<(Mutex<ReclaimQueue>, Condvar)>;

/// The reclaim thread: one session at a time, [`RECLAIM_STEP`] per write
/// (a write returns when the kernel is done, which may take seconds), each
/// asking only for what still brings the shared limit down to
/// [`reclaim_line_pct`]. It runs at normal priority: the room it makes is
/// what the running sessions wait for (at the limit they would reclaim,
/// compress into zram, in their own context; at nice 19 in the first zram
/// run of this design two 16 MiB writes took 19 s).
struct Reclaimer {
    root: PathBuf,
    parent: PathBuf,
    parent_rel: String,
    cfg: MemoryConfig,
    stats: Arc<Mutex<ArbitrationStats>>,
    q: Reclaims,
}

impl Reclaimer {
    fn run(self, stop: Arc<AtomicBool>) {
        let (lock, cv) = &*self.q;
        while !stop.load(Ordering::Relaxed) {
            let next = {
                let Ok(mut q) = lock.lock() else { return };
                if q.pending.is_empty() {
                    let _ = cv.wait_timeout(q, Duration::from_millis(100));
                    continue;
                }
                q.pending.pop_front()
            };
            let Some(name) = next else { continue };
            self.reclaim_one(&name, &stop);
            if let Ok(mut q) = lock.lock() {
                q.busy.remove(&name);
                q.cancelled.remove(&name);
            }
        }
    }

    fn cancelled(&self, name: &str) -> bool {
        self.q.0.lock().map_or(true, |q| q.cancelled.contains(name))
    }

    fn reclaim_one(&self, name: &str, stop: &AtomicBool) {
        // the target is checked like every other write
        let Ok(parent) = canonical_below(&self.root, &self.parent) else { return };
        let Ok(dir) = session_dir(&parent, name) else { return };
        let Ok(root) = self.root.canonicalize() else { return };
        let usage = || read(&dir, "memory.current").and_then(|t| bytes_of(&t)).unwrap_or(0);
        let before = usage();
        let (mut steps, mut why) = (0u32, "");
        // never more writes than the session's memory takes (a kernel that
        // reports success without lowering the usage cannot loop us)
        let most = (before / RECLAIM_STEP) as u32 + 2;
        loop {
            if steps >= most {
                why = " (as many writes as the session's memory takes)";
                break;
            }
            if stop.load(Ordering::Relaxed) || self.cancelled(name) {
                why = " (stopped: the session was resumed or killed)";
                break;
            }
            let step = reclaim_step(&self.cfg, &path_levels(&root, &parent), usage());
            if step == 0 {
                break;
            }
            let res = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("memory.reclaim"))
                .and_then(|mut f| f.write_all(step.to_string().as_bytes()));
            steps += 1;
            match res {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    why = " (the kernel found no more to push out)";
                    break;
                }
                Err(e) => {
                    warn!("mem-arbitration: session {}/{name}: memory.reclaim: {e}", self.parent_rel);
                    why = " (memory.reclaim failed)";
                    break;
                }
            }
        }
        if steps == 0 {
            return; // the others had room already
        }
        let after = usage();
        // what the writes asked for at most: the session may also have
        // freed memory itself (its tasks exited) meanwhile
        let freed = before.saturating_sub(after).min(steps as u64 * RECLAIM_STEP);
        info!(
            "mem-arbitration: session {}/{name}: memory.reclaim pushed out {} MiB ({} -> {} MiB, {steps} writes of at most {} MiB, \
             towards {} % of the shared limit){why}",
            self.parent_rel,
            freed >> 20,
            before >> 20,
            after >> 20,
            RECLAIM_STEP >> 20,
            reclaim_line_pct(&self.cfg),
        );
        if let Ok(mut st) = self.stats.lock() {
            st.reclaims += 1;
            st.reclaimed_bytes += freed;
        }
    }
}

/// Is there swap space with room left (/proc/meminfo SwapFree)?
fn swap_free() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("SwapFree:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .is_some_and(|kb| kb > 0)
}

impl Arbiter {
    pub fn new(
        cgroot: PathBuf,
        parent_rel: &str,
        cfg: MemoryConfig,
        policy: Arc<Mutex<Policy>>,
        maps: Maps,
    ) -> Result<Self> {
        if let Some((_, m)) = cfg.problems().into_iter().next() {
            bail!("--mem-arbitration: [memory]: {m}");
        }
        let rel = parent_rel.trim_matches('/').to_string();
        if rel.is_empty() || !Path::new(&rel).components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("--mem-arbitration: the managed parent must be a plain path below the cgroup root, not {parent_rel:?}");
        }
        Ok(Arbiter {
            parent: cgroot.join(&rel),
            root: cgroot,
            parent_rel: rel,
            cfg,
            policy,
            maps,
            sessions: BTreeMap::new(),
            order: Vec::new(),
            dstate: DecideState::default(),
            stats: Arc::new(Mutex::new(ArbitrationStats::default())),
            reclaims: Arc::default(),
            swap: false,
            parent_low: 0,
            parent_min: 0,
            start: Instant::now(),
            ktime0: crate::cgroups::monotonic_ns(),
        })
    }

    pub fn stats_handle(&self) -> Arc<Mutex<ArbitrationStats>> {
        self.stats.clone()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn canonical_parent(&self) -> std::result::Result<PathBuf, String> {
        canonical_below(&self.root, &self.parent)
    }

    /// Write @value to @file of session @name (None: of the managed parent).
    fn write(&self, name: Option<&str>, file: &str, value: &str) -> std::result::Result<(), String> {
        if !single(file) || name.is_some_and(|n| !single(n)) {
            return Err(format!("refusing to write {file:?} of {name:?}: not a plain name"));
        }
        let parent = self.canonical_parent()?;
        let dir = match name {
            Some(n) => session_dir(&parent, n).map_err(|e| format!("refusing to write {file}: {e}"))?,
            None => parent,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.join(file))
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| format!("writing {value:?} to {}: {e}", dir.join(file).display()))
    }

    fn note_error(&self, what: String) {
        warn!("mem-arbitration: {what}");
        if let Ok(mut s) = self.stats.lock() {
            s.errors += 1;
        }
    }

    fn class_of(&self, name: &str) -> Option<StepClass> {
        let p = self.policy.lock().ok()?;
        let i = p.resolve(&format!("{}/{name}", self.parent_rel), Some(name), None)?;
        Some(p.profiles[i].class)
    }

    /// The budget of session @name's profile (protect_low), else [memory]'s.
    fn budget_of(&self, name: &str) -> Option<u64> {
        let p = self.policy.lock().ok()?;
        let i = p.resolve(&format!("{}/{name}", self.parent_rel), Some(name), None);
        i.and_then(|i| p.profiles[i].protect_low).or(self.cfg.protect_low)
    }

    /// Sessions that appeared or went away; classes after a policy change.
    fn scan(&mut self) {
        // a reloaded policy's [memory] applies from here on
        if let Some(cfg) = self.policy.lock().ok().map(|p| p.memory.clone()) {
            self.cfg = cfg;
        }
        let mut seen = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.parent) {
            for e in rd.flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let Ok(name) = e.file_name().into_string() else { continue };
                seen.push(name);
            }
        }
        // a session that is gone leaves no mode behind in BPF (the map is bounded)
        let gone: Vec<u64> = self.sessions.iter().filter(|(n, _)| !seen.contains(n)).map(|(_, s)| s.cgid).collect();
        for cgid in gone {
            let _ = self.maps.mem_ctls.delete(&cgid.to_ne_bytes());
        }
        self.sessions.retain(|n, _| seen.contains(n));
        for name in seen {
            let class = self.class_of(&name);
            if let Some(s) = self.sessions.get_mut(&name) {
                s.class = class;
                continue;
            }
            let path = self.parent.join(&name);
            let Ok(dir) = File::open(&path) else { continue };
            // a cgroup's id is its directory's inode number
            let Ok(meta) = dir.metadata() else { continue };
            let cgid = std::os::unix::fs::MetadataExt::ino(&meta);
            self.sessions.insert(
                name,
                Sess {
                    dir,
                    cgid,
                    class,
                    frozen_since: None,
                    killing: false,
                    populated: true,
                    held_since: None,
                    nr_holds: 0,
                    held_ns: 0,
                    reacted_hold: 0,
                    mode: 0,
                    low: 0,
                    min: 0,
                    oom_group_set: false,
                    oom_orig: BTreeMap::new(),
                },
            );
        }
        let list: Vec<(String, Option<StepClass>, u64)> =
            self.sessions.iter().map(|(n, s)| (n.clone(), s.class, s.cgid)).collect();
        let order = pause_order(&list);
        if order != self.order {
            for i in 0..bpf_intf::agentcg_consts_AGENTCG_MEM_MAX_SESSIONS {
                let cgid = order.get(i as usize).and_then(|n| self.sessions.get(n)).map(|s| s.cgid).unwrap_or(0);
                if let Err(e) = self.maps.mem_order.update(&i.to_ne_bytes(), &cgid.to_ne_bytes(), MapFlags::ANY) {
                    self.note_error(format!("pause order: {e}"));
                }
            }
            self.order = order;
        }
    }

    /// BPF's view of each session (held, since when, how often), and the
    /// reaction time of new holds.
    fn read_bpf(&mut self) {
        let now = self.now_ms();
        let (mut reactions, mut stops) = (Vec::new(), Vec::new());
        let ktime0 = self.ktime0;
        for s in self.sessions.values_mut() {
            let key = s.dir.as_raw_fd().to_ne_bytes();
            let Ok(Some(v)) = self.maps.cgrp_ctxs.lookup(&key, MapFlags::ANY) else { continue };
            if v.len() < std::mem::size_of::<bpf_intf::cgrp_ctx>() {
                continue;
            }
            // SAFETY: the value is a struct cgrp_ctx (plain integers).
            let c: bpf_intf::cgrp_ctx = unsafe { std::ptr::read_unaligned(v.as_ptr() as *const bpf_intf::cgrp_ctx) };
            s.held_since = (c.mem_held != 0).then(|| c.mem_held_at.saturating_sub(ktime0) / 1_000_000);
            s.nr_holds = c.mem_nr_holds;
            s.held_ns = c.mem_held_ns;
            // a hold 100 ms old (or over): how long it took to stop the growth
            if c.mem_nr_holds > s.reacted_hold && c.mem_crossed_at > 0 {
                let held_for = if c.mem_held != 0 { now.saturating_sub(s.held_since.unwrap_or(now)) } else { 100 };
                if held_for >= 100 {
                    let (reaction, stop) =
                        hold_timing(c.mem_crossed_at, c.mem_held_at, c.mem_grew_at, c.mem_first_hold != 0);
                    reactions.extend(reaction);
                    stops.push(stop);
                    s.reacted_hold = c.mem_nr_holds;
                }
            }
        }
        if let Ok(mut st) = self.stats.lock() {
            let st = &mut *st;
            st.reactions_us.extend(reactions);
            st.stops_us.extend(stops);
            for v in [&mut st.reactions_us, &mut st.stops_us] {
                let n = v.len();
                if n > 256 {
                    v.drain(..n - 256);
                }
            }
        }
    }

    /// The fill of the managed parent's path (its memory.max and each
    /// ancestor's), permille.
    fn fill(&self) -> u32 {
        fill_permille(&path_levels(&self.root, &self.parent))
    }

    /// The shared limit: the smallest memory.max on the parent's path, else RAM.
    fn shared_limit(&self) -> u64 {
        let mut lim = u64::MAX;
        let mut d = self.parent.clone();
        while d.starts_with(&self.root) && d != self.root {
            if let Some(m) = read(&d, "memory.max").and_then(|t| bytes_of(&t)) {
                lim = lim.min(m);
            }
            if !d.pop() {
                break;
            }
        }
        if lim == u64::MAX {
            lim = crate::memory_total_bytes();
        }
        lim
    }

    fn set_mode(&mut self, name: &str, mode: u32) {
        let Some(s) = self.sessions.get(name) else { return };
        if s.mode == mode {
            return;
        }
        let ctl = bpf_intf::mem_ctl { mode, rank: 0 };
        // SAFETY: plain integers, the exact size of the value.
        let bytes = unsafe { std::slice::from_raw_parts(&ctl as *const _ as *const u8, std::mem::size_of_val(&ctl)) };
        match self.maps.mem_ctls.update(&s.cgid.to_ne_bytes(), bytes, MapFlags::ANY) {
            Ok(()) => {
                if let Some(s) = self.sessions.get_mut(name) {
                    s.mode = mode;
                }
            }
            Err(e) => self.note_error(format!("session {name}: {e}")),
        }
    }

    fn act(&mut self, a: Act, now: u64) {
        let rel = |n: &str| format!("{}/{n}", self.parent_rel);
        if let Act::Thaw(n) | Act::Kill(n, _) = &a {
            // a session that runs again, or dies, is not pushed out further
            self.cancel_reclaim(n);
        }
        match a {
            Act::Freeze(n) => match self.write(Some(&n), "cgroup.freeze", "1") {
                Ok(()) => {
                    info!(
                        "mem-arbitration: session {} frozen after a {} ms pause (the shared limit is still tight)",
                        rel(&n),
                        self.cfg.freeze_after_ms
                    );
                    if let Some(s) = self.sessions.get_mut(&n) {
                        s.frozen_since = Some(now);
                    }
                    // its tasks must run once more to enter the freezer
                    self.set_mode(&n, bpf_intf::agentcg_consts_AGENTCG_MEM_RUN);
                    if let Ok(mut st) = self.stats.lock() {
                        st.frozen += 1;
                    }
                }
                Err(e) => self.note_error(format!("session {n}: {e}")),
            },
            Act::Reclaim(n) => self.reclaim(&n),
            Act::Thaw(n) => match self.write(Some(&n), "cgroup.freeze", "0") {
                Ok(()) => {
                    info!("mem-arbitration: session {} resumed (headroom is back)", rel(&n));
                    if let Some(s) = self.sessions.get_mut(&n) {
                        s.frozen_since = None;
                    }
                    self.set_mode(&n, bpf_intf::agentcg_consts_AGENTCG_MEM_CANDIDATE);
                    if let Ok(mut st) = self.stats.lock() {
                        st.thawed += 1;
                    }
                }
                Err(e) => self.note_error(format!("session {n}: {e}")),
            },
            Act::Kill(n, why) => match self.write(Some(&n), "cgroup.kill", "1") {
                Ok(()) => {
                    warn!("mem-arbitration: session {} killed: {why}", rel(&n));
                    if let Some(s) = self.sessions.get_mut(&n) {
                        s.killing = true;
                    }
                    // a frozen or held task must run to die
                    self.set_mode(&n, bpf_intf::agentcg_consts_AGENTCG_MEM_RUN);
                    let _ = self.write(Some(&n), "cgroup.freeze", "0");
                    if let Ok(mut st) = self.stats.lock() {
                        st.killed += 1;
                    }
                }
                Err(e) => self.note_error(format!("session {n}: {e}")),
            },
        }
    }

    /// Queue a frozen session for the reclaim thread (once).
    fn reclaim(&mut self, name: &str) {
        if !self.sessions.contains_key(name) || !single(name) {
            return;
        }
        let (lock, cv) = &*self.reclaims;
        if let Ok(mut q) = lock.lock() {
            q.cancelled.remove(name);
            if q.busy.insert(name.to_string()) {
                q.pending.push_back(name.to_string());
                cv.notify_one();
            }
        }
    }

    /// @name was thawed or killed: a reclaim of it stops.
    fn cancel_reclaim(&self, name: &str) {
        if let Ok(mut q) = self.reclaims.0.lock() {
            if q.busy.contains(name) {
                q.cancelled.insert(name.to_string());
            }
        }
    }

    /// memory.low / memory.min of interactive sessions, and their sum on
    /// the managed parent.
    fn protect(&mut self) {
        let interactive: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.class == Some(StepClass::Interactive) && !s.killing)
            .map(|(n, _)| n.clone())
            .collect();
        let total = self.shared_limit().saturating_mul(self.cfg.protect_total_pct as u64) / 100;
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        let (mut sum_low, mut sum_min) = (0u64, 0u64);
        for n in names {
            let (low, _) = if interactive.contains(&n) {
                let per = self.budget_of(&n).unwrap_or(0);
                let budget = session_budget(total, per, interactive.len());
                let usage = read(&self.parent.join(&n), "memory.current").and_then(|t| bytes_of(&t)).unwrap_or(0);
                protection(usage, budget, self.cfg.protect_headroom_pct, self.cfg.protect_min_pct)
            } else {
                (0, 0)
            };
            let Some(s) = self.sessions.get(&n) else { continue };
            let (old_low, old_min) = (s.low, s.min);
            // memory.low moves in steps; memory.min always follows it (a
            // step of low could be less than a step of min)
            let (low, min) = protection_update(old_low, low, self.cfg.protect_min_pct);
            // the parent's sum grows before a child's value, shrinks after
            if low != old_low || min != old_min {
                let mut ok = true;
                for (file, v, old) in [("memory.min", min, old_min), ("memory.low", low, old_low)] {
                    if v != old {
                        if let Err(e) = self.write(Some(&n), file, &v.to_string()) {
                            self.note_error(format!("session {n}: {e}"));
                            ok = false;
                        }
                    }
                }
                if ok {
                    if low > 0 && old_low == 0 {
                        info!(
                            "mem-arbitration: session {}/{n} protected: memory.low {} MiB, memory.min {} MiB",
                            self.parent_rel,
                            low >> 20,
                            min >> 20
                        );
                    } else if low == 0 && old_low > 0 {
                        info!("mem-arbitration: session {}/{n}: protection withdrawn", self.parent_rel);
                    }
                    if let Some(s) = self.sessions.get_mut(&n) {
                        s.low = low;
                        s.min = min;
                    }
                }
            }
            if let Some(s) = self.sessions.get(&n) {
                sum_low += s.low;
                sum_min += s.min;
            }
        }
        for (file, v) in [("memory.min", sum_min), ("memory.low", sum_low)] {
            let old = if file == "memory.low" { self.parent_low } else { self.parent_min };
            if v != old {
                match self.write(None, file, &v.to_string()) {
                    Ok(()) => {
                        if file == "memory.low" {
                            self.parent_low = v;
                        } else {
                            self.parent_min = v;
                        }
                    }
                    Err(e) => self.note_error(format!("managed parent: {e}")),
                }
            }
        }
    }

    /// The tasks of a session (its cgroup and every one below it).
    fn pids_of(dir: &Path) -> Vec<i32> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if let Some(t) = read(&d, "cgroup.procs") {
                out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
        }
        out
    }

    /// oom_score_adj of every task of pausable sessions, memory.oom.group
    /// of those sessions (what they were is kept, for exit).
    fn oom_prefs(&mut self) {
        if !self.cfg.oom_prefer_background {
            return;
        }
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for n in names {
            let Some(s) = self.sessions.get(&n) else { continue };
            let want = oom_score_adj(s.class);
            let (group_set, dir) = (s.oom_group_set, self.parent.join(&n));
            if want.is_some() != group_set {
                match self.write(Some(&n), "memory.oom.group", if want.is_some() { "1" } else { "0" }) {
                    Ok(()) => {
                        if let Some(s) = self.sessions.get_mut(&n) {
                            s.oom_group_set = want.is_some();
                        }
                    }
                    Err(e) => self.note_error(format!("session {n}: {e}")),
                }
            }
            for pid in Self::pids_of(&dir) {
                let f = format!("/proc/{pid}/oom_score_adj");
                let Some(cur) = std::fs::read_to_string(&f).ok().and_then(|t| t.trim().parse::<i32>().ok()) else {
                    continue;
                };
                let Some(s) = self.sessions.get_mut(&n) else { break };
                let target = match want {
                    Some(w) => w,
                    None => match s.oom_orig.get(&pid) {
                        Some(o) => *o,
                        None => continue,
                    },
                };
                if cur == target {
                    continue;
                }
                s.oom_orig.entry(pid).or_insert(cur);
                if want.is_none() {
                    s.oom_orig.remove(&pid);
                }
                let _ = std::fs::write(&f, target.to_string());
            }
        }
    }

    /// One pass at @now (ms on the loop's clock); returns the time to the
    /// next pass (ms, [`tick_ms`]).
    pub fn tick(&mut self, now: u64, slow: bool) -> u64 {
        if slow {
            self.scan();
            self.swap = swap_free();
        }
        self.read_bpf();
        // a session that runs again (BPF released it) is not pushed out further
        let running: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.held_since.is_none() && s.frozen_since.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for n in &running {
            self.cancel_reclaim(n);
        }
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for n in &names {
            let killing = self.sessions.get(n).is_some_and(|s| s.killing);
            if killing || slow {
                let populated = read(&self.parent.join(n), "cgroup.events")
                    .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
                    .unwrap_or(false);
                if let Some(s) = self.sessions.get_mut(n) {
                    s.populated = populated;
                }
                if killing && !populated {
                    // the kill is done: later steps of the session start unfrozen
                    if let Some(s) = self.sessions.get_mut(n) {
                        s.killing = false;
                        s.frozen_since = None;
                    }
                    let _ = self.write(Some(n), "cgroup.freeze", "0");
                    self.set_mode(n, bpf_intf::agentcg_consts_AGENTCG_MEM_CANDIDATE);
                }
            }
        }
        let queue = self.reclaims.0.lock().ok();
        let views: Vec<SessionView> = self
            .sessions
            .iter()
            .map(|(n, s)| SessionView {
                name: n.clone(),
                pausable: self.order.contains(n),
                held_since: s.held_since,
                frozen_since: s.frozen_since,
                killing: s.killing,
                populated: s.populated,
                reclaiming: queue.as_ref().is_some_and(|q| q.busy.contains(n)),
            })
            .collect();
        drop(queue);
        let kept = if self.cfg.keep_one_running { kept_running(&self.order, &views) } else { None };
        // BPF may hold every pausable session that is running normally,
        // but the one that must keep running
        for n in &names {
            let s = &self.sessions[n];
            let mode = if s.frozen_since.is_some() || s.killing || !self.order.contains(n) || kept.as_ref() == Some(n) {
                bpf_intf::agentcg_consts_AGENTCG_MEM_RUN
            } else {
                bpf_intf::agentcg_consts_AGENTCG_MEM_CANDIDATE
            };
            self.set_mode(n, mode);
        }
        let fill = self.fill();
        let next = tick_ms(&self.cfg, fill, &views);
        let acts = decide(&self.cfg, now, fill, self.swap, &self.order, &views, &mut self.dstate);
        for a in acts {
            self.act(a, now);
        }
        if slow {
            self.protect();
            self.oom_prefs();
        }
        self.publish(fill);
        next
    }

    fn publish(&self, fill: u32) {
        let Ok(mut st) = self.stats.lock() else { return };
        st.fill_permille = fill as u64;
        st.swap = self.swap;
        st.holds = self.sessions.values().map(|s| s.nr_holds).sum::<u64>().max(st.holds);
        st.sessions = self
            .sessions
            .iter()
            .map(|(n, s)| {
                let state = if s.killing {
                    "killing"
                } else if s.frozen_since.is_some() {
                    "frozen"
                } else if s.held_since.is_some() {
                    "held"
                } else {
                    "running"
                };
                (
                    n.clone(),
                    ArbSession {
                        state: state.to_string(),
                        class: s.class.map(|c| c.as_str()).unwrap_or("none").to_string(),
                        low_bytes: s.low,
                        min_bytes: s.min,
                        holds: s.nr_holds,
                        held_ms: s.held_ns / 1_000_000,
                    },
                )
            })
            .collect();
    }

    /// On exit: thaw what was frozen, withdraw protection, put oom_score_adj
    /// and memory.oom.group back.
    pub fn release_all(&mut self) {
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for n in names {
            let Some(s) = self.sessions.get(&n) else { continue };
            let (frozen, low, min, group, orig) =
                (s.frozen_since.is_some() || s.killing, s.low, s.min, s.oom_group_set, s.oom_orig.clone());
            if frozen {
                match self.write(Some(&n), "cgroup.freeze", "0") {
                    Ok(()) => info!("mem-arbitration: session {}/{n} thawed on exit", self.parent_rel),
                    Err(e) => self.note_error(format!("session {n}: {e}")),
                }
            }
            for (file, v) in [("memory.low", low), ("memory.min", min)] {
                if v > 0 {
                    let _ = self.write(Some(&n), file, "0");
                }
            }
            if group {
                let _ = self.write(Some(&n), "memory.oom.group", "0");
            }
            for (pid, v) in orig {
                let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), v.to_string());
            }
        }
        for (file, v) in [("memory.low", self.parent_low), ("memory.min", self.parent_min)] {
            if v > 0 {
                let _ = self.write(None, file, "0");
            }
        }
    }

    /// Run the loop on a thread until @stop; then [`Self::release_all`].
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
        if self.cfg.pause && self.cfg.reclaim {
            let r = Reclaimer {
                root: self.root.clone(),
                parent: self.parent.clone(),
                parent_rel: self.parent_rel.clone(),
                cfg: self.cfg.clone(),
                stats: self.stats.clone(),
                q: self.reclaims.clone(),
            };
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("mem-reclaim".into())
                .spawn(move || r.run(stop))
                .context("starting the memory reclaim thread")?;
        }
        std::thread::Builder::new()
            .name("mem-arbitration".into())
            .spawn(move || {
                let mut next_slow = 0;
                while !stop.load(Ordering::Relaxed) {
                    let now = self.now_ms();
                    let slow = now >= next_slow;
                    if slow {
                        next_slow = now + 250;
                    }
                    let next = self.tick(now, slow);
                    std::thread::sleep(Duration::from_millis(next));
                }
                self.release_all();
            })
            .context("starting the memory arbitration thread")
    }
}
