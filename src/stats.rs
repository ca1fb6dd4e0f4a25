// SPDX-License-Identifier: GPL-2.0-only
//! scx_stats output: scheduler-wide counters and the busiest cgroups.
//!
//! The scheduler thread answers each request with a cumulative [`Snapshot`];
//! every stats client keeps its own previous snapshot, so counters are
//! reported as deltas over that client's interval.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use scx_stats::prelude::*;
use scx_stats_derive::stat_doc;
use scx_stats_derive::Stats;
use serde::{Deserialize, Serialize};

use crate::cgroups::{busiest, CgroupSample};

/// How many cgroups the `cgroups` table lists.
pub const TOP_CGROUPS: usize = 10;

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "c_", _om_label = "cgroup")]
pub struct CgroupMetrics {
    #[stat(desc = "CPU used over the interval, percent of one CPU")]
    pub cpu_pct: f64,
    #[stat(desc = "cpu.weight")]
    pub weight: u32,
    #[stat(desc = "Hierarchical weight of the cgroup's own tasks, percent of the machine")]
    pub hweight_pct: f64,
    #[stat(desc = "Runnable tasks now")]
    pub nr_runnable: u32,
    #[stat(desc = "Tasks dispatched from the cgroup's queue over the interval")]
    pub dispatches: u64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "b_", _om_label = "cgroup")]
pub struct BandwidthMetrics {
    #[stat(desc = "cpu.max quota, percent of one CPU")]
    pub quota_pct: f64,
    #[stat(desc = "cpu.max period (us)")]
    pub period_us: u64,
    #[stat(desc = "cpu.max.burst (us)")]
    pub burst_us: u64,
    #[stat(desc = "CPU used over the interval by the cgroup and its descendants, percent of one CPU")]
    pub cpu_pct: f64,
    #[stat(desc = "CPU used by the cgroup and its descendants while limited (us, as cpu.stat usage_usec)")]
    pub usage_usec: u64,
    #[stat(desc = "Most CPU the subtree used in one period (us): at most quota + burst plus the overrun bound")]
    pub max_period_usec: u64,
    #[stat(desc = "Periods with activity (as cpu.stat nr_periods)")]
    pub nr_periods: u64,
    #[stat(desc = "Times the cgroup ran out of quota (as cpu.stat nr_throttled)")]
    pub nr_throttled: u64,
    #[stat(desc = "Time spent throttled (us, as cpu.stat throttled_usec)")]
    pub throttled_usec: u64,
    #[stat(desc = "Throttled right now (1) or not (0)")]
    pub throttled: u32,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "cell_", _om_label = "cell")]
pub struct CellMetrics {
    #[stat(desc = "Cell id (0: the system cell)")]
    pub id: u32,
    #[stat(desc = "CPUs the cell owns")]
    pub cpus: u32,
    #[stat(desc = "The cell's CPUs, as a cpulist")]
    pub cpulist: String,
    #[stat(desc = "CPU used by the cell's tasks over the interval, percent of one CPU")]
    pub util_pct: f64,
    #[stat(desc = "Its tasks on other cells' CPUs over the interval (borrowing), percent of one CPU")]
    pub borrowed_pct: f64,
    #[stat(desc = "Other cells' tasks on its CPUs over the interval (lending), percent of one CPU")]
    pub lent_pct: f64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "step_", _om_label = "step")]
pub struct StepMetrics {
    #[stat(desc = "Policy profile")]
    pub profile: String,
    #[stat(desc = "CPUs in the step's mask")]
    pub cpus: u32,
    #[stat(desc = "Exclusive CPU reservation: none, granted N, denied N")]
    pub reservation: String,
    #[stat(desc = "Boosted wakeups over the interval")]
    pub boosts: u64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "mem_", _om_label = "cgroup")]
pub struct MemoryMetrics {
    #[stat(desc = "Thrash score, permille (time lost to memory.high throttling and reclaim, EWMA)")]
    pub thrash_score: u32,
    #[stat(desc = "Highest thrash score so far, permille")]
    pub peak_score: u32,
    #[stat(desc = "Thrash penalty on now (1) or not (0)")]
    pub penalised: u32,
    #[stat(desc = "Time penalised since start (ms)")]
    pub penalised_ms: u64,
    #[stat(desc = "Times the penalty engaged")]
    pub penalty_entries: u64,
    #[stat(desc = "Time lost to memory pressure since start, all tasks (ms)")]
    pub stall_ms: u64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "obs_", _om_label = "session")]
pub struct ObservedMetrics {
    #[stat(desc = "Wake-ups of the session's tasks since start")]
    pub wakeups: u64,
    #[stat(desc = "Wake-to-run latency since start, mean (us)")]
    pub wake_lat_avg_us: u64,
    #[stat(desc = "Wake-to-run latency since start, largest (us)")]
    pub wake_lat_max_us: u64,
    #[stat(desc = "memory.current (MiB)")]
    pub mem_current_mb: u64,
    #[stat(desc = "memory.events high (times over memory.high)")]
    pub mem_high: u64,
    #[stat(desc = "memory.events max (times at memory.max)")]
    pub mem_max: u64,
    #[stat(desc = "memory.events oom_kill")]
    pub mem_oom_kill: u64,
    #[stat(desc = "memory.pressure some avg10 (%)")]
    pub mem_some_avg10: f64,
    #[stat(desc = "memory.pressure some total (ms)")]
    pub mem_some_total_ms: u64,
    #[stat(desc = "cpu.pressure some avg10 (%)")]
    pub cpu_some_avg10: f64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(_om_prefix = "sess_", _om_label = "session")]
pub struct SessionMetrics {
    #[stat(desc = "Active now (a task of the session runnable) (1) or idle (0)")]
    pub active: u32,
    #[stat(desc = "Idle -> active transitions since start (gaps under 50 ms do not count)")]
    pub idle_to_active: u64,
    #[stat(desc = "Active -> idle transitions since start")]
    pub active_to_idle: u64,
    #[stat(desc = "Time active since start (ms)")]
    pub active_ms: u64,
    #[stat(desc = "Time idle since start (ms), after its first activity")]
    pub idle_ms: u64,
    #[stat(desc = "--mem-escalation phase: running, throttled, soft-paused (frozen), killed; empty when off")]
    pub mem_phase: String,
    #[stat(desc = "--mem-arbitration state: running, held (paused in the scheduler), frozen, killing; empty when off")]
    pub mem_state: String,
    #[stat(desc = "--mem-arbitration: memory.low given to the session (MiB)")]
    pub mem_low_mb: u64,
    #[stat(desc = "--mem-arbitration: memory.min given to the session (MiB)")]
    pub mem_min_mb: u64,
    #[stat(desc = "--mem-arbitration: times the session was held back since start")]
    pub mem_holds: u64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(top)]
pub struct Metrics {
    #[stat(desc = "Possible CPUs")]
    pub nr_cpus: u64,
    #[stat(desc = "Cgroups with runnable tasks of their own")]
    pub nr_runnable_cgroups: u64,
    #[stat(desc = "Cgroups active (own or descendant tasks runnable)")]
    pub nr_active_cgroups: u64,
    #[stat(desc = "Cgroups the scheduler tracks")]
    pub nr_cgroups: u64,
    #[stat(desc = "Dispatches: task picked from a cgroup queue via the tree")]
    pub dsp_tree: u64,
    #[stat(desc = "Dispatches: task from the CPU's current cgroup (slice left)")]
    pub dsp_sticky: u64,
    #[stat(desc = "Dispatches: a task whose slice ran out kept its CPU (its cgroup still first)")]
    pub dsp_prev: u64,
    #[stat(desc = "Dispatches from a cgroup queue that took a task which last ran on that CPU")]
    pub dsp_cpu_local: u64,
    #[stat(desc = "Dispatches: idle CPU found at wakeup, inserted locally")]
    pub dsp_idle_local: u64,
    #[stat(desc = "Dispatches: per-CPU kthread inserted locally")]
    pub dsp_kthread: u64,
    #[stat(desc = "Dispatches: a CPU's only runnable task kept running")]
    pub dsp_last: u64,
    #[stat(desc = "Dispatches: restricted-affinity task from a pinned queue")]
    pub dsp_pinned: u64,
    #[stat(desc = "Dispatches: fallback queue")]
    pub dsp_fallback: u64,
    #[stat(desc = "Cgroup activations (became runnable)")]
    pub activations: u64,
    #[stat(desc = "Hierarchical weight recomputations")]
    pub hweight_updates: u64,
    #[stat(desc = "Hierarchical weight cache hits")]
    pub hweight_cached: u64,
    #[stat(desc = "Tree picks requeued because the cgroup's key had moved (usage, herd floor)")]
    pub requeues: u64,
    #[stat(desc = "Tree picks of cgroups whose queue was already empty")]
    pub pick_empty: u64,
    #[stat(desc = "Dispatches that ran out of tree retries and tried again")]
    pub pick_giveups: u64,
    #[stat(desc = "Cgroups with queued tasks put back in the tree by the safety net")]
    pub rescues: u64,
    #[stat(desc = "Wakeups that preempted a CPU serving a later cgroup")]
    pub wake_preempts: u64,
    #[stat(desc = "cpu.max: cgroups that ran out of quota over the interval")]
    pub bw_throttles: u64,
    #[stat(desc = "Cells: dispatches of another cell's cgroup (borrowing)")]
    pub borrows: u64,
    #[stat(desc = "Cells: lent CPUs taken back by their own cell's wakeups")]
    pub reclaims: u64,
    #[stat(desc = "Policy: boosted wakeups of interactive steps")]
    pub boosts: u64,
    #[stat(desc = "Policy: boostable wakeups refused for lack of burst credit")]
    pub boosts_no_credit: u64,
    #[stat(desc = "BPF map entries: per-cgroup tree nodes (one per live cgroup)")]
    pub map_cgroup_nodes: u64,
    #[stat(desc = "BPF map entries: cgroups configured by the cells layout")]
    pub map_cgroup_cfgs: u64,
    #[stat(desc = "BPF map entries: cpu.max refill timers (one per limited cgroup)")]
    pub map_bw_timers: u64,
    #[stat(desc = "Cells: layouts applied since start")]
    pub cell_applies: u64,
    #[stat(desc = "Cells: time from the first tree change to its layout being applied, last apply (us)")]
    pub cell_apply_latency_us: u64,
    #[stat(desc = "Cells: demand rebalances since start")]
    pub rebalances: u64,
    #[stat(desc = "Cells, by session name (\"system\" is cell 0)")]
    pub cells: BTreeMap<String, CellMetrics>,
    #[stat(desc = "Steps of sessions with their profile and CPU mask")]
    pub steps: BTreeMap<String, StepMetrics>,
    #[stat(desc = "Busiest cgroups over the interval")]
    pub cgroups: BTreeMap<String, CgroupMetrics>,
    #[stat(desc = "Every cgroup with a cpu.max limit")]
    pub bandwidth: BTreeMap<String, BandwidthMetrics>,
    #[stat(desc = "Thrash penalties engaged over the interval")]
    pub thrash_penalties: u64,
    #[stat(desc = "Tasks of penalised cgroups queued on their capped CPUs over the interval")]
    pub thrash_capped: u64,
    #[stat(desc = "Tasks of yielding profiles queued on the yield CPUs while interactive work was runnable, over the interval")]
    pub yield_pinned: u64,
    #[stat(desc = "Global direct reclaims (no memcg) seen by the reclaim tracepoint hooks over the interval")]
    pub thrash_global_reclaims: u64,
    #[stat(desc = "memcg BPF ops: loaded, unsupported (kernel lacks them or has another version), failed (did not load under auto) or off")]
    pub memcg_ops: String,
    #[stat(desc = "Cgroups that met memory pressure: thrash score and penalties")]
    pub memory: BTreeMap<String, MemoryMetrics>,
    #[stat(desc = "Sessions (cells): activity transitions and time")]
    pub sessions: BTreeMap<String, SessionMetrics>,
    #[stat(desc = "--mem-escalation since start: sessions throttled, frozen, thawed, killed, failed writes")]
    pub mem_escalation: BTreeMap<String, u64>,
    #[stat(desc = "schedule (the scheduler is attached) or observe (--observe: nothing attached, no cgroup file written)")]
    pub mode: String,
    #[stat(desc = "--observe: per session, from the sched_switch/sched_wakeup tracepoints and its cgroup files")]
    pub observed: BTreeMap<String, ObservedMetrics>,
    #[stat(desc = "--mem-arbitration: fill of the shared limit (permille), swap (0/1), and since start holds, frozen, thawed, reclaims, reclaimed MiB, kills, failed writes, reaction times (us, first hold of each episode: guard line crossed to the held session's last growth; count, median, max) and stop times (us, every hold: hold to the last growth; median, max)")]
    pub mem_arbitration: BTreeMap<String, u64>,
}

/// --observe: one session's wake-ups and cgroup files (cumulative).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedSample {
    pub wakeups: u64,
    pub wake_lat_n: u64,
    pub wake_lat_ns: u64,
    pub wake_lat_max_ns: u64,
    pub mem_current: u64,
    pub mem_events: BTreeMap<String, u64>,
    pub mem_some_avg10: f64,
    pub mem_some_total_us: u64,
    pub cpu_some_avg10: f64,
}

impl ObservedSample {
    pub fn metrics(&self) -> ObservedMetrics {
        let ev = |k: &str| self.mem_events.get(k).copied().unwrap_or(0);
        ObservedMetrics {
            wakeups: self.wakeups,
            wake_lat_avg_us: if self.wake_lat_n > 0 { self.wake_lat_ns / self.wake_lat_n / 1000 } else { 0 },
            wake_lat_max_us: self.wake_lat_max_ns / 1000,
            mem_current_mb: self.mem_current >> 20,
            mem_high: ev("high"),
            mem_max: ev("max"),
            mem_oom_kill: ev("oom_kill"),
            mem_some_avg10: self.mem_some_avg10,
            mem_some_total_ms: self.mem_some_total_us / 1000,
            cpu_some_avg10: self.cpu_some_avg10,
        }
    }
}

/// Cumulative state the scheduler hands to stats clients.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub at_ns: u64,
    pub nr_cpus: u64,
    pub nr_runnable_cgroups: u64,
    pub nr_active_cgroups: u64,
    pub counters: Vec<u64>,
    pub cgroups: BTreeMap<String, CgroupSample>,
    pub hweight_one: u64,
    pub cells: BTreeMap<String, CellSample>,
    pub steps: BTreeMap<String, StepSample>,
    pub cell_applies: u64,
    pub cell_apply_latency_us: u64,
    pub rebalances: u64,
    /// entries of node_stashes, cgrp_cfgs and bw_timers
    pub map_entries: [u64; 3],
    /// session cgroups (paths below the cgroup2 root)
    pub sessions: Vec<String>,
    /// "schedule" or "observe"
    pub mode: String,
    /// --observe: per session path
    pub observed: BTreeMap<String, ObservedSample>,
    pub memcg_ops: String,
    /// each session's profile and class (for the metrics' labels)
    pub session_profiles: crate::metrics::SessionProfiles,
    pub escalation: Option<crate::escalation::EscalationStats>,
    pub arbitration: Option<crate::memory::arbiter::ArbitrationStats>,
}

/// Cumulative state of one cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellSample {
    pub id: u32,
    pub cpus: u32,
    pub cpulist: String,
    pub used_ns: u64,
    pub borrowed_ns: u64,
    pub lent_ns: u64,
}

/// State of one step cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepSample {
    pub profile: String,
    pub cpus: u32,
    pub reservation: String,
    pub nr_boosts: u64,
}

impl Snapshot {
    fn counter(&self, idx: u32) -> u64 {
        self.counters.get(idx as usize).copied().unwrap_or(0)
    }
}

/// Turn two snapshots into the metrics of the interval between them.
/// The --mem-arbitration counters as the stats name them.
fn arbitration_counters(a: &crate::memory::arbiter::ArbitrationStats) -> BTreeMap<String, u64> {
    let mut r = a.reactions_us.clone();
    r.sort_unstable();
    let mut t = a.stops_us.clone();
    t.sort_unstable();
    BTreeMap::from([
        ("fill_permille".to_string(), a.fill_permille),
        ("swap".to_string(), a.swap as u64),
        ("holds".to_string(), a.holds),
        ("frozen".to_string(), a.frozen),
        ("thawed".to_string(), a.thawed),
        ("reclaims".to_string(), a.reclaims),
        ("reclaimed_mb".to_string(), a.reclaimed_bytes >> 20),
        ("killed".to_string(), a.killed),
        ("errors".to_string(), a.errors),
        ("reactions".to_string(), r.len() as u64),
        ("reaction_us_median".to_string(), r.get(r.len() / 2).copied().unwrap_or(0)),
        ("reaction_us_max".to_string(), r.last().copied().unwrap_or(0)),
        ("stop_us_median".to_string(), t.get(t.len() / 2).copied().unwrap_or(0)),
        ("stop_us_max".to_string(), t.last().copied().unwrap_or(0)),
    ])
}

pub fn metrics_between(prev: &Snapshot, cur: &Snapshot) -> Metrics {
    use crate::bpf_intf::*;
    let d = |idx: u32| cur.counter(idx).saturating_sub(prev.counter(idx));
    let rows = busiest(
        &prev.cgroups,
        &cur.cgroups,
        cur.at_ns.saturating_sub(prev.at_ns),
        TOP_CGROUPS,
        cur.hweight_one,
    );
    let elapsed = cur.at_ns.saturating_sub(prev.at_ns).max(1) as f64;
    let bandwidth = cur
        .cgroups
        .iter()
        .filter(|(_, c)| c.bw_quota_ns > 0)
        .map(|(name, c)| {
            let before = prev.cgroups.get(name).map(|p| p.bw_usage_ns).unwrap_or(0);
            let used = crate::cgroups::counter_delta(c.bw_usage_ns, before);
            (
                name.clone(),
                BandwidthMetrics {
                    quota_pct: crate::bandwidth::quota_pct(c.bw_quota_ns, c.bw_period_ns),
                    period_us: c.bw_period_ns / 1000,
                    burst_us: c.bw_burst_ns / 1000,
                    cpu_pct: used as f64 * 100.0 / elapsed,
                    usage_usec: c.bw_usage_ns / 1000,
                    max_period_usec: c.bw_max_period_usage_ns / 1000,
                    nr_periods: c.bw_nr_periods,
                    nr_throttled: c.bw_nr_throttled,
                    throttled_usec: c.bw_throttled_ns / 1000,
                    throttled: c.bw_throttled as u32,
                },
            )
        })
        .collect();
    let pct = |a: u64, b: u64| crate::cgroups::counter_delta(a, b) as f64 * 100.0 / elapsed;
    let cells = cur
        .cells
        .iter()
        .map(|(name, c)| {
            let p = prev.cells.get(name).filter(|p| p.id == c.id).cloned().unwrap_or_default();
            (
                name.clone(),
                CellMetrics {
                    id: c.id,
                    cpus: c.cpus,
                    cpulist: c.cpulist.clone(),
                    util_pct: pct(c.used_ns, p.used_ns),
                    borrowed_pct: pct(c.borrowed_ns, p.borrowed_ns),
                    lent_pct: pct(c.lent_ns, p.lent_ns),
                },
            )
        })
        .collect();
    let steps = cur
        .steps
        .iter()
        .map(|(name, s)| {
            let before = prev.steps.get(name).map(|p| p.nr_boosts).unwrap_or(0);
            (
                name.clone(),
                StepMetrics {
                    profile: s.profile.clone(),
                    cpus: s.cpus,
                    reservation: s.reservation.clone(),
                    boosts: crate::cgroups::counter_delta(s.nr_boosts, before),
                },
            )
        })
        .collect();
    let memory = cur
        .cgroups
        .iter()
        .filter(|(_, c)| c.thr_stall_ns > 0 || c.thr_nr_penalties > 0 || c.thr_score > 0)
        .map(|(name, c)| {
            (
                name.clone(),
                MemoryMetrics {
                    thrash_score: c.thr_score,
                    peak_score: c.thr_peak_score,
                    penalised: c.thr_penalised as u32,
                    penalised_ms: c.thr_penalised_ns / 1_000_000,
                    penalty_entries: c.thr_nr_penalties,
                    stall_ms: c.thr_stall_ns / 1_000_000,
                },
            )
        })
        .collect();
    let arb = |name: &str| {
        cur.arbitration
            .as_ref()
            .and_then(|a| a.sessions.get(name.rsplit('/').next().unwrap_or(name)))
    };
    let sessions = cur
        .sessions
        .iter()
        .filter_map(|name| cur.cgroups.get(name).map(|c| (name, c)))
        .map(|(name, c)| {
            (
                name.clone(),
                SessionMetrics {
                    active: c.act_active as u32,
                    idle_to_active: c.act_nr_up,
                    active_to_idle: c.act_nr_down,
                    active_ms: c.act_active_ns / 1_000_000,
                    idle_ms: c.act_idle_ns / 1_000_000,
                    mem_phase: cur
                        .escalation
                        .as_ref()
                        .and_then(|e| e.sessions.get(name.rsplit('/').next().unwrap_or(name)).cloned())
                        .unwrap_or_default(),
                    mem_state: arb(name).map(|a| a.state.clone()).unwrap_or_default(),
                    mem_low_mb: arb(name).map(|a| a.low_bytes >> 20).unwrap_or(0),
                    mem_min_mb: arb(name).map(|a| a.min_bytes >> 20).unwrap_or(0),
                    mem_holds: arb(name).map(|a| a.holds).unwrap_or(0),
                },
            )
        })
        .collect();
    Metrics {
        thrash_penalties: d(agentcg_stat_idx_STAT_THRASH_PENALTY),
        thrash_capped: d(agentcg_stat_idx_STAT_THRASH_CAPPED),
        yield_pinned: d(agentcg_stat_idx_STAT_YIELD_PINNED),
        thrash_global_reclaims: d(agentcg_stat_idx_STAT_THRASH_GLOBAL_RECLAIM),
        mem_escalation: cur
            .escalation
            .as_ref()
            .map(|e| {
                BTreeMap::from([
                    ("throttled".to_string(), e.throttled),
                    ("frozen".to_string(), e.frozen),
                    ("thawed".to_string(), e.thawed),
                    ("killed".to_string(), e.killed),
                    ("errors".to_string(), e.errors),
                ])
            })
            .unwrap_or_default(),
        mem_arbitration: cur.arbitration.as_ref().map(arbitration_counters).unwrap_or_default(),
        memcg_ops: cur.memcg_ops.clone(),
        mode: cur.mode.clone(),
        observed: cur.observed.iter().map(|(k, v)| (k.clone(), v.metrics())).collect(),
        memory,
        sessions,
        borrows: d(agentcg_stat_idx_STAT_BORROW),
        reclaims: d(agentcg_stat_idx_STAT_RECLAIM),
        boosts: d(agentcg_stat_idx_STAT_BOOST),
        boosts_no_credit: d(agentcg_stat_idx_STAT_NO_CREDIT),
        map_cgroup_nodes: cur.map_entries[0],
        map_cgroup_cfgs: cur.map_entries[1],
        map_bw_timers: cur.map_entries[2],
        cell_applies: cur.cell_applies,
        cell_apply_latency_us: cur.cell_apply_latency_us,
        rebalances: cur.rebalances,
        cells,
        steps,
        nr_cpus: cur.nr_cpus,
        nr_runnable_cgroups: cur.nr_runnable_cgroups,
        nr_active_cgroups: cur.nr_active_cgroups,
        nr_cgroups: cur.cgroups.len() as u64,
        dsp_tree: d(agentcg_stat_idx_STAT_CGRP_DISPATCH),
        dsp_sticky: d(agentcg_stat_idx_STAT_CGRP_STICKY),
        dsp_prev: d(agentcg_stat_idx_STAT_PREV_KEPT),
        dsp_cpu_local: d(agentcg_stat_idx_STAT_MOVE_LOCAL),
        dsp_idle_local: d(agentcg_stat_idx_STAT_IDLE_LOCAL),
        dsp_kthread: d(agentcg_stat_idx_STAT_KTHREAD_LOCAL),
        dsp_last: d(agentcg_stat_idx_STAT_LAST_LOCAL),
        dsp_pinned: d(agentcg_stat_idx_STAT_PINNED_DISPATCH),
        dsp_fallback: d(agentcg_stat_idx_STAT_FALLBACK_DISPATCH),
        activations: d(agentcg_stat_idx_STAT_ACTIVATE),
        hweight_updates: d(agentcg_stat_idx_STAT_HWT_UPDATE),
        hweight_cached: d(agentcg_stat_idx_STAT_HWT_CACHED),
        requeues: d(agentcg_stat_idx_STAT_REQUEUE),
        pick_empty: d(agentcg_stat_idx_STAT_PICK_EMPTY),
        pick_giveups: d(agentcg_stat_idx_STAT_PICK_GIVEUP),
        rescues: d(agentcg_stat_idx_STAT_RESCUE),
        bw_throttles: d(agentcg_stat_idx_STAT_BW_THROTTLE),
        bandwidth,
        wake_preempts: d(agentcg_stat_idx_STAT_WAKE_PREEMPT),
        cgroups: rows
            .into_iter()
            .map(|r| {
                (
                    r.name,
                    CgroupMetrics {
                        cpu_pct: r.cpu_pct,
                        weight: r.weight,
                        hweight_pct: r.hweight_pct,
                        nr_runnable: r.nr_runnable,
                        dispatches: r.dispatches,
                    },
                )
            })
            .collect(),
    }
}

impl Metrics {
    pub fn format<W: Write>(&self, w: &mut W) -> Result<()> {
        writeln!(
            w,
            "[{}] cgroups run/act/all {}/{}/{} | dsp tree {} sticky {} prev {} cpu-local {} idle {} last {} kthr {} pinned {} fallback {} | hwt upd/hit {}/{} | requeue {} empty {} giveup {} rescue {} preempt {}",
            crate::SCHEDULER_NAME,
            self.nr_runnable_cgroups,
            self.nr_active_cgroups,
            self.nr_cgroups,
            self.dsp_tree,
            self.dsp_sticky,
            self.dsp_prev,
            self.dsp_cpu_local,
            self.dsp_idle_local,
            self.dsp_last,
            self.dsp_kthread,
            self.dsp_pinned,
            self.dsp_fallback,
            self.hweight_updates,
            self.hweight_cached,
            self.requeues,
            self.pick_empty,
            self.pick_giveups,
            self.rescues,
            self.wake_preempts,
        )?;
        if !self.cells.is_empty() {
            writeln!(
                w,
                "  cells: applies {} (last {} us) rebalances {} borrows {} reclaims {} | boosts {} no-credit {}",
                self.cell_applies,
                self.cell_apply_latency_us,
                self.rebalances,
                self.borrows,
                self.reclaims,
                self.boosts,
                self.boosts_no_credit
            )?;
            writeln!(
                w,
                "  {:<24} {:>4} {:>5} {:>7} {:>9} {:>6}  {}",
                "cell", "id", "cpus", "util%", "borrowed%", "lent%", "cpulist"
            )?;
            for (name, c) in &self.cells {
                writeln!(
                    w,
                    "  {:<24} {:>4} {:>5} {:>7.1} {:>9.1} {:>6.1}  {}",
                    name, c.id, c.cpus, c.util_pct, c.borrowed_pct, c.lent_pct, c.cpulist
                )?;
            }
        }
        if !self.observed.is_empty() {
            writeln!(
                w,
                "  {:<40} {:>8} {:>8} {:>8} {:>7} {:>6} {:>5} {:>4} {:>6} {:>6}",
                "observed session", "wakeups", "lat_us", "max_us", "mem_mb", "high", "max", "oomk", "memps", "cpups"
            )?;
            for (name, o) in &self.observed {
                writeln!(
                    w,
                    "  {:<40} {:>8} {:>8} {:>8} {:>7} {:>6} {:>5} {:>4} {:>6.1} {:>6.1}",
                    name,
                    o.wakeups,
                    o.wake_lat_avg_us,
                    o.wake_lat_max_us,
                    o.mem_current_mb,
                    o.mem_high,
                    o.mem_max,
                    o.mem_oom_kill,
                    o.mem_some_avg10,
                    o.cpu_some_avg10
                )?;
            }
        }
        if !self.memory.is_empty() {
            writeln!(w, "  {:<40} {:>6} {:>4} {:>10} {:>8} {:>9}", "memory pressure", "score", "pen", "pen_ms", "entries", "stall_ms")?;
            for (name, m) in &self.memory {
                writeln!(
                    w,
                    "  {:<40} {:>6} {:>4} {:>10} {:>8} {:>9}",
                    name,
                    m.thrash_score,
                    if m.penalised != 0 { "yes" } else { "" },
                    m.penalised_ms,
                    m.penalty_entries,
                    m.stall_ms
                )?;
            }
        }
        if !self.bandwidth.is_empty() {
            writeln!(
                w,
                "  {:<40} {:>7} {:>7} {:>9} {:>9} {:>12} {:>4}",
                "cpu.max", "quota%", "cpu%", "periods", "throttled", "thr_usec", "now"
            )?;
            for (name, b) in &self.bandwidth {
                writeln!(
                    w,
                    "  {:<40} {:>7.1} {:>7.1} {:>9} {:>9} {:>12} {:>4}",
                    name,
                    b.quota_pct,
                    b.cpu_pct,
                    b.nr_periods,
                    b.nr_throttled,
                    b.throttled_usec,
                    if b.throttled != 0 { "thr" } else { "" }
                )?;
            }
        }
        if self.cgroups.is_empty() {
            return Ok(());
        }
        writeln!(
            w,
            "  {:<40} {:>7} {:>6} {:>8} {:>4} {:>9}",
            "cgroup", "cpu%", "weight", "hweight%", "run", "dispatch"
        )?;
        let mut rows: Vec<_> = self.cgroups.iter().collect();
        rows.sort_by(|a, b| b.1.cpu_pct.partial_cmp(&a.1.cpu_pct).unwrap_or(std::cmp::Ordering::Equal));
        for (name, c) in rows {
            writeln!(
                w,
                "  {:<40} {:>7.1} {:>6} {:>8.1} {:>4} {:>9}",
                name, c.cpu_pct, c.weight, c.hweight_pct, c.nr_runnable, c.dispatches
            )?;
        }
        Ok(())
    }
}

pub fn server_data() -> StatsServerData<(), Snapshot> {
    let open: Box<dyn StatsOpener<(), Snapshot>> = Box::new(move |_chs| {
        // A client's first read covers the time since the scheduler
        // started, so one-shot clients get meaningful averages; later reads
        // cover the interval since that client's previous read.
        let mut prev = Snapshot::default();
        let read: Box<dyn StatsReader<(), Snapshot>> = Box::new(move |_args, (req_ch, res_ch)| {
            req_ch.send(())?;
            let cur = res_ch.recv()?;
            let metrics = metrics_between(&prev, &cur);
            prev = cur;
            metrics.to_json()
        });
        Ok(read)
    });

    StatsServerData::new()
        .add_meta(Metrics::meta())
        .add_meta(CgroupMetrics::meta())
        .add_meta(BandwidthMetrics::meta())
        .add_meta(CellMetrics::meta())
        .add_meta(StepMetrics::meta())
        .add_meta(MemoryMetrics::meta())
        .add_meta(SessionMetrics::meta())
        .add_meta(ObservedMetrics::meta())
        .add_ops("top", StatsOps { open, close: None })
}

pub fn monitor(intv: Duration, shutdown: Arc<AtomicBool>) -> Result<()> {
    scx_utils::monitor_stats::<Metrics>(
        &[],
        intv,
        || shutdown.load(Ordering::Relaxed),
        |metrics| metrics.format(&mut std::io::stdout()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf_intf::*;

    fn snap(at_ns: u64, tree: u64, usage: u64) -> Snapshot {
        let mut counters = vec![0; agentcg_stat_idx_AGENTCG_NR_STATS as usize];
        counters[agentcg_stat_idx_STAT_CGRP_DISPATCH as usize] = tree;
        Snapshot {
            at_ns,
            nr_cpus: 4,
            counters,
            cgroups: BTreeMap::from([(
                "a".to_string(),
                CgroupSample { usage_ns: usage, weight: 100, hweight: 1 << 15, ..Default::default() },
            )]),
            hweight_one: 1 << 16,
            ..Default::default()
        }
    }

    #[test]
    fn stats_server_starts_with_every_metric_type() {
        // every nested metrics struct must be registered, or launch fails
        let dir = std::env::temp_dir().join(format!("agentcg-stats-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = scx_stats::prelude::StatsServer::new(server_data())
            .set_path(dir.join("stats"))
            .launch();
        assert!(server.is_ok(), "{:#}", server.err().unwrap());
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn metrics_are_interval_deltas() {
        let m = metrics_between(&snap(0, 10, 0), &snap(1_000_000_000, 25, 500_000_000));
        assert_eq!(m.dsp_tree, 15);
        assert_eq!(m.nr_cgroups, 1);
        let a = &m.cgroups["a"];
        assert!((a.cpu_pct - 50.0).abs() < 1e-9);
        assert!((a.hweight_pct - 50.0).abs() < 1e-9);
    }

    #[test]
    fn format_prints_header_and_rows() {
        let m = metrics_between(&snap(0, 0, 0), &snap(1_000_000_000, 3, 250_000_000));
        let mut out = Vec::new();
        m.format(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("[scx_agentcg] cgroups run/act/all"));
        assert!(text.contains("dsp tree 3 "));
        assert!(text.lines().any(|l| l.trim_start().starts_with("a ") && l.contains("25.0")));
    }

    #[test]
    fn limited_cgroups_get_bandwidth_rows() {
        let prev = snap(0, 0, 0);
        let mut cur = snap(1_000_000_000, 0, 200_000_000);
        let a = cur.cgroups.get_mut("a").unwrap();
        a.bw_quota_ns = 20_000_000;
        a.bw_period_ns = 100_000_000;
        a.bw_nr_periods = 10;
        a.bw_nr_throttled = 9;
        a.bw_throttled_ns = 700_000_000;
        // a limited parent's own usage is 0: the subtree usage counts
        a.usage_ns = 0;
        a.bw_usage_ns = 200_000_000;
        a.bw_max_period_usage_ns = 21_000_000;
        let m = metrics_between(&prev, &cur);
        let b = &m.bandwidth["a"];
        assert!((b.quota_pct - 20.0).abs() < 1e-9);
        assert!((b.cpu_pct - 20.0).abs() < 1e-9);
        assert_eq!((b.period_us, b.nr_periods, b.nr_throttled, b.throttled_usec), (100_000, 10, 9, 700_000));
        assert_eq!((b.usage_usec, b.max_period_usec), (200_000, 21_000));
        let mut out = Vec::new();
        m.format(&mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("cpu.max"));
        assert!(metrics_between(&prev, &snap(1, 0, 0)).bandwidth.is_empty());
    }

    #[test]
    fn metrics_round_trip_through_json() {
        let m = metrics_between(&snap(0, 0, 0), &snap(1_000_000_000, 7, 1));
        let v = m.to_json().unwrap();
        let back: Metrics = serde_json::from_value(v).unwrap();
        assert_eq!(back.dsp_tree, 7);
        assert!(back.cgroups.contains_key("a"));
    }
}
