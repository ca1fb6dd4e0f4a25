/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Yielding to interactive work (src/yielding.rs chooses the CPUs).
 *
 * A task of an interactive-class cgroup is counted from ops.runnable() to
 * ops.quiescent() (the task remembers that it was, so a profile or cgroup
 * change in between cannot unbalance the count). While the count is above
 * zero, and for AGENTCG_YIELD_LINGER_NS after it falls to zero (an
 * interactive step blocks for a moment between bursts), cgroups whose
 * profile yields run only on yield_cpus: their tasks are placed and
 * queued there exactly as thrash-capped tasks are on their capped CPUs
 * (pinned DSQs), and a running one is not kept on a CPU outside them. A
 * task whose affinity has none of those CPUs keeps its own. Nothing here
 * runs while no profile yields (yield_on).
 */
#ifndef __AGENTCG_YIELDING_BPF_H
#define __AGENTCG_YIELDING_BPF_H

#include <scx/common.bpf.h>
#include "intf.h"
#include "policy.bpf.h"

#define AGENTCG_YIELD_LINGER_NS	(20ULL * 1000 * 1000)

u32 yield_on;				/* some profile yields (userspace) */
u64 yield_cpus[AGENTCG_MASK_WORDS];	/* where they run meanwhile (userspace) */
u64 nr_interactive_runnable;
u64 interactive_idle_at;		/* the count last fell to zero */

static __always_inline bool interactive_runnable(void)
{
	u64 idle_at;

	if (nr_interactive_runnable)
		return true;
	idle_at = interactive_idle_at;
	return idle_at && bpf_ktime_get_ns() - idle_at < AGENTCG_YIELD_LINGER_NS;
}

/* @cgc's tasks must keep to the yield CPUs now. */
static __always_inline bool yielding(struct cgrp_ctx *cgc)
{
	struct profile_cfg *prof;

	if (!yield_on || !cgc)
		return false;
	prof = profile_of(cgc);
	return prof && prof->yield && interactive_runnable();
}

static __always_inline bool is_yield_cpu(s32 cpu)
{
	u32 w = (u32)cpu / 64;

	if (w >= AGENTCG_MASK_WORDS)
		return false;
	return yield_cpus[w] & (1ULL << ((u32)cpu % 64));
}

/* Cut @m to the yield CPUs, unless that would leave it empty. */
static void yield_cut_mask(struct bpf_cpumask *m)
{
	bool any = false;
	s32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		if (is_yield_cpu(cpu) &&
		    bpf_cpumask_test_cpu(cpu, (const struct cpumask *)m)) {
			any = true;
			break;
		}
	}
	if (!any)
		return;
	bpf_for(cpu, 0, nr_cpus) {
		if (!is_yield_cpu(cpu))
			bpf_cpumask_clear_cpu(cpu, m);
	}
}

/*
 * ops.runnable() / ops.quiescent() of a task of @cgc; @counted is the
 * task's own flag (it is in the count).
 */
static void yield_count(bool *counted, struct cgrp_ctx *cgc, bool runnable)
{
	struct profile_cfg *prof;

	if (!runnable) {
		if (!*counted)
			return;
		*counted = false;
		if (!__sync_sub_and_fetch(&nr_interactive_runnable, 1))
			interactive_idle_at = bpf_ktime_get_ns();
		return;
	}
	if (!yield_on || *counted || !cgc)
		return;
	prof = profile_of(cgc);
	if (!prof || prof->class != 1)	/* interactive */
		return;
	*counted = true;
	__sync_fetch_and_add(&nr_interactive_runnable, 1);
}

#endif /* __AGENTCG_YIELDING_BPF_H */
