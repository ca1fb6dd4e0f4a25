// SPDX-License-Identifier: GPL-2.0-only
//! `--partial`: only the tasks of the managed tree run under scx_agentcg.
//!
//! With SCX_OPS_SWITCH_PARTIAL the kernel leaves every task on its class
//! until it asks for SCHED_EXT. Userspace switches the tasks it finds in
//! the managed tree (after every cells apply and at every rescan); tasks
//! they fork inherit the policy, so a step's children follow at once.
//! Real-time and deadline tasks are left alone, and a task's nice value is
//! kept. Sessions whose profile says `cpu_mode = "cfs"` are left on (or
//! put back on) the fair class.

use std::path::{Path, PathBuf};

/// The scheduling policy number of sched_ext.
pub const SCHED_EXT: u32 = 7;

/// struct sched_attr, first version (48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Move thread @tid to SCHED_EXT (@to_ext) from a fair policy, or back to
/// SCHED_OTHER from SCHED_EXT, keeping its nice value. Returns whether it
/// was moved now. Threads that vanished are not an error.
pub fn set_task_class(tid: i32, to_ext: bool) -> bool {
    // SAFETY: plain syscalls on a thread id.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    let from_fair = matches!(policy, libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE);
    if (to_ext && !from_fair) || (!to_ext && policy != SCHED_EXT as i32) {
        return false;
    }
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: if to_ext { SCHED_EXT } else { libc::SCHED_OTHER as u32 },
        sched_nice: nice,
        ..Default::default()
    };
    // SAFETY: attr is a valid struct sched_attr of the size it says.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0) };
    r == 0
}

/// Put every thread of every cgroup below @dir (and in it) on SCHED_EXT
/// (@to_ext) or back on the fair class, except in the subtrees of @skip.
/// Returns how many moved.
pub fn set_tree_class(dir: &Path, to_ext: bool, skip: &[PathBuf]) -> usize {
    let mut n = 0;
    for cg in crate::cgroups::walk(dir, 100_000) {
        if skip.iter().any(|s| cg.path.starts_with(s)) {
            continue;
        }
        let Ok(threads) = std::fs::read_to_string(cg.path.join("cgroup.threads")) else {
            continue;
        };
        for tid in threads.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if set_task_class(tid, to_ext) {
                n += 1;
            }
        }
    }
    n
}
