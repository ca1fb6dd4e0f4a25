/* SPDX-License-Identifier: GPL-2.0 */
/*
 * --observe: what scx_agentcg sees of its sessions while it schedules
 * nothing. A separate object with its own skeleton (no struct_ops, no
 * sched_ext state), attached to three scheduler tracepoints:
 *
 * - sched_switch: the CPU time of the task leaving a CPU is charged to its
 *   session; the task taking it is counted, and its wake-to-run time
 *   measured if it was woken. A session is active while one of its tasks
 *   is on a CPU (struct activity, debounced as the scheduler debounces).
 * - sched_wakeup, sched_wakeup_new: a session task's wake-up is counted
 *   and stamped in task storage for the switch that runs it.
 *
 * Sessions are the cgroups userspace puts in obs_sessions (the children of
 * --cell-parent-cgroup and the registered cgroups); a task belongs to the
 * deepest of its cgroup's ancestors found there. Other tasks cost one walk
 * up their cgroup path per event. Ancestors are read with CO-RE probe
 * reads, which tracepoint programs may do without a trusted pointer.
 * Nothing here writes outside its own maps.
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "activity.bpf.h"

char _license[] SEC("license") = "GPL";

/* deepest cgroup level searched for a session */
#define OBS_MAX_LEVEL 16

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, struct obs_session);
} obs_sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct obs_cpu);
} obs_cpus SEC(".maps");

/* when a session task was woken (0: not since it last ran) */
struct obs_task {
	u64 woken_at;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct obs_task);
} obs_tasks SEC(".maps");

/* @p's session: its cgroup id and counters, or 0/NULL */
static struct obs_session *session_of(struct task_struct *p, u64 *id)
{
	struct cgroup *cgrp = BPF_CORE_READ(p, cgroups, dfl_cgrp);
	struct cgroup *anc;
	struct obs_session *s;
	int level, i;

	*id = 0;
	if (!cgrp)
		return NULL;
	level = BPF_CORE_READ(cgrp, level);
	bpf_for(i, 0, OBS_MAX_LEVEL) {
		if (level - i < 1)
			break;
		anc = NULL;
		if (bpf_core_read(&anc, sizeof(anc), &cgrp->ancestors[level - i]) || !anc)
			break;
		*id = BPF_CORE_READ(anc, kn, id);
		s = bpf_map_lookup_elem(&obs_sessions, id);
		if (s)
			return s;
	}
	*id = 0;
	return NULL;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(obs_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct obs_session *s;
	struct obs_task *t;
	struct obs_cpu *cpu;
	u32 zero = 0;
	u64 now = bpf_ktime_get_ns(), id, lat;

	cpu = bpf_map_lookup_elem(&obs_cpus, &zero);
	if (!cpu)
		return 0;
	/* the leaving task's run */
	if (cpu->session) {
		id = cpu->session;
		s = bpf_map_lookup_elem(&obs_sessions, &id);
		if (s) {
			__sync_fetch_and_add(&s->run_ns, now - cpu->since);
			if (__sync_sub_and_fetch(&s->nr_on_cpu, 1) <= 0) {
				s->nr_on_cpu = 0;
				activity_note(&s->act, false, now);
			}
		}
		cpu->session = 0;
	}
	if (!next->pid)
		return 0;	/* the idle task */
	s = session_of(next, &id);
	if (!s)
		return 0;
	cpu->session = id;
	cpu->since = now;
	__sync_fetch_and_add(&s->nr_runs, 1);
	if (__sync_fetch_and_add(&s->nr_on_cpu, 1) == 0)
		activity_note(&s->act, true, now);
	t = bpf_task_storage_get(&obs_tasks, next, 0, 0);
	if (t && t->woken_at) {
		lat = now - t->woken_at;
		t->woken_at = 0;
		__sync_fetch_and_add(&s->nr_wake_lat, 1);
		__sync_fetch_and_add(&s->wake_lat_ns, lat);
		if (lat > s->wake_lat_max_ns)
			s->wake_lat_max_ns = lat;
	}
	return 0;
}

static void note_wakeup(struct task_struct *p)
{
	struct obs_session *s;
	struct obs_task *t;
	u64 id;

	s = session_of(p, &id);
	if (!s)
		return;
	__sync_fetch_and_add(&s->nr_wakeups, 1);
	t = bpf_task_storage_get(&obs_tasks, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (t)
		t->woken_at = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(obs_wakeup, struct task_struct *p)
{
	note_wakeup(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(obs_wakeup_new, struct task_struct *p)
{
	note_wakeup(p);
	return 0;
}
