/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Thrash-aware penalties: memory pressure seen in the kernel, answered in
 * the scheduler's own time scale.
 *
 * Signal. The time tasks lose to memory pressure ("stall") is measured
 * where PSI measures it: fentry psi_memstall_enter / fexit
 * psi_memstall_leave bracket direct reclaim, memory.high throttling (its
 * reclaim and its sleep in __mem_cgroup_handle_over_high), refaults of
 * thrashing pages and compaction. Where those cannot attach, the direct
 * reclaim tracepoints (which carry the memcg being reclaimed) are the
 * fallback. Stall is attributed to the cgroup whose memory is under
 * pressure: the nearest cgroup on the task's path whose usage is above its
 * memory.high, else the memcg the reclaim names, else the task's own
 * cgroup. Userspace turns off (autoload) the hooks it does not use and
 * says which are in use.
 *
 * Score. A cgroup with stall becomes "live". When a task of its subtree is
 * charged (stop or tick) and at least AGENTCG_THRASH_WINDOW_NS passed since
 * the last fold, one CPU folds the window (stall that ended in it, plus the
 * part in it of stalls still open): sample = stall per elapsed time
 * in permille (capped at 1000), score = (3 * score + sample) / 4. These are
 * the integer formulas of src/thrash.rs (thrash_sample, thrash_fold,
 * penalty_next), which the unit tests check. A cgroup whose score decayed
 * to 0 stops being live; nothing here costs anything while no cgroup is
 * live (nr_thrash_live).
 *
 * Response, with hysteresis (enter at thrash_enter_permille, leave at
 * thrash_exit_permille): a penalised cgroup's weight is scaled by its
 * profile's (or the default) weight percentage inside effective_weight(),
 * so the flattened hierarchy sees it at once; tasks at or below it get
 * shorter slices, no wakeup boost, and run only on thrash_cpus_pct of
 * their CPUs (queued on those CPUs' pinned DSQs, see thrash_capped()).
 * --no-thrash-penalty keeps the score (stats) and never penalises.
 *
 * Session activity is tracked here too: a cgroup's subtree going active or
 * idle (update_activity) is recorded with a debounce, so gaps shorter than
 * AGENTCG_ACT_DEBOUNCE_NS do not count as idle.
 */
#ifndef __AGENTCG_THRASH_BPF_H
#define __AGENTCG_THRASH_BPF_H

u64 nr_thrash_live;		/* cgroups with a score or pending stall */
u64 nr_thrash_penalised;	/* cgroups penalised now */
u64 thrash_stall_events;	/* stall intervals recorded (all hooks) */

enum cgroup_subsys_id___agentcg {
	memory_cgrp_id___agentcg = 4,
};

struct thr_task {
	u64 high_at;		/* entered the outermost memory stall */
	u64 high_cgid;		/* cgroup that stall goes to */
	u64 reclaim_at;		/* entered direct reclaim */
	u64 reclaim_cgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thr_task);
} thr_tasks SEC(".maps");

static __always_inline u32 thrash_sample(u64 stall_ns, u64 period_ns)
{
	u64 s = period_ns ? stall_ns * 1000 / period_ns : 0;

	return s < 1000 ? s : 1000;
}

static __always_inline u32 thrash_fold(u32 score, u32 sample)
{
	return (score * 3 + sample) / 4;
}

static __always_inline bool penalty_next(bool penalised, u32 score)
{
	if (score >= thrash_enter_permille)
		return true;
	if (score <= thrash_exit_permille)
		return false;
	return penalised;
}

/*
 * The cgroup id stall of the current task goes to: the nearest memcg on
 * its path above memory.high, else @fallback_css's cgroup (may be NULL),
 * else the task's own cgroup.
 */
static u64 pressure_cgid(struct cgroup_subsys_state *fallback_css)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cset;
	u32 memid, i;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id___agentcg,
					memory_cgrp_id___agentcg))
		goto fallback;	/* no memory controller */
	memid = bpf_core_enum_value(enum cgroup_subsys_id___agentcg,
				    memory_cgrp_id___agentcg);
	cset = BPF_CORE_READ(t, cgroups);
	if (cset && memid < 14)
		bpf_core_read(&css, sizeof(css), &cset->subsys[memid]);
	bpf_for(i, 0, 8) {
		struct mem_cgroup___agentcg *m = (void *)css;
		unsigned long usage, high;

		if (!css)
			break;
		usage = BPF_CORE_READ(m, memory.usage.counter);
		high = BPF_CORE_READ(m, memory.high);
		if (usage > high)
			return BPF_CORE_READ(css, cgroup, kn, id);
		css = BPF_CORE_READ(css, parent);
	}
fallback:
	if (fallback_css)
		return BPF_CORE_READ(fallback_css, cgroup, kn, id);
	return bpf_get_current_cgroup_id();
}

/* @c's cgroup has stall to score: make it live (folded at charges). */
static void thrash_make_live(struct cgrp_ctx *c, u64 now)
{
	if (!__sync_val_compare_and_swap(&c->thr_live, 0, 1)) {
		c->thr_window_at = now;
		__sync_fetch_and_add(&nr_thrash_live, 1);
	}
}

/*
 * A task of cgroup @cgid's pressure entered a stall at @at (@now == 0) or
 * left the stall it entered at @at (at @now). Open stalls count at every
 * fold, not only when they end: a task can sleep for up to two seconds in
 * memory.high throttling, and counting that only at its end let the score
 * decay meanwhile and the penalty flap. When a stall ends, what the folds
 * have not counted yet (its part in the current window) goes to the window.
 */
static void thrash_stall(u64 cgid, u64 at, u64 now)
{
	struct cgroup *cgrp;
	struct cgrp_ctx *c;
	u64 win, ns;

	if (!cgid || (now && now <= at))
		return;
	cgrp = bpf_cgroup_from_id(cgid);
	if (!cgrp)
		return;
	c = bpf_cgrp_storage_get(&cgrp_ctxs, cgrp, 0, 0);
	if (!c || !cgrp->level)
		goto out;
	if (!now) {
		thrash_make_live(c, at);
		win = c->thr_window_at;
		if (at > win)
			__sync_fetch_and_add(&c->thr_open_late_ns, at - win);
		__sync_fetch_and_add(&c->thr_open, 1);
		goto out;
	}
	win = c->thr_window_at;
	if (at > win) {
		ns = now - at;
		if (c->thr_open_late_ns >= at - win)
			__sync_fetch_and_sub(&c->thr_open_late_ns, at - win);
	} else {
		ns = now > win ? now - win : 0;
	}
	if (c->thr_open)
		__sync_fetch_and_sub(&c->thr_open, 1);
	__sync_fetch_and_add(&c->thr_stall_ns, ns);
	__sync_fetch_and_add(&c->thr_stall_total_ns, ns);
	__sync_fetch_and_add(&thrash_stall_events, 1);
out:
	bpf_cgroup_release(cgrp);
}

static struct thr_task *thr_task_get(void)
{
	return bpf_task_storage_get(&thr_tasks, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
}

/*
 * Memory stalls as PSI sees them: psi_memstall_enter/leave bracket direct
 * reclaim, memory.high throttling (its reclaim and its sleep), refaults of
 * thrashing pages (swap-in) and compaction. Nested brackets are counted
 * once (PF_MEMSTALL is set while the outermost one is open).
 */
#define AGENTCG_PF_MEMSTALL	0x01000000

SEC("fentry/psi_memstall_enter")
int BPF_PROG(agentcg_memstall_enter, unsigned long *flags)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct thr_task *tt;

	if (t->flags & AGENTCG_PF_MEMSTALL)
		return 0;	/* nested: the outer bracket counts */
	tt = thr_task_get();
	if (tt) {
		tt->high_cgid = pressure_cgid(NULL);
		tt->high_at = bpf_ktime_get_ns();
		thrash_stall(tt->high_cgid, tt->high_at, 0);
	}
	return 0;
}

SEC("fexit/psi_memstall_leave")
int BPF_PROG(agentcg_memstall_leave, unsigned long *flags)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct thr_task *tt;
	u64 at;

	if (t->flags & AGENTCG_PF_MEMSTALL)
		return 0;	/* an inner bracket closed */
	tt = bpf_task_storage_get(&thr_tasks, t, 0, 0);
	if (!tt || !tt->high_at)
		return 0;
	at = tt->high_at;
	tt->high_at = 0;
	thrash_stall(tt->high_cgid, at, bpf_ktime_get_ns());
	return 0;
}

/*
 * Fallback where the PSI hooks cannot attach: direct reclaim only.
 *
 * Global reclaim passes memcg == NULL, but the verifier takes a tp_btf
 * pointer argument to be non-NULL and prunes a test of it: tested there,
 * a global reclaim's stall went to cgroup id 0 (nowhere) instead of the
 * task's own pressure. So the test is made on a copy of the raw argument,
 * which the verifier sees as a plain number.
 */
SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(agentcg_reclaim_begin, gfp_t gfp, int order, struct mem_cgroup *memcg)
{
	struct thr_task *tt = thr_task_get();
	u64 raw = 0;

	if (!tt)
		return 0;
	bpf_probe_read_kernel(&raw, sizeof(raw), &ctx[2]);
	if (!raw)
		stat_inc(STAT_THRASH_GLOBAL_RECLAIM);
	tt->reclaim_cgid = pressure_cgid(raw ? (struct cgroup_subsys_state *)memcg : NULL);
	tt->reclaim_at = bpf_ktime_get_ns();
	thrash_stall(tt->reclaim_cgid, tt->reclaim_at, 0);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(agentcg_reclaim_end, unsigned long nr_reclaimed, struct mem_cgroup *memcg)
{
	struct thr_task *tt = thr_task_get();
	u64 at;

	if (!tt || !tt->reclaim_at)
		return 0;
	at = tt->reclaim_at;
	tt->reclaim_at = 0;
	thrash_stall(tt->reclaim_cgid, at, bpf_ktime_get_ns());
	return 0;
}

/* Is @cgrp or one of its ancestors penalised? */
static bool thrash_penalised(struct cgroup *cgrp)
{
	struct cgrp_ctx *c;
	u32 level;

	if (!nr_thrash_penalised)
		return false;
	bpf_for(level, 1, cgrp->level + 1) {
		c = ancestor_ctx(cgrp, level);
		if (c && c->thr_penalised)
			return true;
	}
	return false;
}

/*
 * Concurrency cap: tasks of a penalised cgroup run only on part of their
 * CPUs, so a task of another cgroup that wakes while they are deep in
 * reclaim (where the kernel does not preempt them at once) finds an idle
 * CPU. Weight and slice alone cannot do that: with a hog thread on every
 * CPU the waker waits whatever its weight.
 */
static bool thrash_capped(struct cgroup *cgrp)
{
	return thrash_cpus_pct < 100 && nr_thrash_penalised &&
	       thrash_penalised(cgrp);
}

/*
 * Cut @m to the CPUs a penalised task may use: its highest-numbered
 * max(1, n * thrash_cpus_pct / 100) CPUs (penalty_cpu_set() in
 * src/thrash.rs; low CPUs tend to carry the housekeeping).
 */
static void thrash_cap_mask(struct bpf_cpumask *m)
{
	u32 n = bpf_cpumask_weight((const struct cpumask *)m);
	u32 keep = n * thrash_cpus_pct / 100, seen = 0;
	s32 i, cpu;

	if (!keep)
		keep = 1;
	bpf_for(i, 0, nr_cpus) {
		cpu = nr_cpus - 1 - i;
		if (!bpf_cpumask_test_cpu(cpu, (const struct cpumask *)m))
			continue;
		if (seen < keep)
			seen++;
		else
			bpf_cpumask_clear_cpu(cpu, m);
	}
}

/* The task slice of @cgrp's tasks, shortened while it is penalised. */
static u64 thrash_slice(struct cgroup *cgrp, struct cgrp_ctx *cgc, u64 slice)
{
	struct profile_cfg *prof;
	u32 pct = thrash_slice_pct;

	if (!nr_thrash_penalised || !thrash_penalised(cgrp))
		return slice;
	prof = profile_of(cgc);
	if (prof && prof->thrash_slice_pct)
		pct = prof->thrash_slice_pct;
	slice = slice * pct / 100;
	return slice > AGENTCG_BW_MIN_SLICE_NS ? slice : AGENTCG_BW_MIN_SLICE_NS;
}

/* Fold the window of ancestor @level of @cgrp (context @c) that ended at @now. */
static void thrash_fold_window(struct cgroup *cgrp, u32 level, struct cgrp_ctx *c,
			       u64 elapsed, u64 now)
{
	struct mem_pressure *mp;
	struct cgroup *anc;
	u64 late = __sync_lock_test_and_set(&c->thr_open_late_ns, 0);
	u64 open_ns = c->thr_open * elapsed, stall;
	u32 score;
	bool was = c->thr_penalised, pen;

	/* stalls still open count from the window start or their own */
	open_ns = open_ns > late ? open_ns - late : 0;
	__sync_fetch_and_add(&c->thr_stall_total_ns, open_ns);
	stall = __sync_lock_test_and_set(&c->thr_stall_ns, 0) + open_ns;
	score = thrash_fold(c->thr_score, thrash_sample(stall, elapsed));

	c->thr_score = score;
	if (score > c->thr_peak_score)
		c->thr_peak_score = score;
	pen = thrash_penalty_on && penalty_next(was, score);
	if (pen != was) {
		c->thr_penalised = pen;
		if (pen) {
			c->thr_penalised_at = now;
			c->thr_nr_penalties++;
			__sync_fetch_and_add(&nr_thrash_penalised, 1);
			stat_inc(STAT_THRASH_PENALTY);
		} else {
			c->thr_penalised_ns += now - c->thr_penalised_at;
			__sync_fetch_and_sub(&nr_thrash_penalised, 1);
		}
		anc = bpf_cgroup_ancestor(cgrp, level);
		if (anc) {
			set_weight(anc, c, effective_weight(c));
			bpf_cgroup_release(anc);
		}
	}
	mp = bpf_map_lookup_elem(&mem_pressure, &c->cgid);
	if (!mp && score) {
		struct mem_pressure init = {};

		bpf_map_update_elem(&mem_pressure, &c->cgid, &init, BPF_NOEXIST);
		mp = bpf_map_lookup_elem(&mem_pressure, &c->cgid);
	}
	if (mp) {
		mp->score = score;
		mp->penalised = pen;
		mp->credit_ok = c->credit_ns > 0;
	}
	if (!score && !stall && !pen && !c->thr_open &&
	    __sync_val_compare_and_swap(&c->thr_live, 1, 0) == 1)
		__sync_fetch_and_sub(&nr_thrash_live, 1);
}

/* Called for every charge of a task of @cgrp: fold ended windows on its path. */
static void thrash_charge(struct cgroup *cgrp)
{
	struct cgrp_ctx *c;
	u64 now, at;
	u32 level;

	if (!nr_thrash_live)
		return;
	now = bpf_ktime_get_ns();
	bpf_for(level, 1, cgrp->level + 1) {
		c = ancestor_ctx(cgrp, level);
		if (!c || !c->thr_live)
			continue;
		at = c->thr_window_at;
		if (now - at < AGENTCG_THRASH_WINDOW_NS)
			continue;
		/* one CPU folds each window */
		if (__sync_val_compare_and_swap(&c->thr_window_at, at, now) != at)
			continue;
		thrash_fold_window(cgrp, level, c, now - at, now);
	}
}

/* @cgrp goes away: drop it from the live and penalised counts. */
static void thrash_cgroup_exit(struct cgroup *cgrp)
{
	struct cgrp_ctx *c = cgrp_ctx_of(cgrp);
	u64 cgid = cgrp->kn->id;

	bpf_map_delete_elem(&mem_pressure, &cgid);
	if (!c)
		return;
	if (__sync_val_compare_and_swap(&c->thr_penalised, 1, 0) == 1)
		__sync_fetch_and_sub(&nr_thrash_penalised, 1);
	if (__sync_val_compare_and_swap(&c->thr_live, 1, 0) == 1)
		__sync_fetch_and_sub(&nr_thrash_live, 1);
}

#endif /* __AGENTCG_THRASH_BPF_H */
