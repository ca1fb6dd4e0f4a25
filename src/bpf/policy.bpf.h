/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Step policy in the hot path (profiles from the --policy file, resolved by
 * userspace in src/policy.rs and written to the profiles map).
 *
 * A cgroup's profile scales its cpu.weight (the multiplier composes with
 * cpu.weight inside the flattened hierarchical weight), may override the
 * task slice, and may give its waking tasks a boost: an interactive step's
 * task that wakes goes straight to an idle CPU of its domain, or to the
 * head of a CPU running non-boosted work, preempting it (its previous CPU
 * first); only if every CPU runs boosted work does it wait on its domain's
 * boost DSQ, which CPUs serve before anything else. A task pinned to some
 * of the domain's CPUs is boosted onto one of those, or not at all.
 * Boosted runs spend the cgroup's burst credit, a token bucket refilled
 * at refill_pct of one CPU up to credit_max_ns; a step that is really
 * CPU-bound runs its credit down and is scheduled like any other cgroup
 * until it refills. No userspace round trip is involved.
 */
#ifndef __AGENTCG_POLICY_BPF_H
#define __AGENTCG_POLICY_BPF_H

#define BOOST_DSQ(d)	(AGENTCG_BOOST_DSQ_BASE | (u64)(d))

u32 boost_on;		/* some profile boosts wakeups (set by userspace) */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct profile_cfg);
	__uint(max_entries, AGENTCG_MAX_PROFILES);
} profiles SEC(".maps");

static __always_inline struct profile_cfg *profile_of(struct cgrp_ctx *cgc)
{
	u32 idx = cgc->profile;

	if (!idx)
		return NULL;
	return bpf_map_lookup_elem(&profiles, &idx);
}

/* cpu.weight scaled by the cgroup's profile */
static u32 effective_weight(struct cgrp_ctx *cgc)
{
	struct profile_cfg *prof = profile_of(cgc);
	u64 w = cgc->raw_weight ?: 100;

	if (prof && prof->weight_mult)
		w = w * prof->weight_mult / AGENTCG_MULT_ONE;
	if (cgc->thr_penalised)	/* thrash.bpf.h */
		w = w * (prof && prof->thrash_weight_pct ?
			 prof->thrash_weight_pct : thrash_weight_pct) / 100;
	return w ? (w < 1000000 ? w : 1000000) : 1;
}

/* Set @cgc's weight, keeping its parent's active weight sum in step. */
static void set_weight(struct cgroup *cgrp, struct cgrp_ctx *cgc, u32 weight)
{
	struct cgrp_ctx *parent = NULL;

	if (cgrp->level)
		parent = ancestor_ctx(cgrp, cgrp->level - 1);
	bpf_spin_lock(&tree_lock);
	if (parent && cgc->counted) {
		parent->child_weight_sum += weight;
		parent->child_weight_sum -= parent->child_weight_sum < cgc->weight ?
			parent->child_weight_sum : cgc->weight;
	}
	cgc->weight = weight;
	bpf_spin_unlock(&tree_lock);
	__sync_fetch_and_add(&hweight_gen, 1);
}

static void resolve_cgrp(struct cgroup *cgrp, struct cgrp_ctx *cgc)
{
	struct cgrp_cfg *cfg = NULL;
	struct profile_cfg *prof;
	struct cgroup *anc;
	u32 seq = cells_seq, i, lvl, old_profile;
	u64 id;

	if (cgc->cfg_seq == seq)
		return;
	cgc->cfg_seq = seq;

	/* the deepest configured cgroup on the path decides */
	bpf_for(i, 0, cgrp->level) {
		lvl = cgrp->level - i;
		anc = bpf_cgroup_ancestor(cgrp, lvl);
		if (!anc)
			break;
		id = anc->kn->id;
		bpf_cgroup_release(anc);
		cfg = bpf_map_lookup_elem(&cgrp_cfgs, &id);
		if (cfg)
			break;
	}
	old_profile = cgc->profile;
	if (cfg) {
		cgc->cell = cfg->cell;
		cgc->domain = cfg->domain < AGENTCG_MAX_DOMAINS ? cfg->domain : 0;
		cgc->profile = cfg->profile < AGENTCG_MAX_PROFILES ? cfg->profile : 0;
		cgc->herd_level = cfg->herd_level;
	} else {
		cgc->cell = 0;
		cgc->domain = 0;
		cgc->profile = 0;
		cgc->herd_level = 0;
	}
	prof = profile_of(cgc);
	cgc->slice_ns = prof && prof->slice_ns ? prof->slice_ns : slice_ns;
	if (cgc->profile != old_profile || cgc->weight != effective_weight(cgc))
		set_weight(cgrp, cgc, effective_weight(cgc));
}

/* A new cgroup resolves at once, whatever cells_seq is. */
static void resolve_cgrp_init(struct cgroup *cgrp, struct cgrp_ctx *cgc)
{
	cgc->cfg_seq = cells_seq - 1;
	resolve_cgrp(cgrp, cgc);
}

/* Refill @cgc's burst credit; true if a boost may be spent now. */
static bool boost_allowed(struct cgrp_ctx *cgc, u64 now)
{
	struct profile_cfg *prof = profile_of(cgc);
	s64 credit, cap;

	if (!prof || !prof->boost || !prof->credit_max_ns)
		return false;
	cap = (s64)prof->credit_max_ns;
	credit = cgc->credit_ns;
	if (cgc->credit_at)
		credit += (s64)((now - cgc->credit_at) * prof->refill_pct / 100);
	else
		credit = cap;	/* a new step starts with a full bucket */
	cgc->credit_ns = credit < cap ? credit : cap;
	cgc->credit_at = now;
	if (cgc->credit_ns <= 0) {
		stat_inc(STAT_NO_CREDIT);
		return false;
	}
	return true;
}

/*
 * Where a boosted task runs at once: an idle CPU of its domain (and
 * affinity), else one running something not boosted, its previous CPU
 * first. -1 if every CPU it may use runs boosted work.
 */
static s32 boost_target(struct task_struct *p, u32 d)
{
	const struct cpumask *m = domain_mask(d);
	struct bpf_cpumask *tmp = tmp_mask();
	struct cpu_ctx *cpuc;
	s32 cpu, prev = scx_bpf_task_cpu(p);
	u32 i;

	if (m && tmp) {
		bpf_cpumask_and(tmp, m, p->cpus_ptr);
		cpu = scx_bpf_pick_idle_cpu((const struct cpumask *)tmp, 0);
	} else {
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	}
	if (cpu >= 0)
		return cpu;
	bpf_for(i, 0, nr_cpus) {
		cpu = (prev + i) % nr_cpus;
		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if (m && !bpf_cpumask_test_cpu(cpu, m))
			continue;
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (cpuc && !cpuc->run_boosted)
			return cpu;
	}
	return -1;
}

/*
 * Queue boosted @p: straight at the head of a target CPU's local queue,
 * preempting what runs there; if there is no such CPU, on its domain's
 * boost DSQ, which CPUs serve before anything else, if @may_queue.
 * Returns false if @p was not queued.
 */
static bool boost_enqueue(struct task_struct *p, u32 d, u64 slice, u64 enq_flags,
			  bool may_queue)
{
	s32 cpu = boost_target(p, d);
	struct cpu_ctx *cpuc;

	if (cpu >= 0 && cpu < nr_cpus) {
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (cpuc)
			cpuc->cur_until = 0;	/* its cgroup slice ends too */
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice, enq_flags | SCX_ENQ_PREEMPT);
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return true;
	}
	if (!may_queue)
		return false;
	scx_bpf_dsq_insert(p, BOOST_DSQ(d), slice, enq_flags);
	return true;
}

/* Serve this CPU's boost DSQs first. */
static bool dispatch_boosted(struct cpu_ctx *cpuc)
{
	u32 i, d;

	if (!boost_on)
		return false;
	if (!cpuc->nr_domains)
		return scx_bpf_dsq_nr_queued(BOOST_DSQ(0)) > 0 &&
		       scx_bpf_dsq_move_to_local(BOOST_DSQ(0), 0);
	bpf_for(i, 0, AGENTCG_CPU_DOMAINS) {
		if (i >= cpuc->nr_domains)
			break;
		d = cpuc->domains[i];
		if (scx_bpf_dsq_nr_queued(BOOST_DSQ(d)) > 0 &&
		    scx_bpf_dsq_move_to_local(BOOST_DSQ(d), 0))
			return true;
	}
	return false;
}

#endif /* __AGENTCG_POLICY_BPF_H */
