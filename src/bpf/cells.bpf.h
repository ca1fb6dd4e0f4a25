/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Cells: CPU sets per agent session, and step masks inside them.
 *
 * Userspace (src/cells.rs) decides everything: which cgroups are sessions,
 * which CPUs each session's cell gets, which steps get a narrower mask. It
 * describes the result as *placement domains*: domain d < nr_cells is cell
 * d's whole mask, higher domains are step masks (always inside one cell).
 * Every cgroup belongs to exactly one domain; every CPU belongs to its
 * cell's domain and to the step-mask domains that contain it.
 *
 * Applying: userspace writes the layout into cells_staged (.bss) and the
 * per-cgroup assignments into the cgrp_cfgs map, then runs the
 * agentcg_apply_cells SEC("syscall") program, which builds fresh cpumasks,
 * swaps them in one by one (readers hold RCU), rewrites each CPU's domain
 * list and finally bumps cells_seq. Cgroups re-resolve their domain lazily
 * when they see a new cells_seq; CPUs drop what they are serving at their
 * next tick after a new cells_seq.
 *
 * What a task may observe while an apply is in flight: for a few
 * microseconds some domains have their new mask and others the old one,
 * and a cgroup assignment written to cgrp_cfgs may be picked up (by a cgroup
 * created meanwhile) before its mask is installed. The worst outcome is a
 * task running one slice on a CPU of its old cell; no task is lost, because
 * every queued cgroup stays in the one pick tree whatever its domain.
 *
 * Picking: the one tree of cgroups is ordered by (domain, key), so each
 * domain's cgroups are a contiguous run. A CPU finds the head of each of
 * its domains with a lower-bound descent (bpf_rbtree_root/left/right) and
 * takes the head with the smallest key. With borrowing on, a CPU that found
 * nothing in its own domains takes the head of another cell's domain (never
 * a step-mask domain) and marks itself lent; a task of the owning cell that
 * wakes with no idle CPU of its own preempts a lent CPU at once.
 */
#ifndef __AGENTCG_CELLS_BPF_H
#define __AGENTCG_CELLS_BPF_H

/* rbtree walking kfuncs (6.16+), not declared by the bundled headers */
extern struct bpf_rb_node *bpf_rbtree_root(struct bpf_rb_root *root) __ksym __weak;
extern struct bpf_rb_node *bpf_rbtree_left(struct bpf_rb_root *root,
					   struct bpf_rb_node *node) __ksym __weak;
extern struct bpf_rb_node *bpf_rbtree_right(struct bpf_rb_root *root,
					    struct bpf_rb_node *node) __ksym __weak;

const volatile bool borrowing = false;	/* --enable-borrowing */

u32 cells_seq;			/* bumped by every apply */
u32 nr_live_domains;		/* 0 or 1: no cells, everything is domain 0 */
u32 domain_cell[AGENTCG_MAX_DOMAINS];
struct cells_cfg cells_staged;	/* written by userspace before an apply */
struct cell_stat cell_stats[AGENTCG_MAX_CELLS];
u64 cell_vnow[AGENTCG_MAX_CELLS];	/* per-cell cvtime frontier */

struct domain_slot {
	struct bpf_cpumask __kptr *mask;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct domain_slot);
	__uint(max_entries, AGENTCG_MAX_DOMAINS);
} domain_masks SEC(".maps");

/* per-CPU scratch masks (indexed by CPU) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct domain_slot);
	__uint(max_entries, AGENTCG_MAX_CPUS);
} tmp_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct cgrp_cfg);
} cgrp_cfgs SEC(".maps");

/* Put @m (consumed) in @slot, releasing the mask it held. */
static __always_inline int slot_install(struct domain_slot *slot, struct bpf_cpumask *m)
{
	if (!slot) {
		bpf_cpumask_release(m);
		return -ENOENT;
	}
	m = bpf_kptr_xchg(&slot->mask, m);
	if (m)
		bpf_cpumask_release(m);
	return 0;
}

static __always_inline bool cells_active(void)
{
	return nr_live_domains > 1;
}

/* @i & @mask in a way the compiler cannot drop: proves array bounds */
#define BOUNDED(i, mask)							\
	({ u64 __v = (i); asm volatile("%[v] &= %[m]" : [v]"+r"(__v) : [m]"i"(mask)); __v; })

static __always_inline u32 cell_idx(u32 cell)
{
	return cell & (AGENTCG_MAX_CELLS - 1);
}

static __always_inline const struct cpumask *domain_mask(u32 d)
{
	struct domain_slot *slot = bpf_map_lookup_elem(&domain_masks, &d);

	if (!slot)
		return NULL;
	return (const struct cpumask *)slot->mask;
}

static __always_inline struct bpf_cpumask *tmp_mask(void)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct domain_slot *slot = bpf_map_lookup_elem(&tmp_masks, &cpu);

	if (!slot)
		return NULL;
	return slot->mask;
}

/* Does CPU @cpuc belong to domain @d? */
static __always_inline bool cpu_in_domain(struct cpu_ctx *cpuc, u32 d)
{
	u32 i;

	if (!cpuc->nr_domains)
		return d == 0;
	bpf_for(i, 0, AGENTCG_CPU_DOMAINS) {
		if (i >= cpuc->nr_domains)
			break;
		if (cpuc->domains[i] == d)
			return true;
	}
	return false;
}

/*
 * Under tree_lock: the first node of domain @d, found by a lower-bound
 * descent. The tree's depth is at most 2 log2(n + 1). can_loop (may_goto)
 * bounds the loop for the verifier, which then prunes it at the loop head;
 * a counted loop was walked to its bound on every path instead, and made
 * most of ops.dispatch()'s verification time.
 */
#define DOMAIN_HEAD(d, headp)							\
	do {									\
		struct bpf_rb_node *__rb = bpf_rbtree_root(&tree), *__cand = NULL; \
		struct cgrp_node *__n;						\
										\
		while (__rb && can_loop) {					\
			__n = container_of(__rb, struct cgrp_node, rb);	\
			if (__n->domain >= (d)) {				\
				__cand = __rb;					\
				__rb = bpf_rbtree_left(&tree, __rb);		\
			} else {						\
				__rb = bpf_rbtree_right(&tree, __rb);		\
			}							\
		}								\
		(headp) = NULL;							\
		if (__cand) {							\
			__n = container_of(__cand, struct cgrp_node, rb);	\
			if (__n->domain == (d))					\
				(headp) = __cand;				\
		}								\
	} while (0)

/* Key of the first node of domain @d; false if the domain has none. */
static bool domain_head_key(u32 d, u64 *keyp)
{
	struct bpf_rb_node *head;
	bool found = false;

	bpf_spin_lock(&tree_lock);
	DOMAIN_HEAD(d, head);
	if (head) {
		*keyp = container_of(head, struct cgrp_node, rb)->key;
		found = true;
	}
	bpf_spin_unlock(&tree_lock);
	return found;
}

/* Remove and return the first node of domain @d. */
static struct bpf_rb_node *domain_pop(u32 d)
{
	struct bpf_rb_node *head;

	bpf_spin_lock(&tree_lock);
	DOMAIN_HEAD(d, head);
	if (head)
		head = bpf_rbtree_remove(&tree, head);
	bpf_spin_unlock(&tree_lock);
	return head;
}

/*
 * The domain this CPU would serve next, of those it belongs to: the one
 * whose head has the smallest key (*@keyp). Without cells, the tree's
 * first node. Returns -1 if none of them has a queued cgroup.
 */
static s32 cpu_front(struct cpu_ctx *cpuc, u64 *keyp)
{
	struct bpf_rb_node *rb;
	u64 key;
	s32 best = -1;
	u32 i;

	if (!cells_active()) {
		bpf_spin_lock(&tree_lock);
		rb = bpf_rbtree_first(&tree);
		if (rb) {
			*keyp = container_of(rb, struct cgrp_node, rb)->key;
			best = 0;
		}
		bpf_spin_unlock(&tree_lock);
		return best;
	}
	bpf_for(i, 0, AGENTCG_CPU_DOMAINS) {
		if (i >= cpuc->nr_domains)
			break;
		if (domain_head_key(cpuc->domains[i], &key) &&
		    (best < 0 || vtime_before(key, *keyp))) {
			best = cpuc->domains[i];
			*keyp = key;
		}
	}
	return best;
}

/*
 * Pop the node this CPU should serve: the smallest key among the heads of
 * its domains; with borrowing, else another cell's head. *@lent is set when
 * the node belongs to another cell.
 */
static struct bpf_rb_node *pop_for_cpu(struct cpu_ctx *cpuc, bool no_borrow,
				       bool *lent)
{
	struct bpf_rb_node *rb;
	u64 key;
	u32 i, d, start, nr;
	s32 best;

	*lent = false;
	if (!cells_active()) {
		bpf_spin_lock(&tree_lock);
		rb = bpf_rbtree_first(&tree);
		if (rb)
			rb = bpf_rbtree_remove(&tree, rb);
		bpf_spin_unlock(&tree_lock);
		return rb;
	}

	best = cpu_front(cpuc, &key);
	if (best >= 0) {
		rb = domain_pop(best);
		if (rb)
			return rb;
	}
	if (!borrowing || no_borrow)
		return NULL;

	/* borrow: another cell's whole-cell domain, round robin from a random cell */
	nr = cells_staged.nr_cells;
	if (nr < 2 || nr > AGENTCG_MAX_CELLS)
		return NULL;
	start = bpf_get_prandom_u32() % nr;
	bpf_for(i, 0, nr) {
		d = (start + i) % nr;
		if (d == cpuc->cell)
			continue;
		if (domain_head_key(d, &key)) {
			rb = domain_pop(d);
			if (rb) {
				*lent = true;
				return rb;
			}
		}
	}
	return NULL;
}

/*
 * A task of domain @d wakes and found no idle CPU of its own: take back a
 * CPU of its cell that is lent to another cell. Returns that CPU, for the
 * caller to preempt, or -1.
 */
static s32 reclaim_lent_cpu(u32 d)
{
	const struct cpumask *m;
	struct cpu_ctx *cpuc;
	s32 cpu;

	if (!borrowing || !cells_active())
		return -1;
	m = domain_mask(d);
	if (!m)
		return -1;
	bpf_for(cpu, 0, nr_cpus) {
		if (!bpf_cpumask_test_cpu(cpu, m))
			continue;
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (!cpuc || !cpuc->lent)
			continue;
		cpuc->cur_until = 0;
		cpuc->lent = false;
		stat_inc(STAT_RECLAIM);
		return cpu;
	}
	return -1;
}

/* Per-cell CPU time: busy on the CPU's cell, borrowed/lent across cells. */
static __always_inline void cells_charge(struct cpu_ctx *cpuc, u32 task_cell, u64 ns)
{
	u32 cc = cell_idx(cpuc->cell), tc = cell_idx(task_cell);

	__sync_fetch_and_add(&cell_stats[cc].busy_ns, ns);
	__sync_fetch_and_add(&cell_stats[tc].used_ns, ns);
	if (cc != tc) {
		__sync_fetch_and_add(&cell_stats[tc].borrowed_ns, ns);
		__sync_fetch_and_add(&cell_stats[cc].lent_ns, ns);
	}
}

/*
 * Install the layout staged in cells_staged. Run by userspace with
 * BPF_PROG_TEST_RUN; returns 0 or a negative errno.
 */
SEC("syscall")
int agentcg_apply_cells(void *ctx)
{
	struct bpf_cpumask *m;
	struct cpu_ctx *cpuc;
	u32 d, cpu, i, nr = cells_staged.nr_domains, n;
	u64 di, ci;

	if (nr > AGENTCG_MAX_DOMAINS || cells_staged.nr_cells > AGENTCG_MAX_CELLS)
		return -EINVAL;

	bpf_for(d, 0, nr) {
		m = bpf_cpumask_create();
		if (!m)
			return -ENOMEM;
		bpf_for(cpu, 0, nr_cpus) {
			di = BOUNDED(d, AGENTCG_MAX_DOMAINS - 1);
			ci = BOUNDED(cpu, AGENTCG_MAX_CPUS - 1);
			if (cells_staged.domain_mask[di][ci / 64] & (1ULL << (ci % 64)))
				bpf_cpumask_set_cpu(cpu, m);
		}
		if (slot_install(bpf_map_lookup_elem(&domain_masks, &d), m))
			return -ENOENT;
		di = BOUNDED(d, AGENTCG_MAX_DOMAINS - 1);
		domain_cell[di] = cells_staged.domain_cell[di];
	}

	bpf_for(cpu, 0, nr_cpus) {
		cpuc = bpf_map_lookup_percpu_elem(&cpu_ctxs, &(u32){0}, cpu);
		if (!cpuc)
			return -ENOENT;
		ci = BOUNDED(cpu, AGENTCG_MAX_CPUS - 1);
		n = cells_staged.cpu_nr_domains[ci];
		if (n > AGENTCG_CPU_DOMAINS)
			n = AGENTCG_CPU_DOMAINS;
		bpf_for(i, 0, AGENTCG_CPU_DOMAINS) {
			ci = BOUNDED(cpu, AGENTCG_MAX_CPUS - 1);
			di = BOUNDED(i, AGENTCG_CPU_DOMAINS - 1);
			cpuc->domains[di] = cells_staged.cpu_domains[ci][di];
		}
		ci = BOUNDED(cpu, AGENTCG_MAX_CPUS - 1);
		cpuc->nr_domains = n;
		cpuc->cell = cells_staged.cpu_cell[ci];
	}
	nr_live_domains = nr;
	__sync_fetch_and_add(&cells_seq, 1);
	return 0;
}

#endif /* __AGENTCG_CELLS_BPF_H */
