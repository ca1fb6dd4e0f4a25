// SPDX-License-Identifier: GPL-2.0-only
//! Cell math: which CPUs each agent session (cell) and each step gets.
//!
//! Every direct child of the managed parent is a *session* and gets a
//! *cell*, a set of CPUs; cell 0 is the *system cell* for everything else.
//! Steps (cgroups below a session) may get a *step mask*, a subset of their
//! cell. Everything here is a plain function of its inputs; the manager
//! (`cells/manager.rs`) scans the tree and hands the result to BPF.
//!
//! Splitting CPUs between cells ([`split_cpus`]):
//! - a CPU named in exactly one session's `cpuset.cpus` is that session's;
//! - a CPU named by several sessions is *contested* and shared out between
//!   them in proportion to weight;
//! - CPUs named by nobody are *unclaimed* and shared out between the system
//!   cell (weight 100) and the sessions without a cpuset, by weight (or by
//!   measured demand when rebalancing);
//! - the system cell keeps at least `system_min` CPUs and every session at
//!   least one (taken from the largest cells); sessions that cannot get a
//!   CPU get an empty cell and stay in the system cell.
//!
//! Lower-numbered CPUs go to the system cell, then to sessions in order, so
//! a layout maps onto cores predictably.

pub mod manager;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const WORDS: usize = 8;
pub const MAX_CPUS: usize = WORDS * 64;

/// A set of CPU ids below [`MAX_CPUS`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet([u64; WORDS]);

impl CpuSet {
    pub fn new() -> Self {
        CpuSet([0; WORDS])
    }

    pub fn insert(&mut self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.0[cpu / 64] |= 1 << (cpu % 64);
        }
    }

    pub fn remove(&mut self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.0[cpu / 64] &= !(1 << (cpu % 64));
        }
    }

    pub fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_CPUS).filter(move |c| self.contains(*c))
    }

    pub fn and(&self, o: &CpuSet) -> CpuSet {
        let mut r = *self;
        r.0.iter_mut().zip(o.0.iter()).for_each(|(a, b)| *a &= b);
        r
    }

    pub fn or(&self, o: &CpuSet) -> CpuSet {
        let mut r = *self;
        r.0.iter_mut().zip(o.0.iter()).for_each(|(a, b)| *a |= b);
        r
    }

    pub fn andnot(&self, o: &CpuSet) -> CpuSet {
        let mut r = *self;
        r.0.iter_mut().zip(o.0.iter()).for_each(|(a, b)| *a &= !b);
        r
    }

    /// The lowest @n CPUs of the set.
    pub fn first_n(&self, n: usize) -> CpuSet {
        self.iter().take(n).collect()
    }

    /// The highest @n CPUs of the set.
    pub fn last_n(&self, n: usize) -> CpuSet {
        let v: Vec<usize> = self.iter().collect();
        v[v.len().saturating_sub(n)..].iter().copied().collect()
    }

    pub fn words(&self) -> [u64; WORDS] {
        self.0
    }

    /// Parse the kernel's cpulist format ("0-3,8,10-11"; "" is empty).
    pub fn parse_list(s: &str) -> Result<CpuSet, String> {
        let mut set = CpuSet::new();
        for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{part:?} in cpulist {s:?} is not a CPU or a range like 2-5");
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?),
                None => {
                    let v = part.parse::<usize>().map_err(|_| bad())?;
                    (v, v)
                }
            };
            if lo > hi || hi >= MAX_CPUS {
                return Err(bad());
            }
            (lo..=hi).for_each(|c| set.insert(c));
        }
        Ok(set)
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(it: I) -> Self {
        let mut s = CpuSet::new();
        it.into_iter().for_each(|c| s.insert(c));
        s
    }
}

impl std::fmt::Display for CpuSet {
    /// The kernel's cpulist format.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<usize> = self.iter().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            parts.push(if i == j { v[i].to_string() } else { format!("{}-{}", v[i], v[j]) });
            i = j + 1;
        }
        write!(f, "{}", parts.join(","))
    }
}

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

/// What the split needs to know about one session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionReq {
    /// cpu.weight (1 to 10000)
    pub weight: u32,
    /// the session's cpuset.cpus, if it has one
    pub cpuset: Option<CpuSet>,
    /// measured demand in CPUs (rebalancing); None: share by weight
    pub demand: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub system: CpuSet,
    /// one per session, in order; empty: no CPU could be given
    pub cells: Vec<CpuSet>,
    pub notes: Vec<String>,
}

/// Divide @n items between claimants of weights @w by largest remainder.
/// Ties go to the earlier claimant.
fn apportion(n: usize, w: &[f64]) -> Vec<usize> {
    let total: f64 = w.iter().sum();
    if w.is_empty() {
        return Vec::new();
    }
    if total <= 0.0 {
        let mut out = vec![n / w.len(); w.len()];
        (0..n % w.len()).for_each(|i| out[i] += 1);
        return out;
    }
    let exact: Vec<f64> = w.iter().map(|x| n as f64 * x / total).collect();
    let mut out: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = n - out.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// Split @online between the system cell and the sessions (see the module
/// documentation for the rules). @system_demand is the system cell's
/// measured demand when rebalancing.
pub fn split_cpus(
    online: &CpuSet,
    system_min: usize,
    sessions: &[SessionReq],
    system_demand: Option<f64>,
) -> Split {
    let mut notes = Vec::new();
    let n = sessions.len();
    let mut cells = vec![CpuSet::new(); n];
    let system_min = system_min.clamp(1, online.len().max(1));
    let share = |s: &SessionReq| -> f64 {
        match s.demand {
            Some(d) => d.max(0.05),
            None => s.weight.max(1) as f64,
        }
    };

    // which sessions claim each CPU through their cpuset
    let claims: Vec<Option<CpuSet>> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| match s.cpuset {
            Some(c) if !c.and(online).is_empty() => Some(c.and(online)),
            Some(c) => {
                notes.push(format!(
                    "session {i}: its cpuset {c} has no online CPU; it shares the unclaimed CPUs"
                ));
                None
            }
            None => None,
        })
        .collect();
    let mut unclaimed = *online;
    let mut contested: BTreeMap<Vec<usize>, CpuSet> = BTreeMap::new();
    for cpu in online.iter() {
        let who: Vec<usize> = (0..n).filter(|&i| claims[i].map(|c| c.contains(cpu)).unwrap_or(false)).collect();
        match who.len() {
            0 => {}
            1 => {
                cells[who[0]].insert(cpu);
                unclaimed.remove(cpu);
            }
            _ => {
                contested.entry(who).or_default().insert(cpu);
                unclaimed.remove(cpu);
            }
        }
    }
    for (who, cpus) in &contested {
        let w: Vec<f64> = who.iter().map(|&i| share(&sessions[i])).collect();
        let counts = apportion(cpus.len(), &w);
        let mut rest = *cpus;
        for (k, &i) in who.iter().enumerate() {
            let take = rest.first_n(counts[k]);
            cells[i] = cells[i].or(&take);
            rest = rest.andnot(&take);
        }
    }

    // unclaimed CPUs: the system cell and sessions without a cpuset
    let free: Vec<usize> = (0..n).filter(|&i| claims[i].is_none()).collect();
    let mut w = vec![system_demand.map(|d| d.max(0.05)).unwrap_or(100.0)];
    if system_demand.is_some() {
        // demands are in CPUs; weights are not: with demand, sessions
        // without a measurement count as one CPU
        w.extend(free.iter().map(|&i| sessions[i].demand.unwrap_or(1.0).max(0.05)));
    } else {
        w.extend(free.iter().map(|&i| share(&sessions[i])));
    }
    let mut counts = apportion(unclaimed.len(), &w);
    // system minimum first, then one CPU for each cpuset-less session
    let mut want_min = vec![system_min];
    want_min.extend(free.iter().map(|_| 1));
    for k in 0..counts.len() {
        while counts[k] < want_min[k] {
            // take from the claimant with the most above its minimum
            let donor = (0..counts.len())
                .filter(|&j| j != k && counts[j] > want_min[j])
                .max_by_key(|&j| (counts[j] - want_min[j], std::cmp::Reverse(j)));
            match donor {
                Some(j) => {
                    counts[j] -= 1;
                    counts[k] += 1;
                }
                None => break,
            }
        }
    }
    let mut rest = unclaimed;
    let sys_take = rest.first_n(counts[0]);
    let mut system = sys_take;
    rest = rest.andnot(&sys_take);
    for (k, &i) in free.iter().enumerate() {
        let take = rest.first_n(counts[k + 1]);
        cells[i] = take;
        rest = rest.andnot(&take);
    }

    // the system cell's minimum may have to come from cpuset cells
    while system.len() < system_min {
        let donor = (0..n).filter(|&i| cells[i].len() > 1).max_by_key(|&i| (cells[i].len(), std::cmp::Reverse(i)));
        let Some(i) = donor else { break };
        let cpu = cells[i].iter().next().unwrap();
        cells[i].remove(cpu);
        system.insert(cpu);
        notes.push(format!("session {i} gave CPU {cpu} to the system cell's minimum"));
    }
    // the system cell is never empty: it runs everything outside sessions
    if system.is_empty() {
        if let Some(i) = (0..n).find(|&i| !cells[i].is_empty()) {
            let cpu = cells[i].iter().next().unwrap();
            cells[i].remove(cpu);
            system.insert(cpu);
            notes.push(format!("session {i} gave its only CPU {cpu} to the system cell"));
        }
    }
    // every session at least one CPU, from the largest cells
    for i in 0..n {
        if !cells[i].is_empty() {
            continue;
        }
        let donor = (0..n).filter(|&j| cells[j].len() > 1).max_by_key(|&j| (cells[j].len(), std::cmp::Reverse(j)));
        match donor {
            Some(j) => {
                let cpu = cells[j].iter().last().unwrap();
                cells[j].remove(cpu);
                cells[i].insert(cpu);
            }
            None if system.len() > system_min => {
                let cpu = system.iter().last().unwrap();
                system.remove(cpu);
                cells[i].insert(cpu);
            }
            None => notes.push(format!("session {i} gets no CPU of its own: not enough CPUs")),
        }
    }
    Split { system, cells, notes }
}

/// A step's request for CPUs of its cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepShare {
    /// percent of the cell's shared (unreserved) CPUs, 1 to 100
    Pct(u32),
    /// reserve this many CPUs of the cell for the step alone
    Exclusive(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepReq {
    pub id: u64,
    pub share: StepShare,
    /// arrival order: earlier steps win reservations
    pub since: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    None,
    Granted(u32),
    Denied { wanted: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMask {
    pub id: u64,
    pub mask: CpuSet,
    pub reservation: Reservation,
}

/// Masks of the steps of one cell. Reservations are granted first come,
/// first served (highest-numbered CPUs) while the shared part keeps at
/// least one CPU; refused ones fall back to the whole shared part. Shares
/// are the lowest ceil(pct % of the shared part) CPUs, at least one.
pub fn step_masks(cell: &CpuSet, steps: &[StepReq]) -> Vec<StepMask> {
    let mut order: Vec<&StepReq> = steps.iter().collect();
    order.sort_by_key(|s| (s.since, s.id));
    let mut shared = *cell;
    let mut granted: BTreeMap<u64, (CpuSet, u32)> = BTreeMap::new();
    let mut denied: BTreeMap<u64, u32> = BTreeMap::new();
    for s in &order {
        if let StepShare::Exclusive(n) = s.share {
            let n = n.max(1) as usize;
            if shared.len() > n {
                let take = shared.last_n(n);
                shared = shared.andnot(&take);
                granted.insert(s.id, (take, n as u32));
            } else {
                denied.insert(s.id, n as u32);
            }
        }
    }
    steps
        .iter()
        .map(|s| {
            if let Some((m, n)) = granted.get(&s.id) {
                return StepMask { id: s.id, mask: *m, reservation: Reservation::Granted(*n) };
            }
            if let Some(w) = denied.get(&s.id) {
                return StepMask { id: s.id, mask: shared, reservation: Reservation::Denied { wanted: *w } };
            }
            let pct = match s.share {
                StepShare::Pct(p) => p.clamp(1, 100) as usize,
                StepShare::Exclusive(_) => 100,
            };
            let n = (shared.len() * pct).div_ceil(100).max(1);
            StepMask { id: s.id, mask: shared.first_n(n), reservation: Reservation::None }
        })
        .collect()
}

/// Demand rebalancing: an EWMA of each cell's utilisation; when the busiest
/// cell's load per CPU exceeds the idlest's by more than `threshold` and
/// the cooldown has passed, the cells are re-split by demand.
#[derive(Clone, Debug)]
pub struct Rebalancer {
    pub alpha: f64,
    pub threshold: f64,
    pub cooldown: Duration,
    pub ewma: Vec<f64>,
    pub last: Option<Instant>,
    pub count: u64,
}

impl Default for Rebalancer {
    fn default() -> Self {
        Self::new(0.3, 0.3, Duration::from_secs(2))
    }
}

impl Rebalancer {
    pub fn new(alpha: f64, threshold: f64, cooldown: Duration) -> Self {
        Rebalancer { alpha, threshold, cooldown, ewma: Vec::new(), last: None, count: 0 }
    }

    /// Feed one sample: @util per cell in busy CPUs (index 0: system),
    /// @cpus the CPUs each cell has now. Returns the demands to split by
    /// when a re-split is due.
    pub fn observe(&mut self, util: &[f64], cpus: &[usize], now: Instant) -> Option<Vec<f64>> {
        if self.ewma.len() != util.len() {
            let old = std::mem::take(&mut self.ewma);
            self.ewma = util.iter().enumerate().map(|(i, u)| old.get(i).copied().unwrap_or(*u)).collect();
        } else {
            for (e, u) in self.ewma.iter_mut().zip(util) {
                *e = self.alpha * u + (1.0 - self.alpha) * *e;
            }
        }
        if self.ewma.len() < 2 {
            return None;
        }
        if let Some(t) = self.last {
            if now.duration_since(t) < self.cooldown {
                return None;
            }
        }
        let load: Vec<f64> = self
            .ewma
            .iter()
            .zip(cpus)
            .map(|(e, c)| e / (*c).max(1) as f64)
            .collect();
        let max = load.iter().cloned().fold(f64::MIN, f64::max);
        let min = load.iter().cloned().fold(f64::MAX, f64::min);
        if max - min <= self.threshold {
            return None;
        }
        self.last = Some(now);
        self.count += 1;
        Some(self.ewma.clone())
    }
}

/// A session directory: its name and inode (the cgroup id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDir {
    pub name: String,
    pub ino: u64,
}

/// The direct child directories of @parent, sorted by name.
pub fn scan_sessions(parent: &Path) -> std::io::Result<Vec<SessionDir>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(parent)? {
        let Ok(e) = e else { continue };
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(e.path()) else { continue };
        out.push(SessionDir { name: e.file_name().to_string_lossy().into_owned(), ino: meta.ino() });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Cell ids of sessions, keyed by (name, inode) so a session re-created
/// under the same name is a new cell. Freed ids are reused lowest first.
#[derive(Clone, Debug)]
pub struct CellTable {
    max_cells: u32,
    excluded: Vec<String>,
    by_key: BTreeMap<(String, u64), u32>,
    free: BTreeSet<u32>,
    next: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<(String, u64, u32)>,
    pub removed: Vec<(String, u64, u32)>,
    /// sessions that found no free cell (--max-cells)
    pub not_placed: Vec<String>,
}

impl CellTable {
    /// @max_cells counts the system cell.
    pub fn new(max_cells: u32, excluded: Vec<String>) -> Self {
        CellTable { max_cells, excluded, by_key: BTreeMap::new(), free: BTreeSet::new(), next: 1 }
    }

    pub fn reconcile(&mut self, listing: &[SessionDir]) -> Changes {
        let mut ch = Changes::default();
        let present: BTreeSet<(String, u64)> = listing.iter().map(|s| (s.name.clone(), s.ino)).collect();
        let gone: Vec<(String, u64)> = self.by_key.keys().filter(|k| !present.contains(*k)).cloned().collect();
        for k in gone {
            let id = self.by_key.remove(&k).unwrap();
            self.free.insert(id);
            ch.removed.push((k.0, k.1, id));
        }
        for s in listing {
            let key = (s.name.clone(), s.ino);
            if self.by_key.contains_key(&key) || self.excluded.contains(&s.name) {
                continue;
            }
            let id = if let Some(id) = self.free.pop_first() {
                id
            } else if self.next < self.max_cells {
                self.next += 1;
                self.next - 1
            } else {
                ch.not_placed.push(s.name.clone());
                continue;
            };
            self.by_key.insert(key, id);
            ch.added.push((s.name.clone(), s.ino, id));
        }
        ch
    }

    pub fn cell_of(&self, ino: u64) -> Option<u32> {
        self.by_key.iter().find(|((_, i), _)| *i == ino).map(|(_, c)| *c)
    }
}

/// Coalesces bursts of tree events. The first event after a quiet spell
/// (no apply for `max_delay`) is due at once: a session made on its own gets
/// its cell without waiting for a timer, which in a loaded VM wakes several
/// ms late. Events that follow an apply closely are taken as a burst (a
/// launcher making a session and its steps): due once things have been
/// quiet for `quiet`, or `max_delay` after the burst's first event at the
/// latest.
#[derive(Clone, Debug)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    /// when the last apply cleared the pending events
    applied: Option<Instant>,
}

impl Debounce {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Debounce { quiet, max_delay, first: None, last: None, applied: None }
    }

    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let (f, l) = (self.first?, self.last?);
        // the burst started after a quiet spell: due at once
        if self.applied.is_none_or(|a| f >= a + self.max_delay) {
            return Some(f);
        }
        Some((l + self.quiet).min(f + self.max_delay))
    }

    pub fn due(&self, now: Instant) -> bool {
        self.next_deadline().map(|d| now >= d).unwrap_or(false)
    }

    /// An apply is happening (at @now). Only an apply of pending events
    /// opens the window in which later events count as the same burst: the
    /// periodic rescan, which applies with nothing pending, does not.
    pub fn clear(&mut self, now: Instant) {
        if self.first.is_some() {
            self.applied = Some(now);
        }
        self.first = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    fn req(weight: u32, cpuset: Option<&str>) -> SessionReq {
        SessionReq { weight, cpuset: cpuset.map(set), demand: None }
    }

    fn invariant(online: &CpuSet, sp: &Split) {
        let mut all = sp.system;
        for c in &sp.cells {
            assert!(all.and(c).is_empty(), "cells overlap: {sp:?}");
            all = all.or(c);
        }
        assert_eq!(all, *online, "{sp:?}");
    }

    #[test]
    fn cpulists_round_trip() {
        for s in ["0-3,8,10-11", "5", "", "0-511"] {
            assert_eq!(set(s).to_string(), s);
        }
        assert_eq!(set("3,1,2").to_string(), "1-3");
        for bad in ["a", "3-1", "1-", "600", "1,,x"] {
            assert!(CpuSet::parse_list(bad).is_err(), "{bad}");
        }
        assert_eq!(set("0-7").first_n(3), set("0-2"));
        assert_eq!(set("0-7").last_n(2), set("6-7"));
    }

    #[test]
    fn proportional_by_weight() {
        let online = set("0-7");
        let sp = split_cpus(&online, 1, &[req(100, None), req(300, None)], None);
        invariant(&online, &sp);
        // 8 CPUs between system 100, a 100, b 300: 1.6 / 1.6 / 4.8
        assert_eq!((sp.system.len(), sp.cells[0].len(), sp.cells[1].len()), (2, 1, 5));
        assert_eq!(sp.system, set("0-1"));
    }

    #[test]
    fn minimums_are_kept() {
        let online = set("0-3");
        let sp = split_cpus(&online, 2, &[req(1000, None), req(1000, None)], None);
        invariant(&online, &sp);
        assert_eq!(sp.system.len(), 2);
        assert!(sp.cells.iter().all(|c| c.len() == 1));
        // more sessions than CPUs: the last get nothing, with a note
        let sp = split_cpus(&online, 1, &vec![req(100, None); 5], None);
        invariant(&online, &sp);
        assert_eq!(sp.cells.iter().filter(|c| c.is_empty()).count(), 2);
        assert!(!sp.notes.is_empty());
    }

    #[test]
    fn cpusets_exclusive_contested_unclaimed() {
        let online = set("0-7");
        let sp = split_cpus(
            &online,
            1,
            &[req(100, Some("4-5")), req(100, Some("5-7")), req(100, None)],
            None,
        );
        invariant(&online, &sp);
        assert!(sp.cells[0].and(&set("4-5")) == sp.cells[0] && sp.cells[0].contains(4));
        assert!(sp.cells[1].and(&set("5-7")) == sp.cells[1] && sp.cells[1].contains(6));
        // CPU 5 is contested: exactly one of them has it
        assert!(sp.cells[0].contains(5) ^ sp.cells[1].contains(5));
        assert_eq!(sp.system.or(&sp.cells[2]), set("0-3"));
        // a cpuset with no online CPU shares the unclaimed CPUs
        let sp = split_cpus(&set("0-3"), 1, &[req(100, Some("9"))], None);
        assert!(!sp.cells[0].is_empty() && !sp.notes.is_empty());
    }

    #[test]
    fn split_invariant_over_many_inputs() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..500 {
            let online: CpuSet = (0..(1 + rnd(32) as usize)).collect();
            let n = rnd(6) as usize;
            let reqs: Vec<SessionReq> = (0..n)
                .map(|_| {
                    let cs = (rnd(3) == 0).then(|| (0..32).filter(|_| rnd(4) == 0).map(|c| c as usize).collect());
                    SessionReq { weight: 1 + rnd(1000) as u32, cpuset: cs, demand: None }
                })
                .collect();
            let sp = split_cpus(&online, 1 + rnd(3) as usize, &reqs, None);
            invariant(&online, &sp);
            assert!(!sp.system.is_empty());
        }
    }

    #[test]
    fn demand_split() {
        let online = set("0-7");
        let mut a = req(100, None);
        let mut b = req(100, None);
        a.demand = Some(0.1);
        b.demand = Some(5.0);
        let sp = split_cpus(&online, 1, &[a, b], Some(0.2));
        invariant(&online, &sp);
        assert!(sp.cells[1].len() >= 5, "{sp:?}");
        assert!(sp.cells[0].len() >= 1 && sp.system.len() >= 1);
    }

    #[test]
    fn step_mask_shares_and_reservations() {
        let cell = set("0-7");
        let m = step_masks(&cell, &[StepReq { id: 1, share: StepShare::Pct(25), since: 0 }]);
        assert_eq!(m[0].mask, set("0-1"));
        let m = step_masks(&set("0-2"), &[StepReq { id: 1, share: StepShare::Pct(25), since: 0 }]);
        assert_eq!(m[0].mask.len(), 1);
        let m = step_masks(&set("4"), &[StepReq { id: 1, share: StepShare::Pct(1), since: 0 }]);
        assert_eq!(m[0].mask, set("4"));

        let steps = [
            StepReq { id: 10, share: StepShare::Exclusive(2), since: 5 },
            StepReq { id: 11, share: StepShare::Exclusive(2), since: 1 },
            StepReq { id: 12, share: StepShare::Exclusive(4), since: 9 },
            StepReq { id: 13, share: StepShare::Pct(100), since: 2 },
        ];
        let m = step_masks(&set("0-5"), &steps);
        assert_eq!(m[1].mask, set("4-5"));
        assert_eq!(m[1].reservation, Reservation::Granted(2));
        assert_eq!(m[0].mask, set("2-3"));
        assert_eq!(m[2].reservation, Reservation::Denied { wanted: 4 });
        assert_eq!(m[2].mask, set("0-1"));
        assert_eq!(m[3].mask, set("0-1"));
        for sm in &m {
            assert!(!sm.mask.is_empty() && sm.mask.and(&set("0-5")) == sm.mask);
        }
        // the shared part always keeps one CPU
        let m = step_masks(&set("0-1"), &[StepReq { id: 1, share: StepShare::Exclusive(2), since: 0 }]);
        assert_eq!(m[0].reservation, Reservation::Denied { wanted: 2 });
    }

    #[test]
    fn rebalancer_threshold_and_cooldown() {
        let t0 = Instant::now();
        let mut r = Rebalancer::new(0.5, 0.3, Duration::from_secs(2));
        assert!(r.observe(&[0.5, 1.0, 1.0], &[1, 2, 2], t0).is_none());
        assert!(r.observe(&[0.5, 1.0, 1.1], &[1, 2, 2], t0 + Duration::from_millis(500)).is_none());
        let d = r.observe(&[0.1, 2.0, 0.0], &[1, 2, 2], t0 + Duration::from_secs(1)).unwrap();
        assert!(d[1] > d[2]);
        assert_eq!(r.count, 1);
        assert!(r.observe(&[0.1, 2.0, 0.0], &[1, 2, 2], t0 + Duration::from_secs(2)).is_none());
        assert!(r.observe(&[0.1, 2.0, 0.0], &[1, 2, 2], t0 + Duration::from_secs(4)).is_some());
        // a new cell: the vector grows
        r.observe(&[0.1, 2.0, 0.0, 1.0], &[1, 2, 2, 1], t0 + Duration::from_secs(5));
        assert_eq!(r.ewma.len(), 4);
    }

    #[test]
    fn reconcile_on_a_directory_tree() {
        let dir = std::env::temp_dir().join(format!("agentcg-cells-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for s in ["a", "b", "skip"] {
            std::fs::create_dir_all(dir.join(s)).unwrap();
        }
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let mut t = CellTable::new(3, vec!["skip".into()]);
        let ch = t.reconcile(&scan_sessions(&dir).unwrap());
        assert_eq!(ch.added.iter().map(|a| a.2).collect::<Vec<_>>(), vec![1, 2]);
        std::fs::create_dir(dir.join("c")).unwrap();
        let ch = t.reconcile(&scan_sessions(&dir).unwrap());
        assert_eq!(ch.not_placed, vec!["c".to_string()]);
        // a re-created session is a new cell; the freed id is reused
        std::fs::remove_dir(dir.join("a")).unwrap();
        std::fs::remove_dir(dir.join("c")).unwrap();
        let ch = t.reconcile(&scan_sessions(&dir).unwrap());
        assert_eq!(ch.removed.len(), 1);
        std::fs::create_dir(dir.join("a")).unwrap();
        let ch = t.reconcile(&scan_sessions(&dir).unwrap());
        assert_eq!(ch.added[0].2, 1);
        let a = scan_sessions(&dir).unwrap().into_iter().find(|s| s.name == "a").unwrap();
        assert_eq!(t.cell_of(a.ino), Some(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debounce_applies_a_lone_event_at_once_and_coalesces_bursts() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = Debounce::new(ms(2), ms(15));
        assert!(!d.due(t0));
        assert_eq!(d.next_deadline(), None);
        // nothing applied yet: the first event is due when it is seen
        d.event(t0);
        assert!(d.due(t0));
        d.clear(t0);
        assert!(!d.due(t0 + ms(100)), "nothing pending after an apply");
        // events right after an apply are a burst: due 2 ms after the last
        for i in 1..10 {
            d.event(t0 + ms(i));
        }
        assert!(!d.due(t0 + ms(10)));
        assert!(d.due(t0 + ms(11)));
        d.clear(t0 + ms(11));
        // a burst that does not stop is bounded by max_delay from its first
        for i in 12..42 {
            d.event(t0 + ms(i));
        }
        assert!(!d.due(t0 + ms(26)));
        assert!(d.due(t0 + ms(27)), "bounded by max_delay");
        d.clear(t0 + ms(27));
        // an event within max_delay of the last apply still waits for quiet
        d.event(t0 + ms(41));
        assert!(!d.due(t0 + ms(42)));
        assert!(d.due(t0 + ms(43)));
        d.clear(t0 + ms(43));
        // after a quiet spell of max_delay, at once again
        d.event(t0 + ms(58));
        assert!(d.due(t0 + ms(58)));
        d.clear(t0 + ms(58));
        // a rescan (an apply with nothing pending) opens no burst window
        d.clear(t0 + ms(74));
        d.event(t0 + ms(75));
        assert!(d.due(t0 + ms(75)), "a rescan made a lone event wait");
    }
}
