/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types and constants shared between the BPF scheduler and the Rust side
 * (through bindgen). Keep this header free of kernel-only types.
 */
#ifndef __AGENTCG_INTF_H
#define __AGENTCG_INTF_H

#ifndef __KERNEL__
typedef unsigned long long u64;
typedef unsigned int u32;
typedef int s32;
typedef long long s64;
typedef unsigned char u8;
#endif

enum agentcg_consts {
	/* fixed-point 1.0 for hierarchical weights */
	AGENTCG_HWEIGHT_ONE	= 1 << 16,
	/* cpu.weight a cgroup's own tasks compete with when it also has children */
	AGENTCG_SELF_WEIGHT	= 100,
	AGENTCG_MAX_CPUS	= 512,
	/* how many tree nodes one dispatch may look at before giving up */
	AGENTCG_PICK_RETRIES	= 16,
	/* tasks of a cgroup DSQ a dispatch looks at for one that last ran here */
	AGENTCG_LOCAL_LOOKAHEAD	= 4,
	/* how far (in cgroup slices of vtime) a cgroup may lag its ancestors */
	AGENTCG_HERD_SLACK	= 2,
	/* period of the stranded-cgroup sweep, and cgroups fixed per sweep */
	AGENTCG_SWEEP_MS	= 20,
	AGENTCG_SWEEP_BATCH	= 16,
	/* shortest slice cpu.max clipping gives a task */
	AGENTCG_BW_MIN_SLICE_NS	= 100000,
	/* thrash score window, and the shortest idle gap that counts */
	AGENTCG_THRASH_WINDOW_NS = 100000000,
	/* memcg_ops: classes 0 (none) to 3, the kernel's delay clamp, self-test size */
	AGENTCG_NR_CLASSES	= 4,
	AGENTCG_MAX_DELAY_MS	= 2000,
	AGENTCG_SELFTEST_MAX	= 32,
	AGENTCG_ACT_DEBOUNCE_NS	= 50000000,

	/* cells (cells.bpf.h): cell 0 is the system cell */
	AGENTCG_MAX_CELLS	= 64,
	/* placement domains: one per cell, then one per distinct step mask */
	AGENTCG_MAX_DOMAINS	= 256,
	/* domains one CPU may belong to (its cell + step masks inside it) */
	AGENTCG_CPU_DOMAINS	= 8,
	AGENTCG_MASK_WORDS	= 8,	/* AGENTCG_MAX_CPUS / 64 */
	/* policy profiles (policy.bpf.h); profile 0 is "none" */
	AGENTCG_MAX_PROFILES	= 64,
	/* fixed-point 1.0 for weight multipliers */
	AGENTCG_MULT_ONE	= 1024,

	/* memory arbitration (memory.bpf.h): sessions in the pause order */
	AGENTCG_MEM_MAX_SESSIONS = 64,
	/* mem_ctl.mode: BPF may hold the session / must let it run */
	AGENTCG_MEM_CANDIDATE	= 1,
	AGENTCG_MEM_RUN		= 2,
};

/* DSQ ids: cgroup DSQs use the cgroup id (the directory's inode number) */
#define AGENTCG_FALLBACK_DSQ	(1ULL << 60)
#define AGENTCG_PINNED_DSQ_BASE	(1ULL << 61)
/* per-domain queue of boosted waking tasks (interactive steps) */
#define AGENTCG_BOOST_DSQ_BASE	(1ULL << 62)

enum agentcg_stat_idx {
	STAT_ACTIVATE,		/* a cgroup became runnable */
	STAT_DEACTIVATE,	/* a cgroup became quiescent */
	STAT_IDLE_LOCAL,	/* select_cpu found an idle CPU: direct local insert */
	STAT_KTHREAD_LOCAL,	/* per-CPU kthread inserted locally */
	STAT_LAST_LOCAL,	/* the CPU's only runnable task kept running */
	STAT_PINNED_ENQ,	/* restricted-affinity task enqueued (pinned DSQ or its CPU) */
	STAT_CGRP_DISPATCH,	/* task moved from a cgroup DSQ (picked from the tree) */
	STAT_CGRP_STICKY,	/* task moved from the CPU's current cgroup (slice left) */
	STAT_PREV_KEPT,		/* a task whose slice ran out kept its CPU: its cgroup still first */
	STAT_MOVE_LOCAL,	/* a cgroup DSQ gave a task that last ran on this CPU */
	STAT_PINNED_DISPATCH,	/* task moved from the CPU's pinned DSQ */
	STAT_FALLBACK_DISPATCH,	/* task moved from the fallback DSQ */
	STAT_HWT_UPDATE,	/* hierarchical weight recomputed */
	STAT_HWT_CACHED,	/* cached hierarchical weight reused */
	STAT_PICK_EMPTY,	/* tree node popped for a cgroup with an empty DSQ */
	STAT_REQUEUE,		/* popped node requeued: its key moved (usage, herd floor) */
	STAT_PICK_GIVEUP,	/* dispatch ran out of tree retries */
	STAT_RESCUE,		/* a cgroup with queued tasks put back in the tree late */
	STAT_BW_THROTTLE,	/* cpu.max: a cgroup ran out of budget */
	STAT_BW_PARK,		/* cpu.max: a throttled cgroup's node parked */
	STAT_BW_UNPARK,		/* cpu.max: a parked node back in the tree */
	STAT_WAKE_PREEMPT,	/* a waking task preempted a CPU serving a later cgroup */
	STAT_BORROW,		/* a CPU picked a cgroup of another cell */
	STAT_RECLAIM,		/* a CPU lent to another cell was taken back */
	STAT_BOOST,		/* a waking task was boosted (interactive step) */
	STAT_BOOST_DISPATCH,	/* task moved from a boost DSQ */
	STAT_NO_CREDIT,		/* a boostable wakeup had no burst credit left */
	STAT_THRASH_PENALTY,	/* a cgroup entered the thrash penalty */
	STAT_THRASH_CAPPED,	/* a penalised task queued on its capped CPUs */
	STAT_THRASH_GLOBAL_RECLAIM, /* direct reclaim with no memcg (global), tracepoint hooks */
	STAT_MEM_HOLD,		/* memory guard: a session held back */
	STAT_MEM_RELEASE,	/* memory guard: a held session let run again */
	STAT_YIELD_PINNED,	/* a yielding task queued on the yield CPUs */
	AGENTCG_NR_STATS,
};

/*
 * Activity of a session or cgroup subtree (activity.bpf.h): runs and gaps,
 * a gap shorter than AGENTCG_ACT_DEBOUNCE_NS counted as active time.
 */
struct activity {
	u64 active_at;		/* start of the current active run */
	u64 idle_at;		/* idle since (0: active) */
	u64 active_ns;		/* finished active runs */
	u64 idle_ns;		/* finished idle gaps */
	u64 nr_up;		/* idle -> active */
	u64 nr_down;		/* active -> idle (finished gaps) */
};

/*
 * Per-cgroup scheduling context (BPF cgroup storage). Userspace reads it by
 * cgroup fd for the per-cgroup stats, so it must stay plain data.
 */
struct cgrp_ctx {
	u64 cgid;
	u32 weight;		/* cpu.weight */
	u32 level;
	u32 nr_runnable;	/* runnable tasks directly in this cgroup */
	u32 nr_active;		/* (own tasks runnable) + active children */
	u32 self_counted;	/* own tasks counted in child_weight_sum */
	u32 counted;		/* this cgroup counted in its parent's sum */
	u64 child_weight_sum;	/* active children's weights (+ self weight) */
	u64 hweight;		/* hierarchical weight of the group (fixed point) */
	u64 hweight_own;	/* share of this cgroup's own tasks (fixed point) */
	u64 hweight_gen;
	u64 cvtime;		/* vtime of the cgroup's own tasks */
	u64 gvtime;		/* vtime of the whole subtree (herd control) */
	u64 reserved;		/* vtime reserved by CPUs serving this cgroup */
	u64 tvtime_now;		/* task vtime frontier inside the cgroup */
	u64 queued;		/* the cgroup's node is in the tree */
	u64 direct_at;		/* a waking task went straight onto a CPU (ns) */
	u64 enq_seq;		/* tasks enqueued so far (picker race check) */
	u64 usage_ns;		/* CPU time of this cgroup's own tasks */
	u64 nr_dispatches;	/* tasks dispatched from this cgroup's DSQ */

	/* cpu.max (bandwidth.bpf.h); bw_quota_ns == 0: not limited */
	u64 bw_period_ns;
	u64 bw_quota_ns;
	u64 bw_burst_ns;
	s64 bw_runtime;		/* budget left in this period */
	u64 bw_throttled;
	u64 bw_period_used;
	u64 bw_throttled_at;
	u64 bw_nr_periods;
	u64 bw_nr_throttled;
	u64 bw_throttled_ns;
	u64 bw_usage_ns;	/* subtree CPU time charged while limited */
	u64 bw_period_usage;	/* subtree CPU time charged in this period */
	u64 bw_max_period_usage; /* largest bw_period_usage of a finished period */
	u64 bw_next_refill;	/* CLOCK_MONOTONIC time of the next refill */

	/* cells and policy (cells.bpf.h, policy.bpf.h) */
	u32 raw_weight;		/* cpu.weight as the kernel gave it */
	u32 cfg_seq;		/* cells_seq the fields below were resolved at */
	u32 cell;
	u32 domain;
	u32 profile;
	u32 herd_level;		/* lowest ancestor level herd control looks at */
	u64 slice_ns;		/* task slice (profile override or default) */
	s64 credit_ns;		/* wakeup-boost burst credit (token bucket) */
	u64 credit_at;		/* when credit_ns was last refilled */
	u64 nr_boosts;
	u64 boost_ns;		/* CPU time run on boosted wakeups */

	/* memory pressure (thrash.bpf.h) */
	u64 thr_live;		/* has a score or stall: folded at charges */
	u64 thr_stall_ns;	/* stall in the current window (closed stalls) */
	u64 thr_open;		/* tasks in a stall now (thrash_stall_open) */
	u64 thr_open_late_ns;	/* sum of (open - window start) of stalls
				   opened in the current window */
	u64 thr_stall_total_ns;
	u64 thr_window_at;	/* start of the current window */
	u32 thr_score;		/* permille, EWMA over windows */
	u32 thr_penalised;
	u64 thr_peak_score;	/* highest thr_score so far */
	u64 thr_penalised_at;
	u64 thr_penalised_ns;	/* time penalised (finished penalties) */
	u64 thr_nr_penalties;

	/* subtree activity, debounced (activity.bpf.h) */
	struct activity act;

	/* memory arbitration (memory.bpf.h): the session is held back */
	u64 mem_held;
	u64 mem_held_at;	/* when the hold began */
	u64 mem_crossed_at;	/* when the guard line was crossed (that hold) */
	u64 mem_grew_at;	/* last poll that saw its usage grow while held */
	u64 mem_usage_pages;	/* its usage at the hold, then the highest seen */
	u64 mem_nr_holds;
	u64 mem_held_ns;	/* finished holds */
	u64 mem_rest_until;	/* released by the hold limit: not held before this */
	u64 mem_first_hold;	/* that hold was the episode's first (none since the crossing) */
};

/*
 * What userspace assigns to a configured cgroup (map cgrp_cfgs, keyed by
 * cgroup id). Cgroups without an entry inherit their nearest configured
 * ancestor's, or cell 0 / domain 0 / no profile.
 */
struct cgrp_cfg {
	u32 cell;
	u32 domain;
	u32 profile;
	u32 herd_level;
};

/* A policy profile as BPF applies it (array map profiles). */
struct profile_cfg {
	u32 class;		/* 1 interactive, 2 tool, 3 background */
	u32 weight_mult;	/* x AGENTCG_MULT_ONE */
	u64 slice_ns;		/* 0: the default slice */
	u64 credit_max_ns;	/* burst credit capacity (0: no boost) */
	u32 refill_pct;		/* credit refill, percent of one CPU */
	u32 boost;		/* wakeup boost on */
	u32 thrash_weight_pct;	/* weight under thrash penalty (0: default) */
	u32 thrash_slice_pct;	/* slice under thrash penalty (0: default) */
	u32 yield;		/* yield_to_interactive (yielding.bpf.h) */
	u32 pad;
};

/*
 * memcg_ops (memcg_ops.bpf.h): the memory.high delay curve of a step class.
 * Delay 0 up to start_pct over memory.high, then base_ms + slope_ms_per_pct
 * per point beyond, at most max_ms (and 2000, the kernel's clamp); halved
 * while the step has burst credit. Same formula as src/memcg_ops.rs.
 */
struct delay_curve {
	u32 start_pct;
	u32 base_ms;
	u32 slope_ms_per_pct;
	u32 max_ms;
};

/* Per-cgroup memory pressure, shared by the scheduler and memcg_ops. */
struct mem_pressure {
	u32 score;		/* thrash score, permille (scheduler) */
	u32 penalised;		/* thrash penalty on (scheduler) */
	u32 credit_ok;		/* burst credit left (scheduler) */
	u32 pad;
	u64 nr_delays;		/* memcg_ops: memory.high delays given */
	u64 delay_ms_total;	/* memcg_ops: their sum */
};

/*
 * What userspace tells memcg_ops about a step (map step_mems, by cgroup
 * id). Written whole by userspace only: a map of its own, so that no
 * read-modify-write of userspace races BPF's updates of mem_pressure.
 */
struct step_mem {
	u32 class;		/* step class */
	u32 pad;
	u64 protect_bytes;	/* below_low budget (min: half) */
};

/* The agentcg_selftest_delay program's input and output. */
struct selftest_case {
	u32 class;
	u32 credit_ok;
	u64 usage;
	u64 high;
};

struct selftest_args {
	struct delay_curve curves[AGENTCG_NR_CLASSES];
	u32 nr_cases;
	u32 pad;
	struct selftest_case cases[AGENTCG_SELFTEST_MAX];
	u32 out[AGENTCG_SELFTEST_MAX];
};

/*
 * The cell layout userspace stages in .bss (cells_staged) before running
 * the agentcg_apply_cells program, which installs it all at once.
 */
struct cells_cfg {
	u32 nr_domains;
	u32 nr_cells;
	u64 domain_mask[AGENTCG_MAX_DOMAINS][AGENTCG_MASK_WORDS];
	u32 domain_cell[AGENTCG_MAX_DOMAINS];
	u32 cpu_cell[AGENTCG_MAX_CPUS];
	u32 cpu_nr_domains[AGENTCG_MAX_CPUS];
	u32 cpu_domains[AGENTCG_MAX_CPUS][AGENTCG_CPU_DOMAINS];
};

/* per-cell counters (cell_stats in .bss) */
struct cell_stat {
	u64 busy_ns;		/* CPU time used on the cell's CPUs */
	u64 used_ns;		/* CPU time the cell's tasks used, anywhere */
	u64 borrowed_ns;	/* the cell's tasks ran on other cells' CPUs */
	u64 lent_ns;		/* other cells' tasks ran on this cell's CPUs */
};

/*
 * Memory arbitration, userspace to BPF (memory.bpf.h). Thresholds are
 * permille of the tightest memory.max on the guard cgroup's path.
 */
struct mem_cfg {
	u64 guard_cgid;		/* the managed parent; 0: arbitration off */
	u64 poll_ns;		/* guard poll period */
	u64 gap_ns;		/* at least this between two holds or two releases */
	u64 hold_max_ns;	/* a hold longer than this is released (watchdog) */
	u64 rest_ns;		/* and the session is not held again for this long */
	u32 guard_permille;	/* hold the next candidate at or above this */
	u32 resume_permille;	/* release the oldest hold below this */
};

/* One session's arbitration state as userspace sets it (map mem_ctls). */
struct mem_ctl {
	u32 mode;		/* AGENTCG_MEM_CANDIDATE or AGENTCG_MEM_RUN */
	u32 rank;		/* its place in the pause order (0 first) */
};

/* argument of the agentcg_set_bandwidth syscall program */
struct bw_args {
	u64 cgid;
	u64 period_us;
	u64 quota_us;
	u64 burst_us;
};

/*
 * --observe (observe.bpf.c): one session's counters (map obs_sessions,
 * keyed by the session's cgroup id, entries made by userspace). Written
 * from tracepoints without a lock: a racing update may be lost, which an
 * observation can afford.
 */
struct obs_session {
	u64 run_ns;		/* CPU time of its tasks' finished runs */
	u64 nr_runs;		/* times one of its tasks got a CPU */
	u64 nr_wakeups;
	u64 nr_wake_lat;	/* wake-ups whose wake-to-run time was measured */
	u64 wake_lat_ns;	/* their sum */
	u64 wake_lat_max_ns;
	s64 nr_on_cpu;		/* its tasks on a CPU now */
	struct activity act;	/* active: one of its tasks on a CPU */
};

/* --observe: what a CPU runs now (per-CPU map obs_cpus) */
struct obs_cpu {
	u64 since;		/* it got the CPU at */
	u64 session;		/* its session's cgroup id, 0: none */
};

#endif /* __AGENTCG_INTF_H */
