// SPDX-License-Identifier: GPL-2.0-only
//! `--partial`: only the tasks of the managed tree run under scx_agentcg.
//!
//! With SCX_OPS_SWITCH_PARTIAL the kernel leaves every task on its class
//! until it asks for SCHED_EXT. Userspace switches the tasks it finds in
//! the managed tree (after every cells apply and at every rescan); tasks
//! they fork inherit the policy, so a step's children follow at once.
//! Real-time and deadline tasks are left alone, and a task's nice value is
//! kept.

use std::path::Path;

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

/// Put thread @tid on SCHED_EXT if it is on a fair policy. Returns whether
/// it was switched now. Threads that vanished are not an error.
pub fn switch_task(tid: i32) -> bool {
    // SAFETY: plain syscalls on a thread id.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if !matches!(policy, libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE) {
        return false;
    }
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: SCHED_EXT,
        sched_nice: nice,
        ..Default::default()
    };
    // SAFETY: attr is a valid struct sched_attr of the size it says.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0) };
    r == 0
}

/// Switch every thread of every cgroup below @dir (and in it).
pub fn switch_tree(dir: &Path) -> usize {
    let mut n = 0;
    for cg in crate::cgroups::walk(dir, 100_000) {
        let Ok(threads) = std::fs::read_to_string(cg.path.join("cgroup.threads")) else {
            continue;
        };
        for tid in threads.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if switch_task(tid) {
                n += 1;
            }
        }
    }
    n
}
