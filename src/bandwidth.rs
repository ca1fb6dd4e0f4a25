// SPDX-License-Identifier: GPL-2.0-only
//! cpu.max for sched_ext tasks, userspace side (the BPF side is
//! src/bpf/bandwidth.bpf.h).
//!
//! Kernels from 6.17 hand cpu.max to the scheduler through
//! `ops.cgroup_set_bandwidth()`. On older sched_ext kernels (6.12 to 6.16),
//! or with `--bandwidth-source cgroupfs`, userspace reads `cpu.max` and
//! `cpu.max.burst` of every cgroup, re-reads them periodically, and applies
//! changes through the `agentcg_set_bandwidth` syscall program.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

/// Where cpu.max values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BandwidthSource {
    /// The kernel's ops.cgroup_set_bandwidth() when it has it, else cgroupfs.
    Auto,
    /// ops.cgroup_set_bandwidth() only; fail where the kernel lacks it.
    Kernel,
    /// Userspace reads cpu.max / cpu.max.burst and re-reads them.
    Cgroupfs,
}

/// Decide the effective source given whether the kernel has the op.
pub fn resolve_source(wanted: BandwidthSource, kernel_has_op: bool) -> Result<BandwidthSource> {
    match (wanted, kernel_has_op) {
        (BandwidthSource::Auto, true) | (BandwidthSource::Kernel, true) => Ok(BandwidthSource::Kernel),
        (BandwidthSource::Auto, false) | (BandwidthSource::Cgroupfs, _) => Ok(BandwidthSource::Cgroupfs),
        (BandwidthSource::Kernel, false) => bail!(
            "--bandwidth-source kernel: this kernel has no ops.cgroup_set_bandwidth (it needs 6.17 or later); \
             use --bandwidth-source auto or cgroupfs"
        ),
    }
}

/// One cgroup's cpu.max and cpu.max.burst, in microseconds. `quota_us` is
/// `None` for "max" (no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub quota_us: Option<u64>,
    pub period_us: u64,
    pub burst_us: u64,
}

impl Limit {
    /// The value the BPF side takes for "max".
    pub const NO_QUOTA: u64 = u64::MAX;

    pub fn quota_arg(&self) -> u64 {
        self.quota_us.unwrap_or(Self::NO_QUOTA)
    }
}

/// Parse the contents of a `cpu.max` file: "QUOTA PERIOD" or "max PERIOD".
pub fn parse_cpu_max(s: &str) -> Result<(Option<u64>, u64)> {
    let mut it = s.split_whitespace();
    let (Some(q), Some(p), None) = (it.next(), it.next(), it.next()) else {
        bail!("cpu.max: expected 'QUOTA PERIOD' or 'max PERIOD', got '{}'", s.trim());
    };
    let period: u64 = p
        .parse()
        .map_err(|_| anyhow::anyhow!("cpu.max: bad period '{p}'"))?;
    if period == 0 {
        bail!("cpu.max: period is 0");
    }
    let quota = if q == "max" {
        None
    } else {
        Some(q.parse().map_err(|_| anyhow::anyhow!("cpu.max: bad quota '{q}'"))?)
    };
    Ok((quota, period))
}

/// Read a cgroup's limit; `Ok(None)` if it has no cpu controller files.
pub fn read_limit(dir: &Path) -> Result<Option<Limit>> {
    let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) else {
        return Ok(None);
    };
    let (quota_us, period_us) = parse_cpu_max(&max)?;
    let burst_us = match std::fs::read_to_string(dir.join("cpu.max.burst")) {
        Ok(b) => b
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("cpu.max.burst: bad value '{}'", b.trim()))?,
        Err(_) => 0,
    };
    Ok(Some(Limit { quota_us, period_us, burst_us }))
}

/// The limits to apply so the BPF side matches `cur`, given what was
/// applied before (`prev`). Cgroups that disappeared need nothing: their
/// state goes with them. Unlimited cgroups seen for the first time need
/// nothing either.
pub fn changes(prev: &BTreeMap<u64, Limit>, cur: &BTreeMap<u64, Limit>) -> Vec<(u64, Limit)> {
    cur.iter()
        .filter(|(id, lim)| match prev.get(id) {
            Some(p) => p != *lim,
            None => lim.quota_us.is_some(),
        })
        .map(|(id, lim)| (*id, *lim))
        .collect()
}

/// What counts as applied after a poll: `cur`, except that a limit whose
/// apply failed keeps its previous state (or none), so the next poll sees it
/// as changed again and retries.
pub fn settle(
    prev: &BTreeMap<u64, Limit>,
    mut cur: BTreeMap<u64, Limit>,
    failed: &[u64],
) -> BTreeMap<u64, Limit> {
    for id in failed {
        match prev.get(id) {
            Some(p) => cur.insert(*id, *p),
            None => cur.remove(id),
        };
    }
    cur
}

/// Quota as a percentage of one CPU.
pub fn quota_pct(quota_ns: u64, period_ns: u64) -> f64 {
    if period_ns == 0 {
        0.0
    } else {
        quota_ns as f64 * 100.0 / period_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), (None, 100000));
        assert_eq!(parse_cpu_max("20000 100000").unwrap(), (Some(20000), 100000));
        assert!(parse_cpu_max("20000").is_err());
        assert!(parse_cpu_max("x 100000").is_err());
        assert!(parse_cpu_max("1000 0").is_err());
        assert!(parse_cpu_max("1 2 3").is_err());
    }

    #[test]
    fn source_resolution() {
        use BandwidthSource::*;
        assert_eq!(resolve_source(Auto, true).unwrap(), Kernel);
        assert_eq!(resolve_source(Auto, false).unwrap(), Cgroupfs);
        assert_eq!(resolve_source(Cgroupfs, true).unwrap(), Cgroupfs);
        let e = resolve_source(Kernel, false).unwrap_err().to_string();
        assert!(e.contains("6.17"), "{e}");
    }

    #[test]
    fn changes_cover_new_modified_and_removed_limits() {
        let lim = |q: Option<u64>| Limit { quota_us: q, period_us: 100000, burst_us: 0 };
        let prev = BTreeMap::from([(1, lim(Some(20000))), (2, lim(Some(50000))), (3, lim(None))]);
        let cur = BTreeMap::from([
            (1, lim(Some(20000))), // unchanged
            (2, lim(None)),        // limit removed: must be applied
            (3, lim(Some(1000))),  // newly limited
            (4, lim(None)),        // new, unlimited: nothing to do
            (5, lim(Some(7000))),  // new, limited
        ]);
        let ids: Vec<u64> = changes(&prev, &cur).iter().map(|c| c.0).collect();
        assert_eq!(ids, vec![2, 3, 5]);
        assert_eq!(lim(None).quota_arg(), u64::MAX);
    }

    #[test]
    fn failed_applies_are_retried_at_the_next_poll() {
        let lim = |q: Option<u64>| Limit { quota_us: q, period_us: 100000, burst_us: 0 };
        let prev = BTreeMap::from([(2, lim(Some(50000)))]);
        let cur = BTreeMap::from([(2, lim(None)), (3, lim(Some(1000))), (4, lim(Some(2000)))]);
        // applying 2 (removal) and 3 (new) failed, 4 succeeded
        let applied = settle(&prev, cur.clone(), &[2, 3]);
        assert_eq!(applied.get(&2), Some(&lim(Some(50000))));
        assert_eq!(applied.get(&3), None);
        assert_eq!(applied.get(&4), Some(&lim(Some(2000))));
        let ids: Vec<u64> = changes(&applied, &cur).iter().map(|c| c.0).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn reads_limit_files() {
        let d = std::env::temp_dir().join(format!("agentcg-bw-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(read_limit(&d).unwrap(), None);
        std::fs::write(d.join("cpu.max"), "150000 100000\n").unwrap();
        std::fs::write(d.join("cpu.max.burst"), "50000\n").unwrap();
        assert_eq!(
            read_limit(&d).unwrap(),
            Some(Limit { quota_us: Some(150000), period_us: 100000, burst_us: 50000 })
        );
        std::fs::write(d.join("cpu.max.burst"), "lots\n").unwrap();
        assert!(read_limit(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
        assert!((quota_pct(150_000_000, 100_000_000) - 150.0).abs() < 1e-9);
    }
}
