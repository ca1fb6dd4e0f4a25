/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Memory arbitration, the in-kernel half (--mem-arbitration; the rules and
 * the userspace half are in src/memory.rs).
 *
 * Signal. A bpf_timer reads, every mem_cfg.poll_ns (1 ms by default), the
 * memory usage and memory.max of the guard cgroup (the managed parent) and
 * of each of its ancestors straight from their page counters, the numbers
 * the kernel's charge path compares: no rstat flush, no file read. The
 * fill level is the highest usage / max of that path, in permille.
 *
 * Response. At or above guard_permille the next candidate session is held
 * back: userspace lists the sessions that may be paused in mem_order
 * (lowest class first, then youngest) with a mode per session in
 * mem_ctls; the first candidate not held yet is taken, at most one per
 * gap_ns after the first, unless the fill rose by 1 % of the limit since
 * the last hold (the growth goes on: hold the next one now). A held session is treated exactly like a
 * cgroup throttled by cpu.max (bw_throttled() sees both): its tree node
 * is parked, its running tasks lose their CPU at once (kick) or at the
 * next tick, so it stops allocating within a tick. Below resume_permille
 * the oldest hold is released, one per gap_ns.
 *
 * A hold never outlasts hold_max_ns (less than the sched_ext watchdog's
 * 30 s): userspace freezes a session held for [memory] freeze_after_ms
 * (cgroup.freeze, mode RUN: the tasks must run once more to enter the
 * freezer), and if it does not, the hold is released here and the session
 * rests for rest_ns before it can be held again. A session userspace
 * marks RUN (frozen, being killed, no longer a candidate) is released at
 * the next poll.
 *
 * Measured per hold, for the reaction time: when the guard line was
 * crossed, when the hold began, and the last poll that saw the held
 * session's usage still grow.
 */
#ifndef __AGENTCG_MEMORY_BPF_H
#define __AGENTCG_MEMORY_BPF_H

/* userspace sets it; guard_cgid 0 keeps the timer idle */
struct mem_cfg mem_cfg = {
	.poll_ns = 1000000,
	.gap_ns = 100000000,
	.hold_max_ns = 5000000000ULL,
	.rest_ns = 200000000,
	.guard_permille = 900,
	.resume_permille = 800,
};

u32 mem_fill_permille;		/* the last poll's fill level */
u64 mem_tight_since;		/* guard line crossed at (0: below resume) */
u64 mem_last_hold_at;
u32 mem_last_hold_fill;		/* the fill at the last hold */
u64 mem_last_release_at;
u64 mem_nr_polls;
u64 mem_nr_held;		/* sessions held now */
u64 mem_held_ids[AGENTCG_MEM_MAX_SESSIONS];	/* their cgroup ids */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AGENTCG_MEM_MAX_SESSIONS * 4);
	__type(key, u64);
	__type(value, struct mem_ctl);
} mem_ctls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AGENTCG_MEM_MAX_SESSIONS);
	__type(key, u32);
	__type(value, u64);
} mem_order SEC(".maps");

struct mem_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct mem_timer);
} mem_timers SEC(".maps");

/* page_counter limits at or above this are "max" (PAGE_COUNTER_MAX) */
#define MEM_NO_LIMIT_PAGES	(1ULL << 50)

/* The memcg css of @cgrp (an untrusted pointer: for CO-RE reads only). */
static struct cgroup_subsys_state *mem_css_of(struct cgroup *cgrp)
{
	struct cgroup_subsys_state *css = NULL;
	struct cgroup *cg;
	u32 memid;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id___agentcg,
					memory_cgrp_id___agentcg))
		return NULL;
	memid = bpf_core_enum_value(enum cgroup_subsys_id___agentcg,
				    memory_cgrp_id___agentcg);
	cg = BPF_CORE_READ(cgrp, self.cgroup);	/* as a plain address */
	if (cg && memid < 14)
		bpf_core_read(&css, sizeof(css), &cg->subsys[memid]);
	return css;
}

static u64 mem_usage_pages(struct cgroup_subsys_state *css)
{
	struct mem_cgroup___agentcg *m = (void *)css;

	return css ? BPF_CORE_READ(m, memory.usage.counter) : 0;
}

/* Highest usage / memory.max (permille) from @css up to the root. */
static u32 mem_path_fill(struct cgroup_subsys_state *css)
{
	u32 fill = 0, i;

	bpf_for(i, 0, 8) {
		struct mem_cgroup___agentcg *m = (void *)css;
		u64 usage, max, f;

		if (!css)
			break;
		usage = BPF_CORE_READ(m, memory.usage.counter);
		max = BPF_CORE_READ(m, memory.max);
		if (max && max < MEM_NO_LIMIT_PAGES) {
			f = usage * 1000 / max;
			if (f > fill)
				fill = f;
		}
		css = BPF_CORE_READ(css, parent);
	}
	return fill;
}

/* Preempt every CPU running a task of a held (or throttled) cgroup. */
static void mem_kick_held(void)
{
	struct cpu_ctx *cpuc;
	s32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (cpuc && cpuc->run_cgid && cgid_bw_throttled(cpuc->run_cgid))
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	}
}

static void mem_hold(struct cgroup *cgrp, struct cgrp_ctx *c, u64 now)
{
	u32 i;

	if (__sync_val_compare_and_swap(&c->mem_held, 0, 1))
		return;
	c->mem_held_at = now;
	c->mem_crossed_at = mem_tight_since;
	/* no hold since the line was crossed: this one is the reaction */
	c->mem_first_hold = mem_last_hold_at < mem_tight_since;
	c->mem_grew_at = 0;
	c->mem_usage_pages = mem_usage_pages(mem_css_of(cgrp));
	c->mem_nr_holds++;
	bpf_for(i, 0, AGENTCG_MEM_MAX_SESSIONS) {
		if (!mem_held_ids[i]) {
			mem_held_ids[i] = c->cgid;
			break;
		}
	}
	__sync_fetch_and_add(&mem_nr_held, 1);
	/* from here on bw_throttled() is true for the session's subtree */
	__sync_fetch_and_add(&nr_bw_throttled, 1);
	mem_last_hold_at = now;
	mem_last_hold_fill = mem_fill_permille;
	stat_inc(STAT_MEM_HOLD);
	mem_kick_held();
}

/* Let @c's session run again (false if it was not held). */
static bool mem_release(struct cgrp_ctx *c, u64 now)
{
	u32 i;

	if (!__sync_val_compare_and_swap(&c->mem_held, 1, 0))
		return false;
	c->mem_held_ns += now - c->mem_held_at;
	bpf_for(i, 0, AGENTCG_MEM_MAX_SESSIONS) {
		if (mem_held_ids[i] == c->cgid) {
			mem_held_ids[i] = 0;
			break;
		}
	}
	__sync_fetch_and_sub(&mem_nr_held, 1);
	__sync_fetch_and_sub(&nr_bw_throttled, 1);
	stat_inc(STAT_MEM_RELEASE);
	/* its parked node goes back into the tree at the next dispatch */
	bw_unpark_pending = 1;
	scx_bpf_kick_cpu(bpf_get_smp_processor_id(), 0);
	bw_kick_pinned();
	return true;
}

static bool mem_is_candidate(u64 cgid)
{
	struct mem_ctl *ctl = bpf_map_lookup_elem(&mem_ctls, &cgid);

	return ctl && ctl->mode == AGENTCG_MEM_CANDIDATE;
}

/*
 * The held sessions: release those userspace no longer lets us hold and
 * those held too long; note whether their usage still grows; with the
 * fill below the resume line, release the oldest (one per gap).
 */
static void mem_check_held(u64 now, u32 fill)
{
	u64 oldest_cgid = 0, oldest_at = 0;
	struct cgroup *cgrp;
	struct cgrp_ctx *c;
	u32 i;

	if (!mem_nr_held)
		return;
	bpf_for(i, 0, AGENTCG_MEM_MAX_SESSIONS) {
		u64 cgid = mem_held_ids[i], usage;

		if (!cgid)
			continue;
		cgrp = bpf_cgroup_from_id(cgid);
		if (!cgrp) {
			mem_held_ids[i] = 0;	/* cgroup_exit released it */
			continue;
		}
		c = cgrp_ctx_of(cgrp);
		if (!c || !c->mem_held) {
			bpf_cgroup_release(cgrp);
			continue;
		}
		usage = mem_usage_pages(mem_css_of(cgrp));
		if (usage > c->mem_usage_pages) {
			c->mem_usage_pages = usage;
			c->mem_grew_at = now;
		}
		if (!mem_is_candidate(cgid)) {
			mem_release(c, now);
		} else if (now - c->mem_held_at >= mem_cfg.hold_max_ns) {
			mem_release(c, now);
			c->mem_rest_until = now + mem_cfg.rest_ns;
		} else if (!oldest_at || c->mem_held_at < oldest_at) {
			oldest_at = c->mem_held_at;
			oldest_cgid = cgid;
		}
		bpf_cgroup_release(cgrp);
	}
	if (!oldest_cgid || fill >= mem_cfg.resume_permille ||
	    now - mem_last_release_at < mem_cfg.gap_ns)
		return;
	cgrp = bpf_cgroup_from_id(oldest_cgid);
	if (!cgrp)
		return;
	c = cgrp_ctx_of(cgrp);
	if (c && mem_release(c, now))
		mem_last_release_at = now;
	bpf_cgroup_release(cgrp);
}

/* Hold the first candidate of the pause order that is not held yet. */
static void mem_hold_next(u64 now)
{
	struct cgroup *cgrp;
	struct cgrp_ctx *c;
	u32 i;

	bpf_for(i, 0, AGENTCG_MEM_MAX_SESSIONS) {
		u64 *cgidp = bpf_map_lookup_elem(&mem_order, &i);
		u64 cgid;
		bool done = false;

		if (!cgidp || !*cgidp)
			break;
		cgid = *cgidp;
		if (!mem_is_candidate(cgid))
			continue;
		cgrp = bpf_cgroup_from_id(cgid);
		if (!cgrp)
			continue;
		c = cgrp_ctx_of(cgrp);
		if (c && !c->mem_held && now >= c->mem_rest_until) {
			mem_hold(cgrp, c, now);
			done = true;
		}
		bpf_cgroup_release(cgrp);
		if (done)
			break;
	}
}

static int mem_timer_fn(void *map, u32 *key, struct mem_timer *t)
{
	u64 now = bpf_ktime_get_ns(), guard = mem_cfg.guard_cgid;
	struct cgroup *cgrp;
	bool crossed = false;
	u32 fill = 0;

	if (!guard)
		goto out;
	cgrp = bpf_cgroup_from_id(guard);
	if (cgrp) {
		fill = mem_path_fill(mem_css_of(cgrp));
		bpf_cgroup_release(cgrp);
	}
	mem_fill_permille = fill;
	mem_nr_polls++;
	if (fill >= mem_cfg.guard_permille) {
		if (!mem_tight_since) {
			mem_tight_since = now;
			crossed = true;
		}
	} else if (fill < mem_cfg.resume_permille) {
		mem_tight_since = 0;
	}
	mem_check_held(now, fill);
	/*
	 * The first hold at once, later ones one gap apart, unless the fill
	 * rose another 1 % of the limit since the last hold: then what runs
	 * still grows fast (sessions replaying bursts together) and the next
	 * candidate is held at once too.
	 */
	if (fill >= mem_cfg.guard_permille &&
	    (crossed || now - mem_last_hold_at >= mem_cfg.gap_ns ||
	     fill >= mem_last_hold_fill + 10))
		mem_hold_next(now);
out:
	bpf_timer_start(&t->timer, mem_cfg.poll_ns ?: 1000000, 0);
	return 0;
}

/* Called from ops.init: the timer runs while the scheduler is attached. */
static s32 mem_timer_start(void)
{
	struct mem_timer *t;
	u32 zero = 0;

	t = bpf_map_lookup_elem(&mem_timers, &zero);
	if (!t)
		return -ENOENT;
	bpf_timer_init(&t->timer, &mem_timers, CLOCK_MONOTONIC);
	bpf_timer_set_callback(&t->timer, mem_timer_fn);
	return bpf_timer_start(&t->timer, mem_cfg.poll_ns ?: 1000000, 0);
}

/* @cgrp goes away: a hold on it ends. */
static void mem_cgroup_exit(struct cgroup *cgrp)
{
	struct cgrp_ctx *c = cgrp_ctx_of(cgrp);

	if (c)
		mem_release(c, bpf_ktime_get_ns());
}

#endif /* __AGENTCG_MEMORY_BPF_H */
