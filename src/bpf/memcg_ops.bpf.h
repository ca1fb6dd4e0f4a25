/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the scheduler object and the memcg_ops object share: the
 * mem_pressure map and the parts of struct mem_cgroup both read, and the
 * memory.high delay curve, used by the memcg_ops object (which gives
 * the delays) and the scheduler object (whose agentcg_selftest_delay program
 * runs it on userspace's test inputs, so the BPF and Rust versions are
 * checked against each other in the VM even where memcg_ops cannot load).
 * Integer math only, identical to high_delay_ms() in src/memcg_ops.rs.
 */
#ifndef __AGENTCG_MEMCG_OPS_BPF_H
#define __AGENTCG_MEMCG_OPS_BPF_H

/* The parts of struct mem_cgroup read here (CO-RE: offsets from the kernel). */
struct mem_cgroup___agentcg {
	struct cgroup_subsys_state css;
	struct page_counter memory;
} __attribute__((preserve_access_index));

/*
 * Per-cgroup memory pressure by cgroup id: the scheduler object owns it,
 * the memcg_ops object is handed the same map (reuse_fd) before loading.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct mem_pressure);
} mem_pressure SEC(".maps");

/* Step class and protection budget by cgroup id, from userspace; shared the same way. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct step_mem);
} step_mems SEC(".maps");

static __always_inline u32 high_delay_ms(const struct delay_curve *c, u64 usage,
					 u64 high, bool credit_ok)
{
	u64 diff, over, x, d;

	if (!high || usage <= high)
		return 0;
	/* saturating, as in Rust: an overflowing product is U64_MAX */
	diff = usage - high;
	over = diff > (~0ULL) / 100 ? (~0ULL) / high : diff * 100 / high;
	if (over < c->start_pct)
		return 0;
	/* beyond 2^20 points any slope >= 1 is past the 2000 ms cap anyway */
	x = over - c->start_pct;
	if (x > (1ULL << 20))
		x = 1ULL << 20;
	d = c->base_ms + (u64)c->slope_ms_per_pct * x;
	if (d > c->max_ms)
		d = c->max_ms;
	if (credit_ok)
		d /= 2;
	return d < AGENTCG_MAX_DELAY_MS ? d : AGENTCG_MAX_DELAY_MS;
}

#endif /* __AGENTCG_MEMCG_OPS_BPF_H */
