// SPDX-License-Identifier: GPL-2.0-only
//! The cgroup2 tree as userspace sees it: walking it to find the cgroups the
//! BPF side keeps state for, and ranking them for the per-cgroup stats.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where cgroup2 is mounted on every system we support.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// One cgroup directory: its id (the directory's inode number, which is what
/// the kernel reports as the cgroup id) and its path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupDir {
    pub id: u64,
    pub rel: String,
    pub path: PathBuf,
}

/// Walk the cgroup tree below `root`, breadth first, visiting at most `limit`
/// directories. Directories that vanish during the walk are skipped.
pub fn walk(root: &Path, limit: usize) -> Vec<CgroupDir> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    queue.push_back(root.to_path_buf());
    while let Some(dir) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        out.push(CgroupDir {
            id: meta.ino(),
            rel: rel_name(root, &dir),
            path: dir.clone(),
        });
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut children: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        children.sort();
        queue.extend(children);
    }
    out
}

/// The name stats use for a cgroup: "/" for the root, else the path below it.
pub fn rel_name(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => "/".to_string(),
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(_) => dir.to_string_lossy().into_owned(),
    }
}

/// Cumulative counters of one cgroup, as read from the BPF side.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CgroupSample {
    pub usage_ns: u64,
    pub nr_dispatches: u64,
    pub weight: u32,
    pub hweight: u64,
    pub nr_runnable: u32,
    /// cpu.max state; bw_quota_ns == 0: not limited
    pub bw_quota_ns: u64,
    pub bw_period_ns: u64,
    pub bw_burst_ns: u64,
    pub bw_nr_periods: u64,
    pub bw_nr_throttled: u64,
    pub bw_throttled_ns: u64,
    pub bw_throttled: bool,
    /// CPU time of the whole subtree charged against the limit
    pub bw_usage_ns: u64,
    /// most CPU time the subtree used in one finished period
    pub bw_max_period_usage_ns: u64,
    /// boosted wakeups (policy)
    pub nr_boosts: u64,
    /// memory pressure (thrash.bpf.h): score in permille, penalty state
    pub thr_score: u32,
    pub thr_peak_score: u32,
    pub thr_penalised: bool,
    /// time penalised so far, including a penalty still on
    pub thr_penalised_ns: u64,
    pub thr_nr_penalties: u64,
    pub thr_stall_ns: u64,
    /// subtree activity: transitions and time, debounced
    pub act_nr_up: u64,
    pub act_nr_down: u64,
    pub act_active_ns: u64,
    pub act_idle_ns: u64,
    pub act_active: bool,
}

/// Activity counters of one cgroup as of `now` (CLOCK_MONOTONIC ns), with
/// the run or gap in progress included: (ups, downs, active ns, idle ns,
/// active now). A gap counts as idle only once it is longer than `debounce`.
pub fn activity_now(
    active_at: u64,
    idle_at: u64,
    (ups, downs, active_ns, idle_ns): (u64, u64, u64, u64),
    now: u64,
    debounce: u64,
) -> (u64, u64, u64, u64, bool) {
    if active_at == 0 {
        return (ups, downs, active_ns, idle_ns, false);
    }
    if idle_at == 0 || now.saturating_sub(idle_at) < debounce {
        return (ups, downs, active_ns + now.saturating_sub(active_at), idle_ns, true);
    }
    (
        ups,
        downs + 1,
        active_ns + idle_at.saturating_sub(active_at),
        idle_ns + now.saturating_sub(idle_at),
        false,
    )
}

/// CLOCK_MONOTONIC in nanoseconds (the clock of bpf_ktime_get_ns()).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Usage of one cgroup over an interval.
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupDelta {
    pub name: String,
    /// percent of one CPU
    pub cpu_pct: f64,
    pub dispatches: u64,
    pub weight: u32,
    /// hierarchical weight in percent of the machine
    pub hweight_pct: f64,
    pub nr_runnable: u32,
}

/// How much a cumulative counter grew since `prev`. A counter that went
/// backwards belongs to a re-created cgroup and counts from zero.
pub fn counter_delta(cur: u64, prev: u64) -> u64 {
    cur.checked_sub(prev).unwrap_or(cur)
}

/// Rank cgroups by CPU used between `prev` and `cur` over `elapsed_ns` and
/// keep the `top` busiest. Cgroups absent from `prev` count from zero;
/// counters that went backwards (a re-created cgroup) count from zero too.
pub fn busiest(
    prev: &BTreeMap<String, CgroupSample>,
    cur: &BTreeMap<String, CgroupSample>,
    elapsed_ns: u64,
    top: usize,
    hweight_one: u64,
) -> Vec<CgroupDelta> {
    let elapsed = elapsed_ns.max(1) as f64;
    let mut rows: Vec<CgroupDelta> = cur
        .iter()
        .map(|(name, c)| {
            let p = prev.get(name).copied().unwrap_or_default();
            let used = counter_delta(c.usage_ns, p.usage_ns);
            let disp = counter_delta(c.nr_dispatches, p.nr_dispatches);
            CgroupDelta {
                name: name.clone(),
                cpu_pct: used as f64 * 100.0 / elapsed,
                dispatches: disp,
                weight: c.weight,
                hweight_pct: c.hweight as f64 * 100.0 / hweight_one.max(1) as f64,
                nr_runnable: c.nr_runnable,
            }
        })
        .filter(|r| r.cpu_pct > 0.0 || r.nr_runnable > 0)
        .collect();
    rows.sort_by(|a, b| {
        b.cpu_pct
            .partial_cmp(&a.cpu_pct)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.name.cmp(&b.name))
    });
    rows.truncate(top);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(usage_ns: u64) -> CgroupSample {
        CgroupSample { usage_ns, weight: 100, hweight: 1 << 16, ..Default::default() }
    }

    #[test]
    fn busiest_ranks_by_delta_and_truncates() {
        let prev = BTreeMap::from([("a".to_string(), s(100)), ("b".to_string(), s(0))]);
        let cur = BTreeMap::from([
            ("a".to_string(), s(600)),
            ("b".to_string(), s(900)),
            ("c".to_string(), s(50)),
        ]);
        let rows = busiest(&prev, &cur, 1000, 2, 1 << 16);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "b");
        assert!((rows[0].cpu_pct - 90.0).abs() < 1e-9);
        assert_eq!(rows[1].name, "a");
        assert!((rows[1].cpu_pct - 50.0).abs() < 1e-9);
        assert!((rows[0].hweight_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn recreated_cgroup_counts_from_zero() {
        let prev = BTreeMap::from([("a".to_string(), s(1000))]);
        let cur = BTreeMap::from([("a".to_string(), s(200))]);
        let rows = busiest(&prev, &cur, 1000, 5, 1 << 16);
        assert!((rows[0].cpu_pct - 20.0).abs() < 1e-9);
    }

    #[test]
    fn idle_cgroups_are_dropped() {
        let cur = BTreeMap::from([("idle".to_string(), s(0))]);
        assert!(busiest(&BTreeMap::new(), &cur, 1000, 5, 1 << 16).is_empty());
    }

    #[test]
    fn walk_finds_nested_dirs_with_inode_ids() {
        let base = std::env::temp_dir().join(format!("agentcg-walk-{}", std::process::id()));
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::create_dir_all(base.join("c")).unwrap();
        let found = walk(&base, 100);
        let names: Vec<_> = found.iter().map(|d| d.rel.as_str()).collect();
        assert_eq!(names, vec!["/", "a", "c", "a/b"]);
        let ino = std::fs::metadata(base.join("a/b")).unwrap().ino();
        assert_eq!(found[3].id, ino);
        assert_eq!(walk(&base, 2).len(), 2);
        std::fs::remove_dir_all(&base).unwrap();
    }
}

/// Can this process write to the cgroup directory @dir? False on a
/// read-only mount (as scx_loader may run schedulers) or without access.
pub fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs and access read the NUL-terminated path only.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 || st.f_flag & libc::ST_RDONLY != 0 {
            return false;
        }
        libc::access(c.as_ptr(), libc::W_OK) == 0
    }
}
