/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_agentcg's memcg BPF ops: a struct_ops for the memcg BPF ops interface
 * (struct memcg_bpf_ops, an unmerged patch set; hooks as in its v6). It is
 * a separate object with its own skeleton so that the scheduler loads on
 * kernels without the type (all mainline kernels so far): userspace probes
 * the running kernel's BTF and loads this only where the type exists
 * (--memcg-ops auto|on|off).
 *
 * - get_high_delay_ms: how long a task past its cgroup's memory.high
 *   sleeps, from its step class's delay curve (background early and hard,
 *   interactive gently, halved while the step has burst credit). The time
 *   spent there is what the scheduler's thrash score measures, so the
 *   delay feeds the score without extra plumbing.
 * - below_low / below_min: bounded protection for interactive steps: a
 *   cgroup is protected while its usage is within the budget userspace
 *   computed (protect_bytes; min protection is half of it).
 * - online / offline: counted, nothing else.
 *
 * The pressure map (mem_pressure, BPF's thrash score) and the step map
 * (step_mems, userspace's classes and budgets) are the scheduler's:
 * userspace hands this object both before loading it (reuse_fd). Curves are in
 * .data, set by userspace from the policy before load.
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "memcg_ops.bpf.h"

char _license[] SEC("license") = "GPL";

/* The hooks of the memcg BPF ops interface (v6), matched by name. */
struct mem_cgroup;
struct memcg_bpf_ops___agentcg {
	void (*handle_cgroup_online)(struct mem_cgroup *memcg);
	void (*handle_cgroup_offline)(struct mem_cgroup *memcg);
	bool (*below_low)(struct mem_cgroup *memcg);
	bool (*below_min)(struct mem_cgroup *memcg);
	unsigned int (*get_high_delay_ms)(struct mem_cgroup *memcg);
};

struct delay_curve curves[AGENTCG_NR_CLASSES];
u64 nr_online, nr_offline, nr_delays;

static u64 memcg_cgid(struct mem_cgroup *memcg)
{
	struct mem_cgroup___agentcg *m = (void *)memcg;

	return BPF_CORE_READ(m, css.cgroup, kn, id);
}

SEC("struct_ops/get_high_delay_ms")
unsigned int BPF_PROG(agentcg_get_high_delay_ms, struct mem_cgroup *memcg)
{
	struct mem_cgroup___agentcg *m = (void *)memcg;
	u64 cgid = memcg_cgid(memcg), usage, high;
	struct mem_pressure *mp = bpf_map_lookup_elem(&mem_pressure, &cgid);
	struct step_mem *sm = bpf_map_lookup_elem(&step_mems, &cgid);
	u32 class = sm && sm->class < AGENTCG_NR_CLASSES ? sm->class : 0;
	u32 d;

	usage = BPF_CORE_READ(m, memory.usage.counter);
	high = BPF_CORE_READ(m, memory.high);
	d = high_delay_ms(&curves[class], usage, high, mp && mp->credit_ok);
	if (d && mp) {
		__sync_fetch_and_add(&mp->nr_delays, 1);
		__sync_fetch_and_add(&mp->delay_ms_total, d);
	}
	if (d)
		__sync_fetch_and_add(&nr_delays, 1);
	return d;
}

static bool protected(struct mem_cgroup *memcg, bool min)
{
	struct mem_cgroup___agentcg *m = (void *)memcg;
	u64 cgid = memcg_cgid(memcg), usage, budget;
	struct step_mem *sm = bpf_map_lookup_elem(&step_mems, &cgid);

	if (!sm || sm->class != 1 || !sm->protect_bytes)
		return false;
	budget = min ? sm->protect_bytes / 2 : sm->protect_bytes;
	usage = BPF_CORE_READ(m, memory.usage.counter) * 4096;
	return usage <= budget;
}

SEC("struct_ops/below_low")
bool BPF_PROG(agentcg_below_low, struct mem_cgroup *memcg)
{
	return protected(memcg, false);
}

SEC("struct_ops/below_min")
bool BPF_PROG(agentcg_below_min, struct mem_cgroup *memcg)
{
	return protected(memcg, true);
}

SEC("struct_ops/handle_cgroup_online")
void BPF_PROG(agentcg_memcg_online, struct mem_cgroup *memcg)
{
	__sync_fetch_and_add(&nr_online, 1);
}

SEC("struct_ops/handle_cgroup_offline")
void BPF_PROG(agentcg_memcg_offline, struct mem_cgroup *memcg)
{
	__sync_fetch_and_add(&nr_offline, 1);
}

SEC(".struct_ops.link")
struct memcg_bpf_ops___agentcg agentcg_memcg_ops = {
	.handle_cgroup_online	= (void *)agentcg_memcg_online,
	.handle_cgroup_offline	= (void *)agentcg_memcg_offline,
	.below_low		= (void *)agentcg_below_low,
	.below_min		= (void *)agentcg_below_min,
	.get_high_delay_ms	= (void *)agentcg_get_high_delay_ms,
};
