/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_agentcg: flattened hierarchical cgroup scheduling for agent sessions.
 *
 * Design
 * ------
 * Every cgroup has its own DSQ. Instead of scheduling level by level, the
 * hierarchy is flattened: each cgroup with runnable tasks gets a
 * hierarchical weight (hweight), the product of its weight share at every
 * level, counting only active siblings. For R{A(100){B(100),C(100)},D(200)}
 * with B, C and D busy, B and C get 1/3*1/2 = 1/6 each and D gets 2/3.
 * hweights are cached per cgroup and recomputed only when an active weight
 * sum changes (a global generation counter expires the cache).
 *
 * Picking: cgroups with queued tasks sit in one rbtree ordered by a cgroup
 * vtime (cvtime). Running a cgroup's tasks for t ns advances its cvtime by
 * t / hweight, so the tree always offers the cgroup furthest behind its
 * share. A CPU that picked a cgroup keeps serving it for one cgroup slice
 * (cheap: no tree operation per task), and the pick reserves that slice in
 * the cgroup's key so other CPUs prefer other cgroups meanwhile. Inside a
 * cgroup, tasks are ordered by their own weighted vtime (a dispatch takes,
 * among the first few, one that last ran on its CPU). A task whose
 * slice ends is queued again only after the dispatch that replaces it, so
 * its cgroup is weighed against the tree's front right there
 * (prev_goes_on()); otherwise a cgroup with a task on every CPU lost each
 * CPU at every slice end.
 *
 * Charging is exact: every task's runtime (sum_exec_runtime deltas, taken at
 * every tick and when it stops) is charged to its cgroup, whichever path
 * dispatched it (tree, idle fast path, pinned DSQ). Each delta runs from
 * the previous charge, not from when the task last started, so what the
 * kernel adds after ops.stopping() (the switch away) is charged too: a
 * task that sleeps every millisecond otherwise escapes ~10 % of its time
 * in the VM, and cpu.stat counts it.
 *
 * Herd control: flattening alone lets many children of a low-weight parent
 * that wake together each claim a fresh wake-up credit, so together they
 * exceed the parent's share. Here every non-root ancestor also keeps a
 * group vtime (gvtime), charged with its whole subtree's usage at the
 * ancestor's hweight, and a cgroup's tree key is never more than two of its
 * own cgroup slices below any ancestor's gvtime. A subtree that ran ahead of
 * its share therefore waits, however many of its children wake. Wake-up
 * credit is bounded to one cgroup slice of vtime at every level.
 *
 * Wake-up preemption: a task that wakes with no idle CPU, in a cgroup with
 * nothing queued whose key is earlier than the one some CPU serves, goes
 * straight onto that CPU's local DSQ and preempts it (the waking CPU first:
 * no IPI). One such task per cgroup at a time; the others queue, as they
 * would behind a cgroup already in the tree.
 *
 * Restricted affinity: per-CPU kthreads go straight to their CPU's local
 * DSQ. Other tasks that cannot run everywhere go to a per-CPU "pinned" DSQ
 * of a CPU they may use; each CPU alternates between its pinned DSQ and the
 * tree, so neither side can starve the other. A pinned task whose cgroup
 * has an earlier key than the one its CPU serves (as that key stands now)
 * goes straight onto that CPU: preempting it on a wake-up, next in line
 * when put back after a preemption. Nothing is left in a DSQ without a CPU
 * that will look at it: sched_ext inserts tasks dispatched from
 * ops.enqueue() only after it returns, so a cgroup can race out of the
 * tree while its task is landing; an enqueue sequence check, a re-check
 * by the enqueuing CPU and a 20 ms sweep put such cgroups back (see
 * unqueue()).
 *
 * cpu.max is enforced in BPF too (bandwidth.bpf.h): budgets per limited
 * cgroup, refilled by timers, throttled subtrees parked off the tree. The
 * memory guard (memory.bpf.h) holds background sessions back the same way
 * when their shared parent nears its memory.max.
 *
 * Cells (cells.bpf.h): with sessions configured, the tree is ordered by
 * (placement domain, key) and each CPU serves only the domains it belongs
 * to, so the flattened weights apply inside each session's cell. Herd
 * control then looks only at ancestors inside the session. Step profiles
 * (policy.bpf.h) scale weights, set slices and boost interactive wakeups.
 */
#include <scx/common.bpf.h>
#include "intf.h"

char _license[] SEC("license") = "GPL";

const volatile u32 nr_cpus = 1;		/* possible CPUs, set by userspace */
const volatile u64 slice_ns = 3000000;	/* task slice */
const volatile u64 cgrp_slice_ns = 3000000; /* how long a CPU sticks to a cgroup */
/* thrash penalties (thrash.bpf.h; defaults as in src/thrash.rs) */
const volatile u32 thrash_penalty_on = 1;
const volatile u32 thrash_enter_permille = 200;
const volatile u32 thrash_exit_permille = 50;
const volatile u32 thrash_weight_pct = 25;	/* weight under penalty, % */
const volatile u32 thrash_slice_pct = 50;	/* slice under penalty, % */
const volatile u32 thrash_cpus_pct = 50;	/* CPUs penalised tasks may use, % */
const volatile bool wake_preempt = true;
const volatile bool herd_control = true;	/* off only for comparisons */
/* cpu.max comes from ops.cgroup_set_bandwidth (else from userspace) */
const volatile bool use_kernel_bandwidth = true;

u64 hweight_gen = 1;	/* bumped when any active weight sum changes */

UEI_DEFINE(uei);

#define PINNED_DSQ(cpu)		(AGENTCG_PINNED_DSQ_BASE | (u64)(cpu))

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, u64);
	__uint(max_entries, AGENTCG_NR_STATS);
} stats SEC(".maps");

static __always_inline void stat_inc(u32 idx)
{
	u64 *cnt = bpf_map_lookup_elem(&stats, &idx);

	if (cnt)
		(*cnt)++;
}

struct cpu_ctx {
	u64 cur_cgid;		/* cgroup this CPU is serving, 0 if none */
	u64 cur_until;		/* end of the current cgroup slice */
	u64 cur_reserved;	/* vtime this CPU reserved in cur_cgid */
	u64 cur_key;		/* tree key cur_cgid had when picked */
	u64 pending_cgid;	/* cgroup this CPU last enqueued into */
	u64 run_cgid;		/* cgroup of the task running here (cpu.max) */
	bool pinned_last;	/* last dispatch came from the pinned DSQ */
	bool lent;		/* serving a cgroup of another cell (borrowing) */
	bool run_boosted;	/* the running task was boosted */
	u32 cells_seq;		/* layout this CPU last served under */
	u32 cell;		/* the cell this CPU belongs to */
	u32 nr_domains;		/* 0: no cells, domain 0 only */
	u32 domains[AGENTCG_CPU_DOMAINS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct cpu_ctx);
	__uint(max_entries, 1);
} cpu_ctxs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cgrp_ctx);
} cgrp_ctxs SEC(".maps");

struct task_ctx {
	u64 run_start;		/* sum_exec_runtime when the task was last charged */
	u64 cgid;		/* the task's cgroup (init_task, cgroup_move) */
	bool boosted;		/* this run came from a boost DSQ */
	bool direct;		/* put straight onto a CPU it preempted (claim_direct_wake()) */
	bool interactive;	/* counted as runnable interactive work (yielding.bpf.h) */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

/* A cgroup's place in the pick tree. */
struct cgrp_node {
	struct bpf_rb_node rb;
	u64 key;
	u64 cgid;
	u32 domain;		/* placement domain (cells.bpf.h) */
};

private(TREE) struct bpf_spin_lock tree_lock;
private(TREE) struct bpf_rb_root tree __contains(cgrp_node, rb);
/* nodes of cgroups throttled by cpu.max (see bandwidth.bpf.h) */
private(TREE) struct bpf_rb_root parked __contains(cgrp_node, rb);

/* Each cgroup owns one node; it lives here while not in the tree. */
struct node_stash {
	struct cgrp_node __kptr *node;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct node_stash);
} node_stashes SEC(".maps");

static __always_inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

static __always_inline u64 vtime_max(u64 a, u64 b)
{
	return vtime_before(a, b) ? b : a;
}

static bool node_less(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	struct cgrp_node *na = container_of(a, struct cgrp_node, rb);
	struct cgrp_node *nb = container_of(b, struct cgrp_node, rb);

	if (na->domain != nb->domain)
		return na->domain < nb->domain;
	return vtime_before(na->key, nb->key);
}

static struct cpu_ctx *this_cpu_ctx(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_ctxs, &zero);
}

static struct cgrp_ctx *cgrp_ctx_of(struct cgroup *cgrp)
{
	return bpf_cgrp_storage_get(&cgrp_ctxs, cgrp, 0, 0);
}

static struct cgrp_ctx *ancestor_ctx(struct cgroup *cgrp, u32 level)
{
	struct cgroup *anc;
	struct cgrp_ctx *c;

	anc = bpf_cgroup_ancestor(cgrp, level);
	if (!anc)
		return NULL;
	c = cgrp_ctx_of(anc);
	bpf_cgroup_release(anc);
	return c;
}

/* vtime of @ns of CPU time at hierarchical weight @hw */
static __always_inline u64 scale_by_hweight(u64 ns, u64 hw)
{
	return ns * AGENTCG_HWEIGHT_ONE / (hw ?: 1);
}

#include "bandwidth.bpf.h"
#include "cells.bpf.h"
#include "policy.bpf.h"
#include "memcg_ops.bpf.h"
#include "thrash.bpf.h"
#include "activity.bpf.h"
#include "memory.bpf.h"
#include "yielding.bpf.h"

/* the cvtime frontier of @cgc's cell */
static __always_inline u64 *vnow_of(struct cgrp_ctx *cgc)
{
	return &cell_vnow[cell_idx(cgc->cell)];
}

/*
 * Recompute the hweights along @cgrp's path if any active weight sum
 * changed since they were last computed. Racy against concurrent weight
 * changes by design: an error is corrected at the next generation bump.
 */
static void refresh_hweight(struct cgroup *cgrp, struct cgrp_ctx *cgc)
{
	u64 gen = hweight_gen, hw = AGENTCG_HWEIGHT_ONE, own_sum;
	struct cgrp_ctx *c, *parent = NULL;
	u32 level;

	if (cgc->hweight_gen == gen) {
		stat_inc(STAT_HWT_CACHED);
		return;
	}
	stat_inc(STAT_HWT_UPDATE);

	bpf_for(level, 0, cgrp->level + 1) {
		c = ancestor_ctx(cgrp, level);
		if (!c)
			return;
		if (parent) {
			u64 sum = parent->child_weight_sum;

			/* an inactive cgroup is priced as if it were active */
			if (!c->nr_active)
				sum += c->weight;
			hw = hw * c->weight / (sum ?: 1);
		}
		c->hweight = hw ?: 1;
		c->hweight_gen = gen;
		parent = c;
	}

	/* own tasks compete with the active children as one more child */
	own_sum = cgc->child_weight_sum;
	if (!cgc->nr_runnable)
		own_sum += AGENTCG_SELF_WEIGHT;
	cgc->hweight_own = (cgc->hweight * AGENTCG_SELF_WEIGHT / (own_sum ?: 1)) ?: 1;
}

/*
 * One level of the active weight tree, under tree_lock: make @parent's
 * accounting of a child of weight @w match whether that child is active
 * (@want). *@counted remembers what @parent counts. Returns true if
 * @parent itself became active or inactive, so the caller goes on upwards.
 *
 * Transitions are reconciled against current state rather than applied as
 * deltas, so concurrent runnable/quiescent events on different CPUs cannot
 * leave a weight counted twice or a cgroup active without runnable tasks.
 */
static __always_inline bool account_child(struct cgrp_ctx *parent, u32 *counted,
					  bool want, u64 w, u64 vnow)
{
	u64 floor = vnow - cgrp_slice_ns;

	if (want == !!*counted)
		return false;
	*counted = want;
	if (want) {
		parent->child_weight_sum += w;
		if (parent->nr_active++)
			return false;
		/* bounded wake-up credit for the subtree */
		if (vtime_before(parent->gvtime, floor))
			parent->gvtime = floor;
		return true;
	}
	parent->child_weight_sum -= parent->child_weight_sum < w ? parent->child_weight_sum : w;
	if (!parent->nr_active)
		return false;
	return !--parent->nr_active;
}

/*
 * Track activity. A cgroup's own runnable tasks count as one pseudo-child
 * of weight AGENTCG_SELF_WEIGHT; a cgroup is active while it has any active
 * (pseudo-)child. Becoming active adds the cgroup's weight to its parent's
 * active weight sum, and so on upwards until an ancestor whose state holds.
 */
static void update_activity(struct cgroup *cgrp, bool runnable)
{
	struct cgrp_ctx *cgc, *c, *child;
	bool changed;
	u64 vnow, now = 0;
	u32 i;

	cgc = cgrp_ctx_of(cgrp);
	if (!cgc)
		return;
	resolve_cgrp(cgrp, cgc);
	vnow = *vnow_of(cgc);

	if (runnable) {
		if (__sync_fetch_and_add(&cgc->nr_runnable, 1))
			return;
		stat_inc(STAT_ACTIVATE);
		/* a waking cgroup keeps at most one cgroup slice of credit */
		if (vtime_before(cgc->cvtime, vnow - cgrp_slice_ns))
			cgc->cvtime = vnow - cgrp_slice_ns;
	} else {
		if (__sync_sub_and_fetch(&cgc->nr_runnable, 1))
			return;
		stat_inc(STAT_DEACTIVATE);
	}

	bpf_spin_lock(&tree_lock);
	changed = account_child(cgc, &cgc->self_counted, cgc->nr_runnable > 0,
				AGENTCG_SELF_WEIGHT, vnow);
	bpf_spin_unlock(&tree_lock);
	if (changed) {
		now = bpf_ktime_get_ns();
		activity_note(&cgc->act, cgc->nr_active > 0, now);
	}

	bpf_for(i, 1, cgrp->level + 1) {
		if (!changed)
			break;
		c = ancestor_ctx(cgrp, cgrp->level - i);
		child = ancestor_ctx(cgrp, cgrp->level - i + 1);
		if (!c || !child)
			break;
		bpf_spin_lock(&tree_lock);
		changed = account_child(c, &child->counted, child->nr_active > 0,
					child->weight, vnow);
		bpf_spin_unlock(&tree_lock);
		if (changed)
			activity_note(&c->act, c->nr_active > 0, now);
	}

	__sync_fetch_and_add(&hweight_gen, 1);
}

/*
 * Herd control: the lowest cvtime @cgrp may have, given its non-root strict
 * ancestors' group vtimes. A child legitimately lags its parent's gvtime by
 * about one of its own cgroup slices (siblings run in between), so only a
 * lag beyond AGENTCG_HERD_SLACK of its own slices, in its own vtime units,
 * counts. Returns false if @cgrp has no such ancestor.
 */
static bool herd_floor(struct cgroup *cgrp, struct cgrp_ctx *cgc, u64 *floorp)
{
	u64 floor = 0;
	struct cgrp_ctx *c;
	bool any = false;
	u32 level;

	/* in a session's cell only the session's own subtree counts */
	bpf_for(level, cgc->herd_level ?: 1, cgrp->level) {
		c = ancestor_ctx(cgrp, level);
		if (!c)
			break;
		floor = any ? vtime_max(floor, c->gvtime) : c->gvtime;
		any = true;
	}
	*floorp = floor - AGENTCG_HERD_SLACK *
		scale_by_hweight(cgrp_slice_ns, cgc->hweight_own);
	return any;
}

/*
 * The key a cgroup should have in the tree now: its charged vtime plus what
 * CPUs serving it have reserved. A cgroup whose ancestors ran ahead of their
 * share is moved up to the herd floor (it loses the credit its siblings
 * already spent).
 */
static u64 cgrp_key(struct cgroup *cgrp, struct cgrp_ctx *cgc)
{
	u64 floor;

	if (herd_control && herd_floor(cgrp, cgc, &floor) &&
	    vtime_before(cgc->cvtime, floor))
		cgc->cvtime = floor;
	return cgc->cvtime + cgc->reserved;
}

/*
 * cpu.max: a charge just throttled a cgroup. Preempt the other CPUs running
 * a task below it now, instead of letting each run to its next tick.
 */
static void bw_kick_throttled(void)
{
	struct cpu_ctx *cpuc;
	s32 cpu, self = bpf_get_smp_processor_id();

	bpf_for(cpu, 0, nr_cpus) {
		if (cpu == self)
			continue;
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (cpuc && cpuc->run_cgid && cgid_bw_throttled(cpuc->run_cgid))
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	}
}

/* Charge @ns of CPU time used by a task of @cgrp. */
static void charge(struct cgroup *cgrp, struct cgrp_ctx *cgc, u64 ns)
{
	struct cgrp_ctx *c;
	u64 throttles = nr_bw_throttled;
	u32 level;

	refresh_hweight(cgrp, cgc);
	__sync_fetch_and_add(&cgc->cvtime, scale_by_hweight(ns, cgc->hweight_own));
	__sync_fetch_and_add(&cgc->usage_ns, ns);

	bpf_for(level, 1, cgrp->level + 1) {
		c = ancestor_ctx(cgrp, level);
		if (!c)
			break;
		__sync_fetch_and_add(&c->gvtime, scale_by_hweight(ns, c->hweight));
		if (nr_bw_cgroups)
			bw_charge_one(c, ns);
	}
	if (nr_bw_throttled > throttles)
		bw_kick_throttled();
	thrash_charge(cgrp);
}

static void stash_node(u64 cgid, struct cgrp_node *node)
{
	struct node_stash *st = bpf_map_lookup_elem(&node_stashes, &cgid);

	if (st)
		node = bpf_kptr_xchg(&st->node, node);
	if (node)
		bpf_obj_drop(node);
}

/* Make sure @cgrp, which has queued tasks, is in the tree. */
static void cgrp_enqueued(struct cgroup *cgrp, struct cgrp_ctx *cgc)
{
	struct node_stash *st;
	struct cgrp_node *node;
	u64 cgid = cgc->cgid;

	if (__sync_val_compare_and_swap(&cgc->queued, 0, 1))
		return;

	st = bpf_map_lookup_elem(&node_stashes, &cgid);
	if (!st) {
		scx_bpf_error("no tree node for cgroup %llu", cgid);
		return;
	}
	node = bpf_kptr_xchg(&st->node, NULL);
	if (!node)
		/* the picker holds it and will requeue after seeing our task */
		return;

	node->key = cgrp_key(cgrp, cgc);
	node->domain = cgc->domain;
	bpf_spin_lock(&tree_lock);
	bpf_rbtree_add(&tree, &node->rb, node_less);
	bpf_spin_unlock(&tree_lock);
}

/*
 * Put @node back in the stash after the picker found @cgrp's DSQ empty or
 * drained it. An enqueue that raced with us saw queued == 1 and skipped the
 * tree, and its task may not even be in the DSQ yet: sched_ext inserts a
 * task dispatched from ops.enqueue() only after that callback returns. So
 * once queued is clear (an atomic, i.e. a full barrier), requeue if any
 * enqueue happened since we popped the node (@seq), not only if the DSQ
 * looks non-empty. What is left (an enqueue whose insert lands after a
 * later picker's check) is caught by rescue_pending() on the enqueuing CPU.
 */
static void unqueue(struct cgroup *cgrp, struct cgrp_ctx *cgc,
		    struct cgrp_node *node, u64 seq)
{
	stash_node(cgc->cgid, node);
	__sync_fetch_and_and(&cgc->queued, 0);
	if (cgc->enq_seq != seq || scx_bpf_dsq_nr_queued(cgc->cgid))
		cgrp_enqueued(cgrp, cgc);
}

/*
 * Safety net for the race above: the CPU that last enqueued a task into a
 * cgroup DSQ looks at that cgroup again at its next tick or dispatch (by
 * then the insert has landed) and puts it back in the tree if it has
 * queued tasks but no node there.
 */
/*
 * Put cgroup @cgid back in the tree if it has no node there (queued is
 * clear) although its DSQ has tasks. Returns true if it did.
 */
static bool requeue_stranded(u64 cgid)
{
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	bool done = false;

	if (scx_bpf_dsq_nr_queued(cgid) <= 0)
		return false;
	cgrp = bpf_cgroup_from_id(cgid);
	if (!cgrp)
		return false;
	cgc = cgrp_ctx_of(cgrp);
	if (cgc && !cgc->queued) {
		stat_inc(STAT_RESCUE);
		cgrp_enqueued(cgrp, cgc);
		done = true;
	}
	bpf_cgroup_release(cgrp);
	return done;
}

static void rescue_pending(struct cpu_ctx *cpuc)
{
	u64 cgid = cpuc->pending_cgid;

	if (!cgid)
		return;
	cpuc->pending_cgid = 0;
	requeue_stranded(cgid);
}

/*
 * Last line of defence against the same race: a timer sweeps every cgroup
 * every AGENTCG_SWEEP_MS and puts back in the tree any cgroup that has
 * queued tasks but no node there, so a stranded task waits milliseconds,
 * never until the watchdog.
 */
struct sweep_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct sweep_timer);
} sweep_timers SEC(".maps");

/*
 * Walk the cgroups themselves (css iterator under RCU): a few dozen on a
 * usual machine. Walking node_stashes instead visits every bucket of a
 * 64k-entry hash map, which cost milliseconds of softirq per sweep.
 */
static int sweep_timer_fn(void *map, u32 *key, struct sweep_timer *t)
{
	struct cgroup_subsys_state *pos;
	u64 cgids[AGENTCG_SWEEP_BATCH];
	struct cgroup *root;
	u32 i, n = 0;

	root = bpf_cgroup_from_id(1);
	if (!root)
		goto out;
	bpf_rcu_read_lock();
	bpf_for_each(css, pos, &root->self, BPF_CGROUP_ITER_DESCENDANTS_PRE) {
		u64 cgid = pos->cgroup->kn->id;

		if (scx_bpf_dsq_nr_queued(cgid) <= 0)
			continue;
		if (n >= AGENTCG_SWEEP_BATCH)
			break;
		cgids[n & (AGENTCG_SWEEP_BATCH - 1)] = cgid;
		n++;
	}
	bpf_rcu_read_unlock();
	bpf_cgroup_release(root);
	bpf_for(i, 0, AGENTCG_SWEEP_BATCH) {
		if (i >= n)
			break;
		if (requeue_stranded(cgids[i]))
			scx_bpf_kick_cpu(bpf_get_smp_processor_id(), 0);
	}
out:
	/* cpu.max: nothing stays parked past a refill it missed (unpark()) */
	if (nr_bw_parked && !bw_unpark_pending) {
		bw_unpark_pending = 1;
		scx_bpf_kick_cpu(bpf_get_smp_processor_id(), 0);
	}
	bpf_timer_start(&t->timer, AGENTCG_SWEEP_MS * 1000000ULL, 0);
	return 0;
}

/* Stop serving the CPU's current cgroup and return its reservation. */
static void release_cur(struct cpu_ctx *cpuc)
{
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;

	if (!cpuc->cur_cgid)
		return;
	cgrp = bpf_cgroup_from_id(cpuc->cur_cgid);
	if (cgrp) {
		cgc = cgrp_ctx_of(cgrp);
		if (cgc)
			__sync_fetch_and_sub(&cgc->reserved, cpuc->cur_reserved);
		bpf_cgroup_release(cgrp);
	}
	cpuc->cur_cgid = 0;
	cpuc->cur_reserved = 0;
}

/*
 * A cells apply happened since this CPU last looked: stop serving what it
 * picked under the old layout. Returns true if so.
 */
static bool cells_resync(struct cpu_ctx *cpuc)
{
	if (cpuc->cells_seq == cells_seq)
		return false;
	release_cur(cpuc);
	cpuc->lent = false;
	cpuc->cells_seq = cells_seq;
	return true;
}

/*
 * Move a task of cgroup DSQ @cgid to this CPU: among the first few in
 * vtime order, one that last ran here, else the first. A task that last
 * ran elsewhere has to be pulled across runqueues (two rq locks, its
 * cache left behind) while interrupts are off; in the TCG VM, dispatches
 * cost about a third less per call with this (bpf_stats, cyclictest beside 8
 * spinners). Only tasks within one slice of vtime of the queue's first are
 * looked at: a first task that last ran outside the CPUs serving its cgroup
 * (moved in from another cell, or its affinity widened) is otherwise passed
 * over for ever in a cell of one CPU with two local tasks, which take turns
 * there. That starved a spinner until the watchdog (cells scenario). Now
 * the local tasks run ahead of it by a slice at most.
 */
static bool move_cgroup_task(u64 cgid)
{
	s32 cpu = bpf_get_smp_processor_id();
	struct task_struct *p;
	u64 first_vtime = 0;
	u32 seen = 0;

	bpf_for_each(scx_dsq, p, cgid, 0) {
		if (++seen > AGENTCG_LOCAL_LOOKAHEAD)
			break;
		if (seen == 1)
			first_vtime = p->scx.dsq_vtime;
		else if (vtime_before(first_vtime + slice_ns, p->scx.dsq_vtime))
			break;
		if (scx_bpf_task_cpu(p) == cpu &&
		    scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0)) {
			stat_inc(STAT_MOVE_LOCAL);
			return true;
		}
	}
	return scx_bpf_dsq_move_to_local(cgid, 0);
}

/*
 * This CPU starts serving @cgrp (tree key @key) for one cgroup slice: the
 * slice's vtime is reserved in the cgroup's key so that other CPUs prefer
 * other cgroups meanwhile. The served cgroup's charged vtime (without
 * reservations) is also the progress every wake-up credit of its cell is
 * measured against.
 */
static void serve_cgroup(struct cpu_ctx *cpuc, struct cgroup *cgrp,
			 struct cgrp_ctx *cgc, u64 key, u64 now)
{
	if (vtime_before(*vnow_of(cgc), cgc->cvtime))
		*vnow_of(cgc) = cgc->cvtime;
	refresh_hweight(cgrp, cgc);
	cpuc->cur_cgid = cgc->cgid;
	cpuc->cur_until = now + cgrp_slice_ns;
	cpuc->cur_reserved = scale_by_hweight(cgrp_slice_ns, cgc->hweight_own);
	cpuc->cur_key = key;
	__sync_fetch_and_add(&cgc->reserved, cpuc->cur_reserved);
}

/*
 * Pop the cgroup furthest behind its share and move one of its tasks to
 * this CPU. Returns true if a task was moved.
 */
static bool pick_from_tree(struct cpu_ctx *cpuc, bool no_borrow, u64 now)
{
	struct bpf_rb_node *rb;
	struct cgrp_node *node;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	u64 cgid, key, eff, seq;
	bool lent;
	u32 i;

	bpf_for(i, 0, AGENTCG_PICK_RETRIES) {
		rb = pop_for_cpu(cpuc, no_borrow, &lent);
		if (!rb)
			return false;
		node = container_of(rb, struct cgrp_node, rb);
		cgid = node->cgid;
		key = node->key;

		cgrp = bpf_cgroup_from_id(cgid);
		if (!cgrp) {
			/* the cgroup is gone; its node goes with it */
			bpf_obj_drop(node);
			continue;
		}
		cgc = cgrp_ctx_of(cgrp);
		if (!cgc) {
			bpf_obj_drop(node);
			bpf_cgroup_release(cgrp);
			continue;
		}
		seq = cgc->enq_seq;

		/*
		 * An ancestor may have run ahead since the node was queued, or
		 * a cells apply moved the cgroup to another domain.
		 */
		resolve_cgrp(cgrp, cgc);
		eff = cgrp_key(cgrp, cgc);
		if ((node->domain != cgc->domain ||
		     vtime_before(key + cgrp_slice_ns, eff)) &&
		    i < AGENTCG_PICK_RETRIES - 1) {
			stat_inc(STAT_REQUEUE);
			node->key = eff;
			node->domain = cgc->domain;
			bpf_spin_lock(&tree_lock);
			bpf_rbtree_add(&tree, &node->rb, node_less);
			bpf_spin_unlock(&tree_lock);
			bpf_cgroup_release(cgrp);
			continue;
		}

		if (bw_throttled(cgrp)) {
			/* cpu.max: off the tree until the refill timer says so */
			stat_inc(STAT_BW_PARK);
			bpf_spin_lock(&tree_lock);
			bpf_rbtree_add(&parked, &node->rb, node_less);
			bpf_spin_unlock(&tree_lock);
			/*
			 * The refill may have unthrottled it since the check
			 * above and its unpark run missed the node. The add
			 * (a full barrier) orders the re-check after the park.
			 */
			__sync_fetch_and_add(&nr_bw_parked, 1);
			if (!bw_throttled(cgrp))
				bw_unpark_pending = 1;
			bpf_cgroup_release(cgrp);
			continue;
		}

		if (!move_cgroup_task(cgid)) {
			stat_inc(STAT_PICK_EMPTY);
			unqueue(cgrp, cgc, node, seq);
			bpf_cgroup_release(cgrp);
			continue;
		}

		stat_inc(STAT_CGRP_DISPATCH);
		if (lent)
			stat_inc(STAT_BORROW);
		cpuc->lent = lent;
		__sync_fetch_and_add(&cgc->nr_dispatches, 1);
		serve_cgroup(cpuc, cgrp, cgc, key, now);

		if (scx_bpf_dsq_nr_queued(cgid)) {
			node->key = cgrp_key(cgrp, cgc);
			bpf_spin_lock(&tree_lock);
			bpf_rbtree_add(&tree, &node->rb, node_less);
			bpf_spin_unlock(&tree_lock);
		} else {
			unqueue(cgrp, cgc, node, seq);
		}
		bpf_cgroup_release(cgrp);
		return true;
	}

	/*
	 * Out of retries with nodes possibly left in the tree: dispatch again
	 * soon rather than let this CPU idle next to queued work.
	 */
	stat_inc(STAT_PICK_GIVEUP);
	scx_bpf_kick_cpu(bpf_get_smp_processor_id(), 0);
	return false;
}

static bool is_pcpu_kthread(const struct task_struct *p)
{
	return (p->flags & PF_KTHREAD) && p->nr_cpus_allowed == 1;
}

/*
 * With cells, a task's CPUs are its domain's mask and its own affinity:
 * @tmp gets their intersection. Returns false without cells.
 */
static bool task_domain_cpus(struct task_struct *p, struct cgrp_ctx *cgc,
			     struct bpf_cpumask *tmp)
{
	const struct cpumask *m;

	if (!cells_active() || !tmp)
		return false;
	m = domain_mask(cgc->domain);
	if (!m)
		return false;
	bpf_cpumask_and(tmp, m, p->cpus_ptr);
	return true;
}

/*
 * The CPUs @p may be placed on now, in @tmp: its domain's (with cells), cut
 * to the capped CPUs while its cgroup is penalised (@cut & CUT_THRASH) and
 * to the yield CPUs while it yields (@cut & CUT_YIELD). Returns false if
 * that is just p->cpus_ptr (no cells, no cut).
 */
#define CUT_THRASH	1
#define CUT_YIELD	2

static bool task_run_cpus(struct task_struct *p, struct cgrp_ctx *cgc,
			  u32 cut, struct bpf_cpumask *tmp)
{
	if (!tmp)
		return false;
	if (!task_domain_cpus(p, cgc, tmp)) {
		if (!cut)
			return false;
		bpf_cpumask_copy(tmp, p->cpus_ptr);
	}
	if (cut & CUT_YIELD) {
		/* all the CPUs it may use, not only its cell's */
		bpf_cpumask_copy(tmp, p->cpus_ptr);
		yield_cut_mask(tmp);
	}
	if (cut & CUT_THRASH)
		thrash_cap_mask(tmp);
	return true;
}

/* The cuts that apply to @cgrp's tasks now (task_run_cpus()). */
static __always_inline u32 run_cut(struct cgroup *cgrp, struct cgrp_ctx *cgc)
{
	return (thrash_capped(cgrp) ? CUT_THRASH : 0) |
	       (yielding(cgc) ? CUT_YIELD : 0);
}

s32 BPF_STRUCT_OPS(agentcg_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	struct bpf_cpumask *tmp;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	bool is_idle = false;
	u64 slice = slice_ns;
	s32 cpu = prev_cpu;
	u32 cut = 0;

	cgrp = scx_bpf_task_cgroup(p);
	if (!cgrp)
		return prev_cpu;
	cgc = cgrp_ctx_of(cgrp);
	if (cgc) {
		resolve_cgrp(cgrp, cgc);
		slice = thrash_slice(cgrp, cgc, cgc->slice_ns ?: slice_ns);
		cut = run_cut(cgrp, cgc);
	}
	bpf_cgroup_release(cgrp);

	tmp = tmp_mask();
	if (cgc && !is_pcpu_kthread(p) && task_run_cpus(p, cgc, cut, tmp)) {
		const struct cpumask *cpus = (const struct cpumask *)tmp;

		if (bpf_cpumask_empty(cpus))
			return prev_cpu;	/* enqueue() places it */
		if (bpf_cpumask_test_cpu(prev_cpu, cpus) &&
		    scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
			is_idle = true;
		} else {
			cpu = scx_bpf_pick_idle_cpu(cpus, 0);
			if (cpu >= 0)
				is_idle = true;
			else if (bpf_cpumask_test_cpu(prev_cpu, cpus))
				cpu = prev_cpu;
			else
				cpu = bpf_cpumask_any_distribute(cpus);
		}
		if (cpu < 0 || cpu >= nr_cpus)
			cpu = prev_cpu;
	} else {
		cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	}

	if (is_idle && !task_bw_throttled(p)) {
		/* charged to the cgroup in stopping() like any other run */
		stat_inc(STAT_IDLE_LOCAL);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, 0);
	}
	return cpu;
}

/*
 * For serving_key() of several CPUs in a row: they mostly serve the same
 * cgroup, whose current key is then looked up once.
 */
struct key_memo {
	u64 cgid;	/* 0: nothing remembered yet */
	u64 key;	/* cvtime + reserved of @cgid */
	bool found;	/* @cgid still existed */
};

/*
 * The key of the cgroup @cpuc serves, as it stands now: its charged vtime
 * plus the reservations on it, never earlier than the key it was picked
 * with. The pick-time key alone goes stale within a cgroup slice: a busy
 * cgroup on 4 CPUs moves its vtime several slices on while one CPU still
 * serves it, and a cgroup waking up is given credit against that newer
 * frontier (update_activity()). Comparing the two made about one wake-up
 * in ten miss its preemption and wait for the slice to end.
 */
static u64 serving_key(struct cpu_ctx *cpuc, struct key_memo *memo)
{
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	u64 cgid = cpuc->cur_cgid;

	if (memo->cgid != cgid) {
		memo->cgid = cgid;
		memo->found = false;
		cgrp = bpf_cgroup_from_id(cgid);
		if (cgrp) {
			cgc = cgrp_ctx_of(cgrp);
			if (cgc) {
				memo->key = cgc->cvtime + cgc->reserved;
				memo->found = true;
			}
			bpf_cgroup_release(cgrp);
		}
	}
	return memo->found ? vtime_max(cpuc->cur_key, memo->key) : cpuc->cur_key;
}

/*
 * May @p take @cpu from what it serves at all? If so, *@vkey is the key
 * @p's cgroup has to be earlier than.
 */
static __always_inline bool wake_victim_key(struct task_struct *p,
					    struct cpu_ctx *cpuc, s32 cpu, u32 domain,
					    struct key_memo *memo, u64 *vkey)
{
	if (!cpuc || !cpuc->cur_cgid || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		return false;
	if (cells_active() && !cpu_in_domain(cpuc, domain))
		return false;
	*vkey = serving_key(cpuc, memo);
	return true;
}

/*
 * A task of a cgroup with nothing queued woke up and no CPU was idle: find
 * a CPU serving a cgroup with a later key for it to preempt, so the waking
 * cgroup does not wait for a whole slice. Returns the CPU or -1.
 *
 * The waking CPU itself goes first when it qualifies: it is running now
 * (timer and I/O wake-ups land on it) and needs no IPI. A remote victim
 * has to take the IPI, and under a hypervisor its vCPU may not even be
 * running. Otherwise the CPU serving the latest key among up to 8 others
 * is taken.
 */
static s32 wake_victim(struct task_struct *p, u64 key, u32 domain)
{
	s32 cpu, self = bpf_get_smp_processor_id();
	s32 start = scx_bpf_task_cpu(p), victim = -1;
	struct key_memo memo = {};
	u64 worst = key, vkey;
	u32 i;

	if (self >= 0 && self < nr_cpus &&
	    wake_victim_key(p, this_cpu_ctx(), self, domain, &memo, &vkey) &&
	    vtime_before(key, vkey))
		return self;
	bpf_for(i, 0, nr_cpus < 8 ? nr_cpus : 8) {
		struct cpu_ctx *cpuc;

		cpu = (start + i) % nr_cpus;
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (wake_victim_key(p, cpuc, cpu, domain, &memo, &vkey) &&
		    vtime_before(worst, vkey)) {
			worst = vkey;
			victim = cpu;
		}
	}
	return victim;
}

/*
 * May a waking task of @cgc go straight onto the CPU it preempts? One task
 * of a cgroup at a time, as through the tree (where the first wake-up
 * queues the cgroup and the next ones find it queued): the claim is
 * released when that task starts running (ops.running()), and expires
 * after a slice should the task never get there (a cgroup move).
 */
static bool claim_direct_wake(struct cgrp_ctx *cgc, u64 now)
{
	u64 at = cgc->direct_at;

	if (at && now - at < slice_ns)
		return false;
	return __sync_val_compare_and_swap(&cgc->direct_at, at, now) == at;
}

/*
 * Put waking @p straight onto @cpu, preempting what runs there. Through
 * the cgroup's DSQ the victim would need a kick (an IPI, to itself too)
 * and a dispatch to find @p: in the VM that made wake-up to running
 * 0.5 ms, against the fair scheduler's 0.1 ms (it preempts in place).
 */
static void direct_wake(struct task_struct *p, s32 cpu, u64 slice, u64 tvtime,
			u64 enq_flags)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	if (tctx)
		tctx->direct = true;
	p->scx.dsq_vtime = tvtime;
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice, enq_flags | SCX_ENQ_PREEMPT);
}

/*
 * A task of restricted affinity is about to be queued for @cpu, which is
 * busy. Does its cgroup (@cgc, tree key @key) come before the one the CPU
 * serves (the same test as wake_victim())? Then it should not wait on
 * the pinned DSQ for the CPU's slice to end and its turn against the tree:
 * a pinned task that sleeps and wakes often (a timer loop like cyclictest's
 * measurement thread) waited that long on every wake-up. @wakeup: not if a
 * task of its own cgroup runs there; a task being put back after it was
 * preempted is checked against the cgroup the CPU serves.
 *
 * With cells, a task pinned outside its cell's CPUs has no key to compare
 * with the CPU's own cell; it goes first only over a borrower (a CPU lent
 * to a third cell), which runs there only while nothing else wants it.
 */
static bool pinned_goes_first(struct task_struct *p, struct cgrp_ctx *cgc,
			      u64 key, s32 cpu, bool wakeup)
{
	struct key_memo memo = {};
	struct cpu_ctx *vc;
	bool lent_away;
	u64 vkey;

	vc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
	if (!vc)
		return false;
	/* a CPU outside @p's cell, lent to a borrower: @p goes first */
	lent_away = vc->lent && cells_active() &&
		    !cpu_in_domain(vc, cgc->domain) &&
		    bpf_cpumask_test_cpu(cpu, p->cpus_ptr);
	if (!lent_away && (!wake_victim_key(p, vc, cpu, cgc->domain, &memo, &vkey) ||
			   !vtime_before(key, vkey)))
		return false;
	return !wakeup || vc->run_cgid != cgc->cgid;
}

/*
 * Does @p need a per-CPU pinned DSQ: can it not run on every CPU its
 * cgroup's domain (without cells: the machine) offers?
 */
static bool task_restricted(struct task_struct *p, struct cgrp_ctx *cgc)
{
	const struct cpumask *m;

	if (!cells_active())
		return p->nr_cpus_allowed < nr_cpus;
	m = domain_mask(cgc->domain);
	return m && !bpf_cpumask_subset(m, p->cpus_ptr);
}

/*
 * Queue a task on the pinned DSQ of a CPU it may use: a restricted-affinity
 * task (its domain's), or a task of a penalised cgroup (@capped: the capped
 * CPUs, thrash.bpf.h).
 */
static __always_inline void enqueue_pinned(struct task_struct *p,
					   struct cgroup *cgrp,
					   struct cgrp_ctx *cgc, u32 cut,
					   u64 slice, u64 enq_flags)
{
	struct bpf_cpumask *tmp = tmp_mask();
	const struct cpumask *cpus = p->cpus_ptr;
	s32 cpu = scx_bpf_task_cpu(p);

	if (task_run_cpus(p, cgc, cut, tmp) &&
	    !bpf_cpumask_empty((const struct cpumask *)tmp))
		cpus = (const struct cpumask *)tmp;
	if (!bpf_cpumask_test_cpu(cpu, cpus))
		cpu = bpf_cpumask_any_distribute(cpus);
	if (cpu < 0 || cpu >= nr_cpus) {
		scx_bpf_dsq_insert(p, AGENTCG_FALLBACK_DSQ, slice, enq_flags);
		return;
	}
	stat_inc(STAT_PINNED_ENQ);
	/*
	 * Straight onto the CPU (not for penalised cgroups): a wake-up
	 * preempts what runs there, a preempted task goes next.
	 */
	if (wake_preempt && !cut && !bw_throttled(cgrp) &&
	    pinned_goes_first(p, cgc, cgrp_key(cgrp, cgc), cpu,
			      enq_flags & SCX_ENQ_WAKEUP)) {
		if (enq_flags & SCX_ENQ_WAKEUP) {
			stat_inc(STAT_WAKE_PREEMPT);
			enq_flags |= SCX_ENQ_PREEMPT;
		}
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice, enq_flags);
		return;
	}
	scx_bpf_dsq_insert(p, PINNED_DSQ(cpu), slice, enq_flags);
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(agentcg_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct bpf_cpumask *tmp;
	struct task_ctx *tctx;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	struct cpu_ctx *cpuc;
	u64 tvtime, slice;
	bool was_queued, restricted, preempt = false;
	u32 cut;
	s32 cpu;

	if (is_pcpu_kthread(p)) {
		stat_inc(STAT_KTHREAD_LOCAL);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		return;
	}

	cgrp = scx_bpf_task_cgroup(p);
	if (!cgrp) {
		scx_bpf_dsq_insert(p, AGENTCG_FALLBACK_DSQ, slice_ns, enq_flags);
		return;
	}
	cgc = cgrp_ctx_of(cgrp);
	if (!cgc) {
		scx_bpf_dsq_insert(p, AGENTCG_FALLBACK_DSQ, slice_ns, enq_flags);
		goto out;
	}
	resolve_cgrp(cgrp, cgc);
	slice = thrash_slice(cgrp, cgc, cgc->slice_ns ?: slice_ns);
	cpuc = this_cpu_ctx();

	cut = run_cut(cgrp, cgc);
	if (cut) {
		/*
		 * penalised or yielding: only on its capped or yield CPUs,
		 * leaving the others free
		 */
		stat_inc(cut & CUT_THRASH ? STAT_THRASH_CAPPED : STAT_YIELD_PINNED);
		enqueue_pinned(p, cgrp, cgc, cut, slice, enq_flags);
		goto out;
	}
	restricted = task_restricted(p, cgc);

	/*
	 * Interactive steps: a waking task goes ahead while it has credit,
	 * pinned or not (a pinned one only straight onto one of its CPUs:
	 * the boost DSQ is for tasks any CPU of the domain can take).
	 */
	if (boost_on && (enq_flags & SCX_ENQ_WAKEUP) && !bw_throttled(cgrp) &&
	    !thrash_penalised(cgrp) && boost_allowed(cgc, bpf_ktime_get_ns()) &&
	    boost_enqueue(p, cgc->domain, slice, enq_flags, !restricted)) {
		tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
		if (tctx)
			tctx->boosted = true;
		stat_inc(STAT_BOOST);
		__sync_fetch_and_add(&cgc->nr_boosts, 1);
		goto out;
	}

	if (restricted) {
		enqueue_pinned(p, cgrp, cgc, 0, slice, enq_flags);
		goto out;
	}

	/*
	 * The CPU found nothing else to run: keep @p on it (if it is one of
	 * @p's cell). It is charged at tick and stop like any other run.
	 */
	if ((enq_flags & SCX_ENQ_LAST) && !task_bw_throttled(p) &&
	    (!cells_active() || (cpuc && cpu_in_domain(cpuc, cgc->domain)))) {
		stat_inc(STAT_LAST_LOCAL);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, enq_flags);
		goto out;
	}

	/* a task that slept keeps at most one slice of credit in its cgroup */
	tvtime = p->scx.dsq_vtime;
	if (vtime_before(tvtime, cgc->tvtime_now - slice_ns))
		tvtime = cgc->tvtime_now - slice_ns;
	was_queued = cgc->queued;

	/*
	 * A CPU for @p, found before @p is queued: an idle one of its own
	 * (work conservation: that CPU looks at the tree), else a lent one to
	 * take back or an idle one to borrow, else, for a wake-up of a cgroup
	 * with nothing queued, one serving a cgroup with a later key.
	 */
	tmp = tmp_mask();
	if (task_domain_cpus(p, cgc, tmp))
		cpu = scx_bpf_pick_idle_cpu((const struct cpumask *)tmp, 0);
	else
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu < 0 && borrowing && cells_active()) {
		cpu = reclaim_lent_cpu(cgc->domain);
		preempt = cpu >= 0;
		if (cpu < 0 && cgc->domain < cells_staged.nr_cells)
			cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	}
	if (wake_preempt && !was_queued && (enq_flags & SCX_ENQ_WAKEUP) &&
	    (cpu < 0 || preempt) && !bw_throttled(cgrp) &&
	    claim_direct_wake(cgc, bpf_ktime_get_ns())) {
		if (cpu < 0) {
			cpu = wake_victim(p, cgrp_key(cgrp, cgc), cgc->domain);
			if (cpu >= 0)
				stat_inc(STAT_WAKE_PREEMPT);
		}
		if (cpu >= 0) {
			direct_wake(p, cpu, slice, tvtime, enq_flags);
			goto out;
		}
		cgc->direct_at = 0;	/* nothing to preempt: give the claim back */
	}

	scx_bpf_dsq_insert_vtime(p, cgc->cgid, slice, tvtime, enq_flags);
	__sync_fetch_and_add(&cgc->enq_seq, 1);
	if (cpuc)
		cpuc->pending_cgid = cgc->cgid;
	cgrp_enqueued(cgrp, cgc);
	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, preempt ? SCX_KICK_PREEMPT : SCX_KICK_IDLE);
out:
	bpf_cgroup_release(cgrp);
}

/*
 * A refill unthrottled a cgroup: move parked nodes back into the tree.
 * Nodes whose cgroup is still throttled get parked again when popped.
 */
static void unpark(void)
{
	const struct cpumask *idle;
	struct bpf_rb_node *rb;
	struct cgrp_node *node;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	s32 cpu;
	u32 i;

	if (!bw_unpark_pending ||
	    !__sync_val_compare_and_swap(&bw_unpark_pending, 1, 0))
		return;

	bpf_for(i, 0, 64) {
		bpf_spin_lock(&tree_lock);
		rb = bpf_rbtree_first(&parked);
		if (rb)
			rb = bpf_rbtree_remove(&parked, rb);
		bpf_spin_unlock(&tree_lock);
		if (!rb)
			return;
		__sync_fetch_and_sub(&nr_bw_parked, 1);
		node = container_of(rb, struct cgrp_node, rb);
		cgrp = bpf_cgroup_from_id(node->cgid);
		if (!cgrp) {
			bpf_obj_drop(node);
			continue;
		}
		cgc = cgrp_ctx_of(cgrp);
		if (cgc) {
			resolve_cgrp(cgrp, cgc);
			node->key = cgrp_key(cgrp, cgc);
			node->domain = cgc->domain;
		}
		bpf_cgroup_release(cgrp);
		bpf_spin_lock(&tree_lock);
		bpf_rbtree_add(&tree, &node->rb, node_less);
		bpf_spin_unlock(&tree_lock);
		stat_inc(STAT_BW_UNPARK);
		idle = scx_bpf_get_idle_cpumask();
		cpu = bpf_cpumask_any_distribute(idle);
		scx_bpf_put_idle_cpumask(idle);
		if (cpu < nr_cpus)
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
	}
	bw_unpark_pending = 1;	/* more left: the next dispatch goes on */
}

/*
 * Move one task from @cpu's pinned DSQ to the local DSQ. While some cgroup
 * is throttled, tasks of throttled cgroups are stepped over and stay queued
 * until their refill kicks this CPU (bw_kick_pinned()).
 */
static bool dispatch_pinned(s32 cpu)
{
	struct task_struct *p;
	struct task_ctx *tctx;

	if (!nr_bw_throttled)
		return scx_bpf_dsq_move_to_local(PINNED_DSQ(cpu), 0);
	bpf_for_each(scx_dsq, p, PINNED_DSQ(cpu), 0) {
		tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
		if (tctx && !(p->flags & PF_EXITING) && cgid_bw_throttled(tctx->cgid))
			continue;
		if (scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0))
			return true;
	}
	return false;
}

/*
 * @prev used up its slice and is still runnable, but sched_ext queues it
 * again only after this dispatch: its cgroup's DSQ may look empty and the
 * cgroup be out of the tree. The tree then gave the CPU away at every
 * slice end, however far ahead of its share the front cgroup was: with D(200)
 * running 4 spinners on 4 CPUs, the bursty children of H(50) got ~25 %
 * of the machine instead of 20 (herd scenario, host loaded). So @prev's
 * cgroup competes here as if it were queued: if its key is not later than
 * the front of this CPU's domains, @prev goes on with a new slice and the
 * CPU serves its cgroup for a new cgroup slice. Only while its cgroup has
 * nothing queued: otherwise the cgroup is in the tree and competes there.
 *
 * *@stay_home is set if @prev may run here at all (of this CPU's cell, not
 * throttled): borrowing must not lend the CPU away from it then, else the
 * owner takes it back with a preemption at every slice (a lone spinner
 * lost 10-15 % of its CPU that way).
 */
static bool prev_goes_on(struct cpu_ctx *cpuc, struct task_struct *prev,
			 u64 now, bool *stay_home)
{
	struct task_ctx *tctx;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	u64 key, front;
	bool keep = false;

	*stay_home = false;
	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED) || is_pcpu_kthread(prev))
		return false;
	tctx = bpf_task_storage_get(&task_ctxs, prev, 0, 0);
	if (!tctx || !tctx->cgid)
		return false;
	cgrp = bpf_cgroup_from_id(tctx->cgid);
	if (!cgrp)
		return false;
	cgc = cgrp_ctx_of(cgrp);
	if (!cgc || bw_throttled(cgrp) ||
	    (cells_active() && !cpu_in_domain(cpuc, cgc->domain)))
		goto out;
	*stay_home = true;
	if (tctx->boosted || run_cut(cgrp, cgc) || task_restricted(prev, cgc) ||
	    scx_bpf_dsq_nr_queued(cgc->cgid))
		goto out;

	/* the caller released this CPU's reservation: the key is the cgroup's own */
	key = cgrp_key(cgrp, cgc);
	if (cpu_front(cpuc, &front) >= 0 && vtime_before(front, key))
		goto out;

	serve_cgroup(cpuc, cgrp, cgc, key, now);
	/* ops.running() does not run again for @prev: cut the slice here */
	prev->scx.slice = bw_cap_slice(bw_remaining(cgrp),
				       thrash_slice(cgrp, cgc, cgc->slice_ns ?: slice_ns));
	keep = true;
out:
	bpf_cgroup_release(cgrp);
	return keep;
}

/*
 * ops.dispatch() runs in stages, each a global function that returns 1 if
 * it dispatched: the verifier checks a global function once, on its own,
 * not along every path of its caller. Measured in the emulated VM (log
 * level 4), dispatch's verification took 3.6 s of a 7 s start as one
 * function (67,642 instructions processed), 3.1 s split into these stages,
 * and 0.66 s (9,011) once DOMAIN_HEAD's descent used can_loop as well.
 */

/* bookkeeping, then the boosted DSQs of this CPU's domains */
__noinline int dsp_boosted(void)
{
	struct cpu_ctx *cpuc = this_cpu_ctx();

	if (!cpuc)
		return 0;
	cells_resync(cpuc);
	rescue_pending(cpuc);
	unpark();
	if (!dispatch_boosted(cpuc))
		return 0;
	stat_inc(STAT_BOOST_DISPATCH);
	return 1;
}

/*
 * The pinned DSQ, if it is its turn (@turns) or regardless; pinned tasks
 * and the tree take turns on a CPU.
 */
__noinline int dsp_pinned(s32 cpu, int turns)
{
	struct cpu_ctx *cpuc = this_cpu_ctx();

	if (!cpuc)
		return 0;
	if ((turns && cpuc->pinned_last) || !dispatch_pinned(cpu)) {
		cpuc->pinned_last = false;
		return 0;
	}
	cpuc->pinned_last = true;
	stat_inc(STAT_PINNED_DISPATCH);
	return 1;
}

/* the cgroup this CPU serves, while its cgroup slice lasts */
__noinline int dsp_sticky(u64 now)
{
	struct cpu_ctx *cpuc = this_cpu_ctx();

	if (!cpuc || !cpuc->cur_cgid)
		return 0;
	/* a lent CPU looks at its own cell first every time */
	if (!cpuc->lent && vtime_before(now, cpuc->cur_until) &&
	    !cgid_bw_throttled(cpuc->cur_cgid) &&
	    move_cgroup_task(cpuc->cur_cgid)) {
		stat_inc(STAT_CGRP_STICKY);
		return 1;
	}
	release_cur(cpuc);
	cpuc->lent = false;
	return 0;
}

/* prev_goes_on(); bit 0: @prev goes on, bit 1: stay home (no borrowing) */
__noinline int dsp_prev(struct task_struct *prev __arg_trusted __arg_nullable, u64 now)
{
	struct cpu_ctx *cpuc = this_cpu_ctx();
	bool stay_home = false;

	if (!cpuc)
		return 0;
	if (prev_goes_on(cpuc, prev, now, &stay_home)) {
		stat_inc(STAT_PREV_KEPT);
		return 1;
	}
	return stay_home ? 2 : 0;
}

__noinline int dsp_tree(int stay_home, u64 now)
{
	struct cpu_ctx *cpuc = this_cpu_ctx();

	return cpuc && pick_from_tree(cpuc, stay_home, now);
}

void BPF_STRUCT_OPS(agentcg_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 now = bpf_ktime_get_ns();
	int ret;

	if (dsp_boosted() || dsp_pinned(cpu, true) || dsp_sticky(now))
		return;
	ret = dsp_prev(prev, now);
	if (ret & 1)
		return;
	if (dsp_tree(ret & 2, now) || dsp_pinned(cpu, false))
		return;
	if (scx_bpf_dsq_move_to_local(AGENTCG_FALLBACK_DSQ, 0))
		stat_inc(STAT_FALLBACK_DISPATCH);
}

void BPF_STRUCT_OPS(agentcg_runnable, struct task_struct *p, u64 enq_flags)
{
	struct cgroup *cgrp = scx_bpf_task_cgroup(p);
	struct task_ctx *tctx;

	if (cgrp) {
		update_activity(cgrp, true);
		tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
		if (tctx)
			yield_count(&tctx->interactive, cgrp_ctx_of(cgrp), true);
		bpf_cgroup_release(cgrp);
	}
}

void BPF_STRUCT_OPS(agentcg_quiescent, struct task_struct *p, u64 deq_flags)
{
	struct cgroup *cgrp = scx_bpf_task_cgroup(p);
	struct task_ctx *tctx;

	if (cgrp) {
		update_activity(cgrp, false);
		bpf_cgroup_release(cgrp);
	}
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (tctx)
		yield_count(&tctx->interactive, NULL, false);
}

void BPF_STRUCT_OPS(agentcg_running, struct task_struct *p)
{
	struct cpu_ctx *cpuc;
	struct task_ctx *tctx;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;

	/*
	 * run_start is not reset here: the kernel keeps adding to
	 * sum_exec_runtime after ops.stopping() (the switch away, and our own
	 * dispatch when the task went to sleep), and cpu.stat counts it, so
	 * the next charge takes it along.
	 */
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	cgrp = scx_bpf_task_cgroup(p);
	if (!cgrp)
		return;
	cpuc = this_cpu_ctx();
	if (cpuc) {
		cpuc->run_cgid = cgrp->kn->id;
		cpuc->run_boosted = tctx && tctx->boosted;
	}
	if (nr_bw_cgroups) {
		/*
		 * cpu.max: every CPU may be running a task of the same limited
		 * cgroup, so each gets at most its share of the budget left.
		 */
		s64 rem = bw_remaining(cgrp);

		/*
		 * Queued on this CPU before its cgroup got throttled: give the
		 * CPU up at once instead of running to the next tick. Not a
		 * task inside a migrate_disable() section (bw_may_stop()).
		 */
		if (rem <= 0 && bw_may_stop(p) && bw_throttled(cgrp)) {
			p->scx.slice = 0;
			scx_bpf_kick_cpu(bpf_get_smp_processor_id(), SCX_KICK_PREEMPT);
		} else {
			p->scx.slice = bw_cap_slice(rem, p->scx.slice);
		}
	}
	cgc = cgrp_ctx_of(cgrp);
	if (cgc && tctx && tctx->direct) {
		/* its direct wake-up has landed: the cgroup may make another */
		tctx->direct = false;
		cgc->direct_at = 0;
	}
	/* racy max across CPUs; a small error only shifts one task's credit */
	if (cgc && vtime_before(cgc->tvtime_now, p->scx.dsq_vtime))
		cgc->tvtime_now = p->scx.dsq_vtime;
	bpf_cgroup_release(cgrp);
}

/*
 * Charge what @p ran since it was last charged. Called when it stops and at
 * every tick, so a task that keeps its CPU (nothing else to run) is still
 * charged as it goes.
 */
static void charge_task(struct task_struct *p)
{
	struct task_ctx *tctx;
	struct cgroup *cgrp;
	struct cgrp_ctx *cgc;
	u64 used;

	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (!tctx)
		return;
	used = p->se.sum_exec_runtime - tctx->run_start;
	tctx->run_start = p->se.sum_exec_runtime;
	if (!used)
		return;

	/* task vtime inside the cgroup, weighted by the task's own weight */
	p->scx.dsq_vtime += used * 100 / (p->scx.weight ?: 1);

	cgrp = scx_bpf_task_cgroup(p);
	if (!cgrp)
		return;
	cgc = cgrp_ctx_of(cgrp);
	if (cgc) {
		charge(cgrp, cgc, used);
		if (tctx->boosted) {
			/* boosted runs spend the step's burst credit */
			__sync_fetch_and_sub(&cgc->credit_ns, (s64)used);
			__sync_fetch_and_add(&cgc->boost_ns, used);
		}
		if (cells_active()) {
			struct cpu_ctx *cpuc = this_cpu_ctx();

			if (cpuc)
				cells_charge(cpuc, cgc->cell, used);
		}
	}
	bpf_cgroup_release(cgrp);
}

void BPF_STRUCT_OPS(agentcg_tick, struct task_struct *p)
{
	struct cpu_ctx *cpuc = this_cpu_ctx();

	charge_task(p);
	if (cpuc) {
		rescue_pending(cpuc);
		/* a cells apply happened: re-place what runs here */
		if (cells_resync(cpuc))
			p->scx.slice = 0;
	}
	/* cpu.max: a task whose cgroup ran out of budget stops now */
	if (bw_may_stop(p) && task_bw_throttled(p))
		p->scx.slice = 0;
}

void BPF_STRUCT_OPS(agentcg_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx;

	charge_task(p);
	/* a boost lasts one run */
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (tctx)
		tctx->boosted = false;
}

s32 BPF_STRUCT_OPS(agentcg_init_task, struct task_struct *p,
		   struct scx_init_task_args *args)
{
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&task_ctxs, p, 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return -ENOMEM;
	/* tasks already running when we attach are charged from now on */
	tctx->run_start = p->se.sum_exec_runtime;
	tctx->cgid = args->cgroup ? args->cgroup->kn->id : 0;
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(agentcg_cgroup_init, struct cgroup *cgrp,
			     struct scx_cgroup_init_args *args)
{
	struct node_stash empty = {}, *st;
	struct cgrp_node *node;
	struct cgrp_ctx *cgc;
	u64 cgid = cgrp->kn->id;
	s32 ret;

	cgc = bpf_cgrp_storage_get(&cgrp_ctxs, cgrp, 0,
				   BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!cgc)
		return -ENOMEM;
	cgc->cgid = cgid;
	cgc->weight = args->weight ?: 100;
	cgc->level = cgrp->level;
	cgc->raw_weight = args->weight ?: 100;
	resolve_cgrp_init(cgrp, cgc);
	cgc->cvtime = *vnow_of(cgc);
	cgc->gvtime = *vnow_of(cgc);
	cgc->hweight = AGENTCG_HWEIGHT_ONE;
	cgc->hweight_own = AGENTCG_HWEIGHT_ONE;

	ret = scx_bpf_create_dsq(cgid, -1);
	if (ret) {
		scx_bpf_error("creating DSQ for cgroup %llu failed (%d)", cgid, ret);
		return ret;
	}

	ret = bpf_map_update_elem(&node_stashes, &cgid, &empty, BPF_NOEXIST);
	if (ret) {
		scx_bpf_destroy_dsq(cgid);
		return ret;
	}
	node = bpf_obj_new(struct cgrp_node);
	if (!node) {
		bpf_map_delete_elem(&node_stashes, &cgid);
		scx_bpf_destroy_dsq(cgid);
		return -ENOMEM;
	}
	node->cgid = cgid;
	st = bpf_map_lookup_elem(&node_stashes, &cgid);
	if (!st) {
		bpf_obj_drop(node);
		scx_bpf_destroy_dsq(cgid);
		return -ENOENT;
	}
	node = bpf_kptr_xchg(&st->node, node);
	if (node)
		bpf_obj_drop(node);
	if (use_kernel_bandwidth)
		bw_apply(cgrp, args->bw_period_us, args->bw_quota_us, args->bw_burst_us);
	return 0;
}

void BPF_STRUCT_OPS(agentcg_cgroup_exit, struct cgroup *cgrp)
{
	u64 cgid = cgrp->kn->id;

	/* drop the cgroup's cpu.max state and timer */
	bw_apply(cgrp, 0, (u64)-1, 0);
	thrash_cgroup_exit(cgrp);
	mem_cgroup_exit(cgrp);

	/* a node still in the tree is dropped when it is next popped */
	bpf_map_delete_elem(&node_stashes, &cgid);
	scx_bpf_destroy_dsq(cgid);
}

/*
 * A task moves between cgroups: keep its position relative to the task
 * vtime frontier, but in the new cgroup's frame (task vtimes of different
 * cgroups are unrelated). Activity and charging follow by themselves:
 * quiescent() and runnable() see the old and the new cgroup.
 */
void BPF_STRUCT_OPS(agentcg_cgroup_move, struct task_struct *p,
		    struct cgroup *from, struct cgroup *to)
{
	struct cgrp_ctx *fc = cgrp_ctx_of(from), *tc = cgrp_ctx_of(to);
	struct task_ctx *tctx;
	s64 delta;

	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (tctx)
		tctx->cgid = to->kn->id;
	if (!fc || !tc)
		return;
	delta = (s64)(p->scx.dsq_vtime - fc->tvtime_now);
	if (delta < -(s64)slice_ns)
		delta = -(s64)slice_ns;
	p->scx.dsq_vtime = tc->tvtime_now + delta;
}

void BPF_STRUCT_OPS(agentcg_cgroup_set_weight, struct cgroup *cgrp, u32 weight)
{
	struct cgrp_ctx *cgc = cgrp_ctx_of(cgrp);

	if (!cgc)
		return;
	cgc->raw_weight = weight ?: 1;
	set_weight(cgrp, cgc, effective_weight(cgc));
}

void BPF_STRUCT_OPS(agentcg_cgroup_set_bandwidth, struct cgroup *cgrp,
		    u64 period_us, u64 quota_us, u64 burst_us)
{
	if (use_kernel_bandwidth)
		bw_apply(cgrp, period_us, quota_us, burst_us);
}

/*
 * Userspace path for kernels without ops.cgroup_set_bandwidth() (and for
 * --bandwidth-source cgroupfs): apply the cpu.max userspace read.
 */
/*
 * Self-test of the memcg_ops delay curve: runs the BPF version on the
 * cases userspace passes in (the same table src/memcg_ops.rs checks).
 */
SEC("syscall")
int agentcg_selftest_delay(struct selftest_args *args)
{
	u32 i, n = args->nr_cases;

	bpf_for(i, 0, AGENTCG_SELFTEST_MAX) {
		struct selftest_case *c;
		u32 class;

		if (i >= n)
			break;
		c = &args->cases[i];
		class = c->class < AGENTCG_NR_CLASSES ? c->class : 0;
		args->out[i] = high_delay_ms(&args->curves[class], c->usage, c->high,
					     c->credit_ok);
	}
	return 0;
}

SEC("syscall")
int agentcg_set_bandwidth(struct bw_args *args)
{
	struct cgroup *cgrp;
	s32 ret;

	cgrp = bpf_cgroup_from_id(args->cgid);
	if (!cgrp)
		return -ENOENT;
	ret = bw_apply(cgrp, args->period_us, args->quota_us, args->burst_us);
	bpf_cgroup_release(cgrp);
	return ret;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(agentcg_init)
{
	struct sweep_timer *st;
	u32 zero = 0, d;
	s32 ret, cpu;

	st = bpf_map_lookup_elem(&sweep_timers, &zero);
	if (!st)
		return -ENOENT;
	bpf_timer_init(&st->timer, &sweep_timers, CLOCK_MONOTONIC);
	bpf_timer_set_callback(&st->timer, sweep_timer_fn);
	ret = bpf_timer_start(&st->timer, AGENTCG_SWEEP_MS * 1000000ULL, 0);
	if (ret)
		return ret;
	if (mem_cfg.guard_cgid) {
		ret = mem_timer_start();
		if (ret)
			return ret;
	}

	ret = scx_bpf_create_dsq(AGENTCG_FALLBACK_DSQ, -1);
	if (ret)
		return ret;
	bpf_for(cpu, 0, nr_cpus) {
		struct bpf_cpumask *m;
		u32 key = cpu;

		ret = scx_bpf_create_dsq(PINNED_DSQ(cpu), -1);
		if (ret)
			return ret;
		m = bpf_cpumask_create();
		if (!m)
			return -ENOMEM;
		if (slot_install(bpf_map_lookup_elem(&tmp_masks, &key), m))
			return -ENOENT;
	}
	bpf_for(d, 0, AGENTCG_MAX_DOMAINS) {
		ret = scx_bpf_create_dsq(BOOST_DSQ(d), -1);
		if (ret)
			return ret;
	}
	return 0;
}

void BPF_STRUCT_OPS(agentcg_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(agentcg_ops,
	       .select_cpu		= (void *)agentcg_select_cpu,
	       .enqueue			= (void *)agentcg_enqueue,
	       .dispatch		= (void *)agentcg_dispatch,
	       .tick			= (void *)agentcg_tick,
	       .runnable		= (void *)agentcg_runnable,
	       .running			= (void *)agentcg_running,
	       .stopping		= (void *)agentcg_stopping,
	       .quiescent		= (void *)agentcg_quiescent,
	       .init_task		= (void *)agentcg_init_task,
	       .cgroup_init		= (void *)agentcg_cgroup_init,
	       .cgroup_exit		= (void *)agentcg_cgroup_exit,
	       .cgroup_move		= (void *)agentcg_cgroup_move,
	       .cgroup_set_weight	= (void *)agentcg_cgroup_set_weight,
	       .cgroup_set_bandwidth	= (void *)agentcg_cgroup_set_bandwidth,
	       .init			= (void *)agentcg_init,
	       .exit			= (void *)agentcg_exit,
	       .name			= "agentcg");
