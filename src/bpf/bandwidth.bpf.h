/* SPDX-License-Identifier: GPL-2.0 */
/*
 * In-BPF cpu.max: the kernel enforces cpu.max only for fair-class tasks and
 * merely hands the values to a BPF scheduler, so scx_agentcg enforces them.
 *
 * Each limited cgroup has a budget (bw_runtime, ns) that every charge of a
 * task in its subtree draws down. A per-cgroup bpf_timer refills it every
 * period, on a fixed grid of periods (bw_next_refill()), CFS style:
 * runtime = min(runtime + quota, quota + burst), so unused quota
 * accumulates up to the burst and an overrun is paid back in the next
 * period. A cgroup whose budget reaches zero is throttled; so is
 * everything below it.
 *
 * Enforcement points, all free while no cgroup is limited (nr_bw_cgroups)
 * and mostly free while none is throttled (nr_bw_throttled):
 * - the picker parks the tree node of a cgroup with a throttled ancestor
 *   (or self) in a separate "parked" tree; the refill timer asks dispatch
 *   to move parked nodes back (bw_unpark_pending). A picker that parks
 *   a node just as the refill's unpark ran re-checks after parking, and
 *   the sweep timer unparks whatever is parked every 20 ms besides, so a
 *   late-parked cgroup cannot sit there with nothing left to unthrottle
 *   it (its tasks would never run again);
 * - a CPU stops serving its current cgroup once it is throttled;
 * - the idle fast path and the keep-the-last-task path step aside;
 * - restricted-affinity tasks of throttled cgroups are stepped over in the
 *   per-CPU pinned DSQs and their CPUs kicked at the refill;
 * - running() clips a task's slice to the smallest remaining budget on its
 *   path, and tick() ends the slice of a task whose cgroup got throttled,
 *   except inside a migrate_disable() section (bw_may_stop()).
 *
 * Worst-case overrun in one period: running() clips each slice to the
 * budget left divided by the number of CPUs (at least
 * AGENTCG_BW_MIN_SLICE_NS), so the CPUs together start little more than the
 * budget left. A budget is seen to be exhausted when a charge lands (a
 * slice ends or a tick, on any CPU running the cgroup); that CPU then
 * preempts every other CPU running a task below the throttled cgroup
 * (bw_kick_throttled), and a task that was already queued on a CPU gives it
 * up as soon as it starts running. Slices themselves end at ticks, so the overrun is at
 * most about one tick of every CPU running the cgroup (4 * 4 ms at HZ=250
 * on 4 CPUs), and typically much less. It is carried as debt into the next
 * period, so usage over several periods converges to the quota (within 2 %
 * in the tests).
 */
#ifndef __AGENTCG_BANDWIDTH_BPF_H
#define __AGENTCG_BANDWIDTH_BPF_H

#define BW_NO_LIMIT	((s64)0x7fffffffffffffffLL)

u64 nr_bw_cgroups;	/* cgroups with a quota */
u64 nr_bw_throttled;	/* cgroups throttled now */
u64 bw_unpark_pending;	/* a refill unthrottled something: unpark */
u64 nr_bw_parked;	/* nodes in the parked tree */

struct bw_timer {
	struct bpf_timer timer;
	u64 cgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct bw_timer);
} bw_timers SEC(".maps");

/*
 * Is @cgrp or one of its non-root ancestors throttled, or held back by the
 * memory guard (memory.bpf.h, which counts its holds in nr_bw_throttled)?
 */
static bool bw_throttled(struct cgroup *cgrp)
{
	struct cgrp_ctx *c;
	u32 level;

	if (!nr_bw_throttled)
		return false;
	bpf_for(level, 1, cgrp->level + 1) {
		c = ancestor_ctx(cgrp, level);
		if (c && (c->bw_throttled || c->mem_held))
			return true;
	}
	return false;
}

/* bw_throttled() of the cgroup with id @cgid (false if it is gone). */
static bool cgid_bw_throttled(u64 cgid)
{
	struct cgroup *cgrp;
	bool ret;

	if (!nr_bw_throttled)
		return false;
	cgrp = bpf_cgroup_from_id(cgid);
	if (!cgrp)
		return false;
	ret = bw_throttled(cgrp);
	bpf_cgroup_release(cgrp);
	return ret;
}

static bool task_bw_throttled(struct task_struct *p)
{
	struct cgroup *cgrp;
	bool ret;

	if (!nr_bw_throttled)
		return false;
	cgrp = scx_bpf_task_cgroup(p);
	if (!cgrp)
		return false;
	ret = bw_throttled(cgrp);
	bpf_cgroup_release(cgrp);
	return ret;
}

/*
 * May cpu.max take the CPU from running task @p? Not while it exits (it
 * frees what it holds), and not inside a migrate_disable() section: the
 * kernel puts such a task straight back on its CPU's local DSQ without
 * ops.enqueue, so running() would stop it again at once, for ever. That
 * livelocked our own init_task, preempted in fork with the RCU read lock
 * held, until sched_ext aborted on the RCU stall. The section is short;
 * what it runs over the budget is paid back as debt.
 */
static bool bw_may_stop(struct task_struct *p)
{
	return !(p->flags & PF_EXITING) && !is_migration_disabled(p);
}

/*
 * @slice cut to this CPU's part of @rem, the budget left on the task's
 * path (bw_remaining()): every CPU may be running a task of the same
 * limited cgroup. Never below AGENTCG_BW_MIN_SLICE_NS.
 */
static u64 bw_cap_slice(s64 rem, u64 slice)
{
	if (rem == BW_NO_LIMIT)
		return slice;
	rem /= nr_cpus;
	if (rem < (s64)slice)
		slice = rem > AGENTCG_BW_MIN_SLICE_NS ? rem : AGENTCG_BW_MIN_SLICE_NS;
	return slice;
}

/* Smallest budget left on @cgrp's path, BW_NO_LIMIT if nothing is limited. */
static s64 bw_remaining(struct cgroup *cgrp)
{
	s64 rem = BW_NO_LIMIT;
	struct cgrp_ctx *c;
	u32 level;

	if (!nr_bw_cgroups)
		return rem;
	bpf_for(level, 1, cgrp->level + 1) {
		c = ancestor_ctx(cgrp, level);
		if (c && c->bw_quota_ns && c->bw_runtime < rem)
			rem = c->bw_runtime;
	}
	return rem;
}

static void bw_throttle(struct cgrp_ctx *c)
{
	if (__sync_val_compare_and_swap(&c->bw_throttled, 0, 1))
		return;
	c->bw_throttled_at = bpf_ktime_get_ns();
	__sync_fetch_and_add(&c->bw_nr_throttled, 1);
	__sync_fetch_and_add(&nr_bw_throttled, 1);
	stat_inc(STAT_BW_THROTTLE);
}

static void bw_unthrottle(struct cgrp_ctx *c)
{
	if (!__sync_val_compare_and_swap(&c->bw_throttled, 1, 0))
		return;
	c->bw_throttled_ns += bpf_ktime_get_ns() - c->bw_throttled_at;
	__sync_fetch_and_sub(&nr_bw_throttled, 1);
	bw_unpark_pending = 1;
}

/* Draw @ns from the budget of one limited cgroup of the charged path. */
static __always_inline void bw_charge_one(struct cgrp_ctx *c, u64 ns)
{
	if (!c->bw_quota_ns)
		return;
	c->bw_period_used = 1;
	__sync_fetch_and_add(&c->bw_usage_ns, ns);
	__sync_fetch_and_add(&c->bw_period_usage, ns);
	if (__sync_sub_and_fetch(&c->bw_runtime, (s64)ns) <= 0)
		bw_throttle(c);
}

/*
 * Restricted-affinity tasks of a throttled cgroup wait in their CPU's pinned
 * DSQ (dispatch_pinned() steps over them); an idle CPU would not look again,
 * so every CPU with pinned tasks is kicked when a refill unthrottles.
 */
static void bw_kick_pinned(void)
{
	s32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		if (scx_bpf_dsq_nr_queued(PINNED_DSQ(cpu)))
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
	}
}

/*
 * Refills run on a fixed grid of @period steps, like CFS's period timer: a
 * timer re-armed for "now + period" would drift by its own firing latency
 * every period, and each late period hands out one quota for more than a
 * period of time (about 2.5 % under the quota in the VM, more on a loaded
 * host). A refill late by more than a period skips to the next grid point.
 */
static u64 bw_next_refill(struct cgrp_ctx *c, u64 period)
{
	u64 now = bpf_ktime_get_ns(), next = c->bw_next_refill + period;

	if (next <= now)
		next += ((now - next) / period + 1) * period;
	c->bw_next_refill = next;
	return next;
}

static int bw_timer_fn(void *map, u64 *key, struct bw_timer *t)
{
	struct cgroup *cgrp;
	struct cgrp_ctx *c;
	s64 runtime, cap;
	u64 period = 0, used;

	cgrp = bpf_cgroup_from_id(t->cgid);
	if (!cgrp)
		return 0;	/* the cgroup is gone: let the timer lapse */
	c = cgrp_ctx_of(cgrp);
	if (c && c->bw_quota_ns) {
		period = c->bw_period_ns;
		if (c->bw_period_used || c->bw_throttled) {
			c->bw_nr_periods++;
			c->bw_period_used = 0;
		}
		used = __sync_lock_test_and_set(&c->bw_period_usage, 0);
		if (used > c->bw_max_period_usage)
			c->bw_max_period_usage = used;
		cap = (s64)(c->bw_quota_ns + c->bw_burst_ns);
		runtime = c->bw_runtime + (s64)c->bw_quota_ns;
		c->bw_runtime = runtime < cap ? runtime : cap;
		if (c->bw_runtime > 0 && c->bw_throttled) {
			bw_unthrottle(c);
			scx_bpf_kick_cpu(bpf_get_smp_processor_id(), 0);
			bw_kick_pinned();
		}
	}
	bpf_cgroup_release(cgrp);
	if (period)
		bpf_timer_start(&t->timer, bw_next_refill(c, period),
				BPF_F_TIMER_ABS);
	return 0;
}

/*
 * Apply cpu.max / cpu.max.burst to @cgrp. quota_us of U64_MAX (or 0) means
 * "max": no limit. Changes take effect at once for the current budget and
 * fully at the next refill.
 */
static s32 bw_apply(struct cgroup *cgrp, u64 period_us, u64 quota_us, u64 burst_us)
{
	struct bw_timer init = {}, *t;
	struct cgrp_ctx *c;
	u64 cgid = cgrp->kn->id, old;
	s64 cap;

	c = cgrp_ctx_of(cgrp);
	if (!c)
		return -ENOENT;
	if (!cgrp->level)
		return 0;	/* the root cgroup is never limited */

	old = c->bw_quota_ns;
	if (quota_us == (u64)-1 || !quota_us || !period_us) {
		if (!old)
			return 0;
		c->bw_quota_ns = 0;
		bw_unthrottle(c);
		__sync_fetch_and_sub(&nr_bw_cgroups, 1);
		bpf_map_delete_elem(&bw_timers, &cgid);
		return 0;
	}

	c->bw_period_ns = period_us * 1000;
	c->bw_burst_ns = burst_us * 1000;
	c->bw_quota_ns = quota_us * 1000;
	cap = (s64)(c->bw_quota_ns + c->bw_burst_ns);
	if (!old) {
		c->bw_runtime = (s64)c->bw_quota_ns;
		c->bw_period_usage = 0;
		c->bw_max_period_usage = 0;
		__sync_fetch_and_add(&nr_bw_cgroups, 1);
	} else {
		/* a larger quota is available in this period already */
		if (c->bw_quota_ns > old)
			c->bw_runtime += (s64)(c->bw_quota_ns - old);
		if (c->bw_runtime > cap)
			c->bw_runtime = cap;
		if (c->bw_runtime > 0)
			bw_unthrottle(c);
	}

	t = bpf_map_lookup_elem(&bw_timers, &cgid);
	if (t)
		return 0;	/* the running timer picks up the new period */
	init.cgid = cgid;
	if (bpf_map_update_elem(&bw_timers, &cgid, &init, BPF_NOEXIST))
		return -ENOMEM;
	t = bpf_map_lookup_elem(&bw_timers, &cgid);
	if (!t)
		return -ENOENT;
	bpf_timer_init(&t->timer, &bw_timers, CLOCK_MONOTONIC);
	bpf_timer_set_callback(&t->timer, bw_timer_fn);
	c->bw_next_refill = bpf_ktime_get_ns() + c->bw_period_ns;
	bpf_timer_start(&t->timer, c->bw_next_refill, BPF_F_TIMER_ABS);
	return 0;
}

#endif /* __AGENTCG_BANDWIDTH_BPF_H */
