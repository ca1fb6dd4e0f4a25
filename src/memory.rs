// SPDX-License-Identifier: GPL-2.0-only
//! Memory arbitration between agent sessions on mainline kernels
//! (`--mem-arbitration`, the `[memory]` table of the policy file).
//!
//! The sessions are the direct children of the managed parent; the parent
//! (or an ancestor of it) carries the `memory.max` they share. Three
//! mechanisms act together:
//!
//! - **Protection.** A session whose profile is of the interactive class
//!   gets `memory.low` = its usage plus `protect_headroom_pct`, at most its
//!   budget (the profile's `protect_low`, else `[memory] protect_low`, and
//!   together no more than `protect_total_pct` of the shared limit), and
//!   `memory.min` = `protect_min_pct` of that. The managed parent gets the
//!   sum, since protection below a parent without any is worth nothing
//!   (cgroup2 without `memory_recursiveprot`). Both are withdrawn (0) when
//!   the session leaves the class or ends, and on exit.
//! - **Pause, don't kill.** BPF (src/bpf/memory.bpf.h) polls the parent's
//!   fill every `poll_us` and, at `guard_pct` of the limit, holds back the
//!   first session of the pause order (background before tool before
//!   unclassified, youngest first; interactive sessions are never paused)
//!   the way cpu.max throttling does, so it stops allocating within a tick.
//!   With swap a held session's memory is pushed out (`memory.reclaim`) at
//!   once while the fill is at the guard line, so the others can use the
//!   room: only what brings the shared limit to [`reclaim_line_pct`], one
//!   session at a time. A hold that lasts `freeze_after_ms` becomes a
//!   `cgroup.freeze`. Below `resume_pct` holds are released and frozen
//!   sessions thawed, oldest first, one per `pause_gap_ms`. With no
//!   interactive session running, the oldest pausable session is never
//!   paused (`keep_one_running`, [`kept_running`]): pausing them all would
//!   protect nobody and let nothing finish.
//! - **The last resort.** Without swap room, at `kill_pct` with every
//!   pausable session paused (the kept one aside), or when every
//!   session has been paused above `resume_pct` for `kill_after_ms` (none
//!   can finish and free memory; resuming one would pause it again), the
//!   youngest paused session is killed with `cgroup.kill`, logged with the reason,
//!   before the kernel's OOM killer would have to act. Should the kernel's
//!   OOM killer still act, it prefers background sessions: their tasks get
//!   `oom_score_adj` 1000 (500 for tool and unclassified sessions), and
//!   their `memory.oom.group` is set so a kill takes the whole session.
//!   Both are put back on exit.
//!
//! The rules are pure functions below ([`protection`], [`pause_order`],
//! [`decide`]); the loop that reads and writes the cgroup files is in
//! src/memory/arbiter.rs.

pub mod arbiter;

use crate::policy::StepClass;

/// The `[memory]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// hold background sessions back near the limit
    pub pause: bool,
    /// percent of the shared memory.max: pause from here
    pub guard_pct: u32,
    /// resume below this
    pub resume_pct: u32,
    /// kill the youngest paused session from here, as the last resort
    pub kill_pct: u32,
    /// between two pauses, and between two resumes
    pub pause_gap_ms: u64,
    /// a BPF hold becomes cgroup.freeze after this
    pub freeze_after_ms: u64,
    /// with swap: push a frozen session's memory out (memory.reclaim)
    pub reclaim: bool,
    /// with swap: at kill_pct this long before a kill
    pub kill_after_ms: u64,
    /// BPF poll period of the guard
    pub poll_us: u64,
    /// memory.low = usage + this percentage, within the budget
    pub protect_headroom_pct: u32,
    /// memory.min = this percentage of memory.low
    pub protect_min_pct: u32,
    /// all interactive sessions' memory.low together: at most this
    /// percentage of the shared limit (or of RAM)
    pub protect_total_pct: u32,
    /// per-session budget where the profile gives no protect_low
    pub protect_low: Option<u64>,
    /// oom_score_adj and memory.oom.group for pausable sessions
    pub oom_prefer_background: bool,
    /// with no interactive session running, never pause the oldest
    /// pausable one ([`kept_running`])
    pub keep_one_running: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            pause: true,
            guard_pct: 90,
            resume_pct: 80,
            kill_pct: 97,
            pause_gap_ms: 100,
            freeze_after_ms: 1000,
            reclaim: true,
            kill_after_ms: 3000,
            poll_us: 1000,
            protect_headroom_pct: 25,
            protect_min_pct: 50,
            protect_total_pct: 50,
            protect_low: Some(256 << 20),
            oom_prefer_background: true,
            keep_one_running: true,
        }
    }
}

/// The longest dwell time `[memory]` accepts (a minute: a held session must
/// be frozen well within the sched_ext watchdog's 30 s, and BPF releases a
/// hold after [`HOLD_MAX_MS`] whatever userspace does).
pub const MAX_MEMORY_DWELL_MS: u64 = 60_000;
/// No BPF hold lasts longer than this.
pub const HOLD_MAX_MS: u64 = 5000;
/// A hold released at [`HOLD_MAX_MS`] is not renewed for this long.
pub const HOLD_REST_MS: u64 = 200;
/// memory.low / memory.min are rewritten only when they move this much.
pub const PROTECT_STEP: u64 = 4 << 20;

impl MemoryConfig {
    /// Every problem: (keys involved, the first the one to change; message).
    pub fn problems(&self) -> Vec<(&'static [&'static str], String)> {
        let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
        if self.resume_pct >= self.guard_pct {
            out.push((
                &["resume_pct", "guard_pct"],
                format!(
                    "resume_pct = {} must be below guard_pct = {} (the gap keeps sessions from flapping between paused and running)",
                    self.resume_pct, self.guard_pct
                ),
            ));
        }
        if self.kill_pct <= self.guard_pct {
            out.push((
                &["kill_pct", "guard_pct"],
                format!(
                    "kill_pct = {} must be above guard_pct = {}: sessions are paused before any is killed",
                    self.kill_pct, self.guard_pct
                ),
            ));
        }
        if self.freeze_after_ms >= HOLD_MAX_MS {
            out.push((
                &["freeze_after_ms"],
                format!(
                    "freeze_after_ms = {} must be below {HOLD_MAX_MS}: the scheduler releases a hold after {HOLD_MAX_MS} ms \
                     (the sched_ext watchdog allows a runnable task 30 s), so a longer pause must be a freeze",
                    self.freeze_after_ms
                ),
            ));
        }
        out
    }

    /// The shared thresholds in permille, as BPF compares them.
    pub fn permille(pct: u32) -> u32 {
        pct * 10
    }
}

/// memory.low and memory.min of an interactive session using @usage bytes
/// with @budget bytes: usage plus @headroom_pct, rounded up to
/// [`PROTECT_STEP`], at most the budget; min is @min_pct of that (pages).
pub fn protection(usage: u64, budget: u64, headroom_pct: u32, min_pct: u32) -> (u64, u64) {
    let want = usage.saturating_mul(100 + headroom_pct as u64) / 100;
    let want = want.div_ceil(PROTECT_STEP).saturating_mul(PROTECT_STEP);
    let low = want.min(budget);
    (low, protection_min(low, min_pct))
}

/// What to write for a session protected with @old_low now that
/// [`protection`] asks for @want_low: memory.low moves only in steps
/// ([`protection_moved`]); memory.min always follows the memory.low kept,
/// so it stays @min_pct of it (a step of low can be less than a step of min).
pub fn protection_update(old_low: u64, want_low: u64, min_pct: u32) -> (u64, u64) {
    let low = if protection_moved(old_low, want_low) { want_low } else { old_low };
    (low, protection_min(low, min_pct))
}

/// memory.min for a memory.low of @low: @min_pct of it, in whole pages.
pub fn protection_min(low: u64, min_pct: u32) -> u64 {
    (low.saturating_mul(min_pct as u64) / 100) & !4095
}

/// Whether a protection value @old is worth rewriting as @new.
pub fn protection_moved(old: u64, new: u64) -> bool {
    (old == 0) != (new == 0) || old.abs_diff(new) >= PROTECT_STEP || (new < old && new == 0)
}

/// Each interactive session's budget: @per, and together at most @total.
pub fn session_budget(total: u64, per: u64, n_interactive: usize) -> u64 {
    if n_interactive == 0 {
        0
    } else {
        per.min(total / n_interactive as u64)
    }
}

/// Where a session stands in the pause order: None for interactive ones
/// (never paused); lower classes first.
pub fn class_rank(class: Option<StepClass>) -> Option<u32> {
    match class {
        Some(StepClass::Interactive) => None,
        Some(StepClass::Background) => Some(0),
        Some(StepClass::Tool) => Some(1),
        None => Some(2),
    }
}

/// The oom_score_adj for the tasks of a session of @class (None: leave them).
pub fn oom_score_adj(class: Option<StepClass>) -> Option<i32> {
    match class_rank(class)? {
        0 => Some(1000),
        _ => Some(500),
    }
}

/// The pause order of (name, class, cgroup id) sessions: pausable ones
/// only, lowest class first, then youngest (the highest cgroup id: ids
/// grow with every cgroup made).
pub fn pause_order(sessions: &[(String, Option<StepClass>, u64)]) -> Vec<String> {
    let mut v: Vec<(u32, u64, &String)> = sessions
        .iter()
        .filter_map(|(n, c, id)| class_rank(*c).map(|r| (r, *id, n)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    v.into_iter().map(|(_, _, n)| n.clone()).collect()
}

/// The highest usage / limit of (usage, limit) pairs, permille; a limit of
/// None is "max".
pub fn fill_permille(levels: &[(u64, Option<u64>)]) -> u32 {
    levels
        .iter()
        .filter_map(|(u, l)| l.filter(|l| *l > 0).map(|l| (u.saturating_mul(1000) / l).min(u32::MAX as u64) as u32))
        .max()
        .unwrap_or(0)
}

/// One `memory.reclaim` write asks for at most this much: between two
/// writes the reclaimer looks again at what is still needed.
pub const RECLAIM_STEP: u64 = 16 << 20;

/// The fill (percent of the limit) a reclaim of frozen sessions aims at:
/// the resume line less the band between it and the guard line, so that
/// the session thawed next has that band to grow in before the guard
/// pauses anything again.
pub fn reclaim_line_pct(cfg: &MemoryConfig) -> u32 {
    cfg.resume_pct.saturating_sub(cfg.guard_pct.saturating_sub(cfg.resume_pct))
}

/// The next `memory.reclaim` request for a frozen session using
/// @session_usage bytes, with (usage, limit) of each level of the shared
/// path in @levels (None: "max"): what brings the fullest level down to
/// [`reclaim_line_pct`], at most [`RECLAIM_STEP`] and at most what the
/// session has. 0: nothing more is needed. Pushing out only what the
/// others need costs less CPU (with zram every page is compressed) and the
/// session less to fault back in than pushing out all of it.
pub fn reclaim_step(cfg: &MemoryConfig, levels: &[(u64, Option<u64>)], session_usage: u64) -> u64 {
    let line = reclaim_line_pct(cfg) as u64;
    let need = levels
        .iter()
        .filter_map(|(u, l)| l.filter(|l| *l > 0).map(|l| u.saturating_sub(l / 100 * line)))
        .max()
        .unwrap_or(0);
    need.min(RECLAIM_STEP).min(session_usage)
}

/// The timing of one BPF hold (ktime ns): the guard line crossed at
/// @crossed, the hold at @held, the held session's usage last seen to grow
/// at @grew (0: never after the hold), @first if BPF made no other hold
/// since the crossing. Returns the reaction time (line crossed to the
/// session's allocations stopping, us) for that first hold of an episode,
/// None for later holds of the same episode (made one gap later, or at
/// once while the fill still rose, by design), and the time from the hold
/// to the stop (us) for every hold.
pub fn hold_timing(crossed: u64, held: u64, grew: u64, first: bool) -> (Option<u64>, u64) {
    let stop = grew.max(held);
    (first.then(|| stop.saturating_sub(crossed) / 1000), (stop - held) / 1000)
}

/// A session as [`decide`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    pub name: String,
    /// in the pause order (pausable)
    pub pausable: bool,
    /// BPF holds it, since (ms, the arbiter's clock)
    pub held_since: Option<u64>,
    /// the arbiter froze it, at
    pub frozen_since: Option<u64>,
    /// the arbiter killed it and it still has tasks
    pub killing: bool,
    pub populated: bool,
    /// a memory.reclaim of it is still being written (swap is making room)
    pub reclaiming: bool,
}

/// What [`decide`] asks the arbiter to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    Freeze(String),
    Reclaim(String),
    Thaw(String),
    Kill(String, String),
}

/// What [`decide`] remembers between ticks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideState {
    pub last_thaw_ms: Option<u64>,
    /// the fill has been at kill_pct or more since
    pub over_kill_since: Option<u64>,
    /// every session has been paused (above resume_pct) since
    pub stuck_since: Option<u64>,
}

/// The session that must keep running (`keep_one_running`): with no
/// interactive (unpausable) session populated, pausing every session
/// protects nobody and lets nothing finish, so the oldest pausable one
/// (the last of the pause order) runs on and the others make room for it
/// (frozen, pushed out with swap, killed at kill_pct without). None while
/// an interactive session is populated.
pub fn kept_running(order: &[String], sessions: &[SessionView]) -> Option<String> {
    if sessions.iter().any(|s| !s.pausable && s.populated) {
        return None;
    }
    order
        .iter()
        .rev()
        .filter_map(|n| sessions.iter().find(|s| &s.name == n))
        .find(|s| s.populated && !s.killing)
        .map(|s| s.name.clone())
}

/// The arbiter's period while anything is in flight or near the line.
pub const FAST_TICK_MS: u64 = 10;
/// Its period otherwise: BPF guards the line by itself every `poll_us`, and
/// every userspace follow-up (freeze, reclaim, resume, kill) starts from a
/// hold or from a fill above the reclaim line, which the next pass sees.
/// Polling at 10 ms regardless had cost the loop 18 % of a vCPU in the
/// zram experiment.
pub const IDLE_TICK_MS: u64 = 50;

/// The period (ms) of the arbiter's next pass: [`FAST_TICK_MS`] while a
/// session is held, frozen, being killed or pushed out, or the fill
/// (permille) is at or above [`reclaim_line_pct`], else [`IDLE_TICK_MS`].
pub fn tick_ms(cfg: &MemoryConfig, fill: u32, sessions: &[SessionView]) -> u64 {
    let busy = sessions
        .iter()
        .any(|s| s.held_since.is_some() || s.frozen_since.is_some() || s.killing || s.reclaiming);
    if busy || fill >= MemoryConfig::permille(reclaim_line_pct(cfg)) {
        FAST_TICK_MS
    } else {
        IDLE_TICK_MS
    }
}

/// One arbitration tick at @now_ms. @order is the pause order (first
/// paused first); @sessions what each session is doing.
pub fn decide(
    cfg: &MemoryConfig,
    now_ms: u64,
    fill: u32,
    swap: bool,
    order: &[String],
    sessions: &[SessionView],
    st: &mut DecideState,
) -> Vec<Act> {
    let mut acts = Vec::new();
    if !cfg.pause {
        return acts;
    }
    let get = |n: &str| sessions.iter().find(|s| s.name == n);
    let kept = if cfg.keep_one_running { kept_running(order, sessions) } else { None };
    let is_kept = |n: &str| kept.as_deref() == Some(n);
    // a hold that lasted freeze_after_ms becomes a freeze; with swap a held
    // session's memory is pushed out at once while the limit is still
    // tight (it does not run, and the room lets the others allocate before
    // they reach the limit and reclaim, compress into zram, themselves)
    for s in sessions {
        if let (Some(h), None, false) = (s.held_since, s.frozen_since, s.killing) {
            if is_kept(&s.name) {
                continue; // BPF releases it: userspace marks it RUN
            }
            if now_ms.saturating_sub(h) >= cfg.freeze_after_ms {
                acts.push(Act::Freeze(s.name.clone()));
                if swap && cfg.reclaim {
                    acts.push(Act::Reclaim(s.name.clone()));
                }
            } else if swap && cfg.reclaim && !s.reclaiming && fill >= MemoryConfig::permille(cfg.guard_pct) {
                acts.push(Act::Reclaim(s.name.clone()));
            }
        }
    }
    // headroom again: thaw the session frozen first; and the session that
    // must keep running, if it is frozen, whatever the fill
    let gap_ok = st.last_thaw_ms.map_or(true, |t| now_ms.saturating_sub(t) >= cfg.pause_gap_ms);
    let kept_frozen = sessions.iter().find(|s| is_kept(&s.name) && s.frozen_since.is_some());
    if let (Some(s), true) = (kept_frozen, gap_ok) {
        acts.push(Act::Thaw(s.name.clone()));
        st.last_thaw_ms = Some(now_ms);
    } else if fill < MemoryConfig::permille(cfg.resume_pct) && gap_ok {
        if let Some(s) = sessions
            .iter()
            .filter(|s| !s.killing && s.frozen_since.is_some())
            .min_by_key(|s| s.frozen_since)
        {
            acts.push(Act::Thaw(s.name.clone()));
            st.last_thaw_ms = Some(now_ms);
        }
    }
    // the last resort: at kill_pct with everything pausable paused, or
    // above resume_pct with every session paused (nothing runs that could
    // finish and free memory, and resuming one would only pause it again)
    let paused = |s: &SessionView| s.held_since.is_some() || s.frozen_since.is_some();
    let active = |s: &&SessionView| s.populated && !s.killing;
    // a reclaim still being written is making room: not stuck yet, and the
    // wait starts again when it is done
    let stuck = fill >= MemoryConfig::permille(cfg.resume_pct)
        && sessions.iter().filter(active).count() > 0
        && sessions.iter().filter(active).all(paused)
        && !sessions.iter().any(|s| s.reclaiming);
    let stuck_since = if stuck { Some(*st.stuck_since.get_or_insert(now_ms)) } else { None };
    if !stuck {
        st.stuck_since = None;
    }
    let over_kill = fill >= MemoryConfig::permille(cfg.kill_pct);
    if over_kill || stuck {
        if over_kill {
            st.over_kill_since.get_or_insert(now_ms);
        }
        // the kept session runs by design: it does not count as one that
        // could still be paused
        let pausable_running = order
            .iter()
            .filter_map(|n| get(n))
            .any(|s| s.populated && !s.killing && !paused(s) && !is_kept(&s.name));
        let killing = sessions.iter().any(|s| s.killing);
        // at kill_pct without swap at once (the kernel's OOM killer is
        // next); with swap room the kernel reclaims instead of killing, so
        // only stuck counts, after kill_after_ms
        let waited = (over_kill && !swap) || stuck_since.is_some_and(|t| now_ms.saturating_sub(t) >= cfg.kill_after_ms);
        if !pausable_running && !killing && waited {
            if let Some(v) = order.iter().filter_map(|n| get(n)).find(|s| s.populated && paused(s)) {
                let others = order.iter().filter(|n| **n != v.name).count();
                let why = format!(
                    "the shared limit is {:.1} % full ({}), {}, and {}; {} is the youngest paused session of the lowest class",
                    fill as f64 / 10.0,
                    if over_kill && !swap {
                        format!("kill_pct {}", cfg.kill_pct)
                    } else {
                        format!(
                            "every session has been paused above resume_pct {} for {} ms: none can finish",
                            cfg.resume_pct, cfg.kill_after_ms
                        )
                    },
                    if others == 0 {
                        "it is the only pausable session".to_string()
                    } else {
                        format!("all {} pausable sessions are paused", others + 1)
                    },
                    if swap {
                        format!("swap did not make room within {} ms", cfg.kill_after_ms)
                    } else {
                        "there is no swap to push paused memory to".to_string()
                    },
                    v.name
                );
                acts.push(Act::Kill(v.name.clone(), why));
            }
        }
    }
    if !over_kill {
        st.over_kill_since = None;
    }
    acts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str) -> SessionView {
        SessionView {
            name: name.to_string(),
            pausable: true,
            held_since: None,
            frozen_since: None,
            killing: false,
            populated: true,
            reclaiming: false,
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_gaps_are_named() {
        assert!(MemoryConfig::default().problems().is_empty());
        let c = MemoryConfig { resume_pct: 90, ..Default::default() };
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0[0], "resume_pct");
        let c = MemoryConfig { kill_pct: 85, ..Default::default() };
        assert_eq!(c.problems()[0].0[0], "kill_pct");
        let c = MemoryConfig { freeze_after_ms: 5000, ..Default::default() };
        assert!(c.problems()[0].1.contains("watchdog"), "{:?}", c.problems());
    }

    #[test]
    fn memory_min_follows_the_memory_low_kept() {
        let mib = 1u64 << 20;
        // low steps from 48 to 52 MiB: min goes to 26 with it, although
        // 24 -> 26 alone is less than a step (the arbitration scenario
        // read low 52, min 24 before this)
        assert_eq!(protection_update(48 * mib, 52 * mib, 50), (52 * mib, 26 * mib));
        // less than a step: both stay
        assert_eq!(protection_update(48 * mib, 50 * mib, 50), (48 * mib, 24 * mib));
        // withdrawn and granted
        assert_eq!(protection_update(48 * mib, 0, 50), (0, 0));
        assert_eq!(protection_update(0, 8 * mib, 50), (8 * mib, 4 * mib));
    }

    #[test]
    fn protection_follows_usage_within_the_budget() {
        let mb = 1u64 << 20;
        // 40 MiB used, 25 % headroom: 50 MiB, rounded up to 52 (4 MiB steps)
        assert_eq!(protection(40 * mb, 256 * mb, 25, 50), (52 * mb, 26 * mb));
        // the budget caps it
        assert_eq!(protection(400 * mb, 256 * mb, 25, 50), (256 * mb, 128 * mb));
        // nothing used, nothing protected
        assert_eq!(protection(0, 256 * mb, 25, 50), (0, 0));
        assert_eq!(protection(10 * mb, 0, 25, 50), (0, 0));
        assert!(protection_moved(0, 4 * mb) && protection_moved(8 * mb, 0));
        assert!(!protection_moved(52 * mb, 53 * mb) && protection_moved(52 * mb, 56 * mb));
        assert_eq!(session_budget(400 * mb, 256 * mb, 2), 200 * mb);
        assert_eq!(session_budget(400 * mb, 256 * mb, 0), 0);
    }

    #[test]
    fn pause_order_is_lowest_class_then_youngest_and_never_interactive() {
        let s = |n: &str, c, id| (n.to_string(), c, id);
        let order = pause_order(&[
            s("chat", Some(StepClass::Interactive), 10),
            s("old_bg", Some(StepClass::Background), 11),
            s("tool", Some(StepClass::Tool), 30),
            s("new_bg", Some(StepClass::Background), 20),
            s("plain", None, 40),
        ]);
        assert_eq!(order, ["new_bg", "old_bg", "tool", "plain"]);
        assert_eq!(oom_score_adj(Some(StepClass::Background)), Some(1000));
        assert_eq!(oom_score_adj(Some(StepClass::Tool)), Some(500));
        assert_eq!(oom_score_adj(Some(StepClass::Interactive)), None);
    }

    #[test]
    fn hold_timing_separates_first_holds_from_paced_ones() {
        let ms = 1_000_000;
        // crossed at 10 ms, held in the same poll, grew once more 1 ms later
        assert_eq!(hold_timing(10 * ms, 10 * ms, 11 * ms, true), (Some(1000), 1000));
        // never grew after the hold: the stop is the hold itself
        assert_eq!(hold_timing(10 * ms, 11 * ms, 0, true), (Some(1000), 0));
        // a second session held one gap later in the same episode
        assert_eq!(hold_timing(10 * ms, 110 * ms, 112 * ms, false), (None, 2000));
        // or 96 ms later because the fill still rose: not the reaction
        // either (the zram run of 03a5e38 counted it as one, 96158 us)
        assert_eq!(hold_timing(10 * ms, 106 * ms, 0, false), (None, 0));
        // the first hold 30 ms after the crossing (no candidate before):
        // the reaction, however late
        assert_eq!(hold_timing(10 * ms, 40 * ms, 0, true), (Some(30_000), 0));
    }

    #[test]
    fn fill_is_the_tightest_level() {
        assert_eq!(fill_permille(&[(500, Some(1000)), (900, None), (300, Some(400))]), 750);
        assert_eq!(fill_permille(&[(500, None)]), 0);
    }

    #[test]
    fn reclaim_asks_only_for_what_brings_the_path_to_the_line() {
        let cfg = MemoryConfig::default(); // guard 90, resume 80: line 70
        assert_eq!(reclaim_line_pct(&cfg), 70);
        let mib = 1u64 << 20;
        let lim = 1000 * mib;
        // 80 MiB above the line: five steps of 16 MiB
        assert_eq!(reclaim_step(&cfg, &[(780 * mib, Some(lim))], 300 * mib), RECLAIM_STEP);
        assert_eq!(reclaim_step(&cfg, &[(705 * mib, Some(lim))], 300 * mib), 5 * mib);
        // at or below the line: nothing
        assert_eq!(reclaim_step(&cfg, &[(700 * mib, Some(lim))], 300 * mib), 0);
        assert_eq!(reclaim_step(&cfg, &[(10 * mib, Some(lim))], 300 * mib), 0);
        // never more than the session has
        assert_eq!(reclaim_step(&cfg, &[(900 * mib, Some(lim))], 3 * mib), 3 * mib);
        // the fullest level counts; "max" levels do not
        let levels = [(650 * mib, Some(lim)), (702 * mib, Some(lim)), (5000 * mib, None)];
        assert_eq!(reclaim_step(&cfg, &levels, 300 * mib), 2 * mib);
        assert_eq!(reclaim_step(&cfg, &[(5000 * mib, None)], 300 * mib), 0);
        // a narrow band: line = resume - (guard - resume)
        let narrow = MemoryConfig { guard_pct: 95, resume_pct: 90, ..cfg };
        assert_eq!(reclaim_line_pct(&narrow), 85);
    }

    #[test]
    fn the_loop_ticks_fast_only_near_the_line_or_with_something_in_flight() {
        let cfg = MemoryConfig::default();
        let idle = vec![view("a"), view("b")];
        // the reclaim line (70 %) and above: fast; below with nothing in flight: idle
        assert_eq!(tick_ms(&cfg, 699, &idle), IDLE_TICK_MS);
        assert_eq!(tick_ms(&cfg, 700, &idle), FAST_TICK_MS);
        assert_eq!(tick_ms(&cfg, 0, &[]), IDLE_TICK_MS);
        for busy in [
            SessionView { held_since: Some(5), ..view("b") },
            SessionView { frozen_since: Some(5), ..view("b") },
            SessionView { killing: true, ..view("b") },
            SessionView { reclaiming: true, ..view("b") },
        ] {
            assert_eq!(tick_ms(&cfg, 0, &[view("a"), busy.clone()]), FAST_TICK_MS, "{busy:?}");
        }
        // the line follows the configuration
        let wide = MemoryConfig { guard_pct: 95, resume_pct: 90, ..cfg };
        assert_eq!(tick_ms(&wide, 800, &idle), IDLE_TICK_MS);
        assert_eq!(tick_ms(&wide, 850, &idle), FAST_TICK_MS);
        assert!(IDLE_TICK_MS > FAST_TICK_MS);
    }

    #[test]
    fn a_long_hold_becomes_a_freeze_and_reclaim_only_with_swap() {
        // the rules on their own: no session kept running (tested below)
        let cfg = MemoryConfig { keep_one_running: false, ..Default::default() };
        let mut st = DecideState::default();
        let order = vec!["bg".to_string()];
        let mut bg = view("bg");
        bg.held_since = Some(1000);
        assert!(decide(&cfg, 1500, 920, false, &order, &[bg.clone()], &mut st).is_empty());
        // with swap a held session is reclaimed before its freeze, while the
        // fill is at the guard line and no reclaim of it runs yet
        assert_eq!(decide(&cfg, 1500, 920, true, &order, &[bg.clone()], &mut st), [Act::Reclaim("bg".into())]);
        assert!(decide(&cfg, 1500, 850, true, &order, &[bg.clone()], &mut st).is_empty());
        let busy = SessionView { reclaiming: true, ..bg.clone() };
        assert!(decide(&cfg, 1500, 920, true, &order, &[busy], &mut st).is_empty());
        assert_eq!(decide(&cfg, 2000, 920, false, &order, &[bg.clone()], &mut st), [Act::Freeze("bg".into())]);
        assert_eq!(
            decide(&cfg, 2000, 920, true, &order, &[bg.clone()], &mut st),
            [Act::Freeze("bg".into()), Act::Reclaim("bg".into())]
        );
        let off = MemoryConfig { reclaim: false, ..cfg };
        assert_eq!(decide(&off, 2000, 920, true, &order, &[bg], &mut st), [Act::Freeze("bg".into())]);
    }

    #[test]
    fn headroom_thaws_the_oldest_freeze_one_per_gap() {
        // the rules on their own: no session kept running (tested below)
        let cfg = MemoryConfig { keep_one_running: false, ..Default::default() };
        let mut st = DecideState::default();
        let (mut a, mut b) = (view("a"), view("b"));
        a.frozen_since = Some(500);
        b.frozen_since = Some(300);
        let order = vec!["a".to_string(), "b".to_string()];
        let both = [a.clone(), b.clone()];
        // still above resume_pct: nothing
        assert!(decide(&cfg, 1000, 850, false, &order, &both, &mut st).is_empty());
        assert_eq!(decide(&cfg, 1000, 700, false, &order, &both, &mut st), [Act::Thaw("b".into())]);
        assert!(decide(&cfg, 1050, 700, false, &order, &[a.clone()], &mut st).is_empty());
        assert_eq!(decide(&cfg, 1100, 700, false, &order, &[a], &mut st), [Act::Thaw("a".into())]);
    }

    #[test]
    fn with_no_interactive_session_the_oldest_keeps_running() {
        let cfg = MemoryConfig::default();
        let order = vec!["young".to_string(), "old".to_string()];
        let (mut young, mut old) = (view("young"), view("old"));
        let chat = SessionView { pausable: false, ..view("chat") };
        // an interactive session runs: nobody is kept
        assert_eq!(kept_running(&order, &[chat.clone(), young.clone(), old.clone()]), None);
        // it is gone (or idle and empty): the oldest pausable one is kept
        let gone = SessionView { populated: false, ..chat.clone() };
        assert_eq!(kept_running(&order, &[gone.clone(), young.clone(), old.clone()]), Some("old".into()));
        // an empty or dying oldest one is skipped
        let dead = SessionView { killing: true, ..old.clone() };
        assert_eq!(kept_running(&order, &[young.clone(), dead]), Some("young".into()));
        // the kept one frozen: thawed whatever the fill, and a long hold of it
        // is no freeze
        old.frozen_since = Some(100);
        young.frozen_since = Some(200);
        let mut st = DecideState::default();
        let acts = decide(&cfg, 1000, 950, true, &order, &[gone.clone(), young.clone(), old.clone()], &mut st);
        assert_eq!(acts, [Act::Thaw("old".into())]);
        let held = SessionView { frozen_since: None, held_since: Some(0), ..old.clone() };
        let acts = decide(&cfg, 5000, 950, true, &order, &[gone.clone(), young.clone(), held.clone()], &mut st);
        assert!(acts.iter().all(|a| !matches!(a, Act::Freeze(n) if n == "old")), "{acts:?}");
        // no swap, at the kill line, the kept one running and the other
        // paused: the paused one goes (the kept one does not count as one
        // that could still be paused); the kept one is never the victim
        let running = SessionView { frozen_since: None, ..old.clone() };
        let acts = decide(&cfg, 6000, 980, false, &order, &[gone.clone(), young.clone(), running.clone()], &mut st);
        assert!(matches!(&acts[..], [Act::Kill(n, _)] if n == "young"), "{acts:?}");
        // the off switch: both stay paused, nothing is thawed above resume_pct
        let off = MemoryConfig { keep_one_running: false, ..cfg };
        let mut st = DecideState::default();
        assert!(decide(&off, 1000, 950, true, &order, &[gone, young, old], &mut st).is_empty());
    }

    #[test]
    fn kill_only_when_everything_pausable_is_paused() {
        // the rules on their own: no session kept running (tested below)
        let cfg = MemoryConfig { keep_one_running: false, ..Default::default() };
        let order = vec!["young".to_string(), "old".to_string()];
        let (mut young, mut old) = (view("young"), view("old"));
        young.held_since = Some(900);
        let mut st = DecideState::default();
        // old still runs: pause it first (BPF does), no kill
        assert!(decide(&cfg, 1000, 980, false, &order, &[young.clone(), old.clone()], &mut st).is_empty());
        old.frozen_since = Some(100);
        let acts = decide(&cfg, 1001, 980, false, &order, &[young.clone(), old.clone()], &mut st);
        assert_eq!(acts.len(), 1, "{acts:?}");
        match &acts[0] {
            Act::Kill(n, why) => {
                assert_eq!(n, "young");
                assert!(why.contains("no swap") && why.contains("98.0 %"), "{why}");
            }
            a => panic!("{a:?}"),
        }
        // a kill in progress: no second one
        young.killing = true;
        assert!(decide(&cfg, 1002, 980, false, &order, &[young.clone(), old.clone()], &mut st).is_empty());
        // with swap room, not for the kill line: the kernel reclaims into
        // swap rather than OOM-killing; only everything paused for
        // kill_after_ms (stuck) kills
        young.killing = false;
        let mut st = DecideState::default();
        for t in [1000, 3900] {
            assert!(decide(&cfg, t, 980, true, &order, &[young.clone(), old.clone()], &mut st)
                .iter()
                .all(|a| !matches!(a, Act::Kill(..))));
        }
        let acts = decide(&cfg, 4000, 980, true, &order, &[young.clone(), old.clone()], &mut st);
        assert!(acts.iter().any(|a| matches!(a, Act::Kill(_, why) if why.contains("none can finish"))), "{acts:?}");
        // below the kill line the wait starts again
        decide(&cfg, 4100, 900, true, &order, &[young.clone(), old.clone()], &mut st);
        assert_eq!(st.over_kill_since, None);
        // every session paused above resume_pct (the interactive one is
        // gone): nobody can finish, so the youngest goes, below kill_pct too
        let mut st = DecideState::default();
        let mut young2 = young.clone();
        young2.frozen_since = Some(2000);
        young2.held_since = None;
        assert!(decide(&cfg, 6000, 850, false, &order, &[young2.clone(), old.clone()], &mut st).is_empty());
        let acts = decide(&cfg, 9000, 850, false, &order, &[young2.clone(), old.clone()], &mut st);
        assert!(matches!(&acts[..], [Act::Kill(n, why)] if n == "young" && why.contains("none can finish")), "{acts:?}");
        // a reclaim in flight is progress: no stuck kill however long it
        // takes, and the wait starts again when it ends
        let mut st = DecideState::default();
        let mut busy = young2.clone();
        busy.reclaiming = true;
        for t in [6000, 9000, 12000] {
            let acts = decide(&cfg, t, 850, true, &order, &[busy.clone(), old.clone()], &mut st);
            assert!(acts.iter().all(|a| !matches!(a, Act::Kill(..))), "{acts:?}");
        }
        assert!(decide(&cfg, 12500, 850, true, &order, &[young2.clone(), old.clone()], &mut st).is_empty());
        let acts = decide(&cfg, 15500, 850, true, &order, &[young2.clone(), old.clone()], &mut st);
        assert!(matches!(&acts[..], [Act::Kill(n, _)] if n == "young"), "{acts:?}");
        // with an interactive session still running it is not stuck: no kill below kill_pct
        let mut chat = view("chat");
        chat.pausable = false;
        let acts = decide(&cfg, 6000, 850, false, &order, &[young2, old.clone(), chat], &mut DecideState::default());
        assert!(acts.iter().all(|a| !matches!(a, Act::Kill(..))), "{acts:?}");
        // pause off: nothing at all
        let off = MemoryConfig { pause: false, ..Default::default() };
        assert!(decide(&off, 5000, 990, false, &order, &[young, old], &mut DecideState::default()).is_empty());
    }
}
