// SPDX-License-Identifier: GPL-2.0-only
//! Yielding to interactive sessions (`yield_to_interactive` profiles and
//! the policy's `[yield]` table; BPF side in src/bpf/yielding.bpf.h).
//!
//! While any task of an interactive-class step is runnable, the tasks of
//! yielding profiles run only on the *yield CPUs*, all of them together.
//! Cells keep interactive work apart from background work inside the
//! machine's scheduler, but not on the hardware: background sessions busy
//! on every other CPU still take shared cores, caches and memory bandwidth
//! (on the project's VM, whose 4 vCPUs run on 2 host cores, they take host
//! time directly). Squeezing them onto a few CPUs while interactive work is
//! runnable bounds that interference; they have every CPU again as soon as
//! it is not. This module chooses the CPUs; BPF applies them.

use crate::cells::CpuSet;

/// The yield CPUs: `pct` percent (at least one) of @online outside the
/// interactive sessions' cells, highest-numbered first and outside the
/// system cell where possible (low CPUs carry the housekeeping). With no
/// CPU outside the interactive cells, the highest-numbered online CPU.
pub fn yield_cpus(online: &CpuSet, system: &CpuSet, interactive: &CpuSet, pct: u32) -> CpuSet {
    let base = online.andnot(interactive);
    if base.is_empty() {
        return online.last_n(1);
    }
    let keep = ((base.len() * pct as usize + 50) / 100).clamp(1, base.len());
    let outside_system = base.andnot(system);
    let mut out = outside_system.last_n(keep);
    if out.len() < keep {
        out = out.or(&base.and(system).last_n(keep - out.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    #[test]
    fn the_highest_cpus_outside_interactive_cells_and_the_system_cell() {
        // 4 CPUs: system 0, interactive 1, two background cells 2 and 3
        assert_eq!(yield_cpus(&set("0-3"), &set("0"), &set("1"), 25), set("3"));
        assert_eq!(yield_cpus(&set("0-3"), &set("0"), &set("1"), 60), set("2-3"));
        // more than the background cells hold: the system cell's highest
        assert_eq!(yield_cpus(&set("0-3"), &set("0"), &set("1"), 99), set("0,2-3"));
        // 16 CPUs, interactive 2-5: 25 % of the 12 others is 3
        assert_eq!(yield_cpus(&set("0-15"), &set("0-1"), &set("2-5"), 25), set("13-15"));
    }

    #[test]
    fn always_at_least_one_cpu() {
        assert_eq!(yield_cpus(&set("0-3"), &set("0"), &set("1"), 1), set("3"));
        // every CPU in interactive cells: the last online one
        assert_eq!(yield_cpus(&set("0-1"), &set(""), &set("0-1"), 25), set("1"));
        // no interactive cell: a quarter of all, outside the system cell
        assert_eq!(yield_cpus(&set("0-7"), &set("0-1"), &CpuSet::new(), 25), set("6-7"));
    }
}
