/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Debounced activity of a session or subtree (struct activity, intf.h):
 * the scheduler notes its cgroups' subtrees going active or idle
 * (main.bpf.c update_activity), --observe its sessions' tasks getting and
 * leaving CPUs (observe.bpf.c). An idle gap shorter than the debounce is
 * active time, so a task that blocks for a moment does not count as a
 * transition.
 */
#ifndef __AGENTCG_ACTIVITY_BPF_H
#define __AGENTCG_ACTIVITY_BPF_H

#include <scx/common.bpf.h>
#include "intf.h"

/* @a went active (or idle, !@active) at @now. */
static __always_inline void activity_note(struct activity *a, bool active, u64 now)
{
	if (!active) {
		a->idle_at = now;
		return;
	}
	if (!a->active_at) {
		/* first activity ever */
		a->active_at = now;
		a->nr_up = 1;
		return;
	}
	if (!a->idle_at)
		return;
	if (now - a->idle_at >= AGENTCG_ACT_DEBOUNCE_NS) {
		a->active_ns += a->idle_at - a->active_at;
		a->idle_ns += now - a->idle_at;
		a->nr_down++;
		a->nr_up++;
		a->active_at = now;
	}
	a->idle_at = 0;
}

#endif /* __AGENTCG_ACTIVITY_BPF_H */
