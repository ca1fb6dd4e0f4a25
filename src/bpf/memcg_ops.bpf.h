/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The memory.high delay curve, shared by the memcg_ops object (which gives
 * the delays) and the scheduler object (whose agentcg_selftest_delay program
 * runs it on userspace's test inputs, so the BPF and Rust versions are
 * checked against each other in the VM even where memcg_ops cannot load).
 * Integer math only, identical to high_delay_ms() in src/memcg_ops.rs.
 */
#ifndef __AGENTCG_MEMCG_OPS_BPF_H
#define __AGENTCG_MEMCG_OPS_BPF_H

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
