// SPDX-License-Identifier: GPL-2.0-only
//! Thrash-aware CPU penalties: the reference math for the per-cgroup thrash
//! score and the CPU penalty the BPF side applies while a cgroup thrashes.
//!
//! The BPF code mirrors these functions with the same integer arithmetic
//! (u64/u32, no floats) and a BPF self-test compares both on the same
//! inputs, so every operation below is spelled out exactly, including
//! where it saturates.
//!
//! The score is in permille (0 to 1000). Each period the BPF side takes a
//! sample from the memory stall time of the cgroup in that period and the
//! `memory.high` / `memory.max` events it caused ([`thrash_sample`]), folds it
//! into the score with an EWMA of weight 1/4 ([`thrash_fold`]), and lets the
//! score decay over periods in which the cgroup did not run
//! ([`thrash_decay`]). A cgroup is penalised from the moment its score
//! reaches `enter_permille` until it falls to `exit_permille`
//! ([`penalty_next`]); while penalised its weight and slice are scaled down
//! ([`penalised_weight`], [`penalised_slice`]).

#![allow(dead_code)]

/// Largest score (permille).
pub const THRASH_MAX: u32 = 1000;
/// What one `memory.high` event adds to a sample (permille).
pub const HIGH_EVENT_PERMILLE: u64 = 100;
/// What one `memory.max` event adds to a sample (permille).
pub const MAX_EVENT_PERMILLE: u64 = 300;
/// Most idle periods [`thrash_decay`] folds in (the score is near 0 by then).
pub const DECAY_MAX_PERIODS: u32 = 16;
/// Shortest slice a penalty leaves a task, in ns. Same value as
/// `AGENTCG_BW_MIN_SLICE_NS` in src/bpf/intf.h.
pub const MIN_SLICE_NS: u64 = 100_000;

/// Which kernel hooks measure memory stalls (`--thrash-hooks`, for tests):
/// the PSI brackets where the kernel has them, else the direct-reclaim
/// tracepoints (auto), or the tracepoints only (reclaim), so that the
/// fallback can be tested on a kernel that has both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ThrashHooks {
    Auto,
    Reclaim,
}

/// When a cgroup counts as thrashing and how hard it is penalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrashParams {
    /// score (permille) at or above which the penalty starts
    pub enter_permille: u32,
    /// score (permille) at or below which the penalty ends
    pub exit_permille: u32,
    /// weight while penalised, percent of the normal weight
    pub weight_pct: u32,
    /// slice while penalised, percent of the normal slice
    pub slice_pct: u32,
    /// CPUs a penalised cgroup's tasks may run on, percent of their CPUs
    /// (100: no cap); global, the `[thrash]` table's `cpus_pct`
    pub cpus_pct: u32,
}

impl Default for ThrashParams {
    fn default() -> Self {
        ThrashParams {
            enter_permille: 200,
            exit_permille: 50,
            weight_pct: 25,
            slice_pct: 50,
            cpus_pct: 25,
        }
    }
}

impl ThrashParams {
    /// What differs in @new, as "key old -> new" (the `[thrash]` table is
    /// read-only data of the loaded BPF program: a reload cannot apply it).
    pub fn changes(&self, new: &ThrashParams) -> Vec<String> {
        [
            ("enter_permille", self.enter_permille, new.enter_permille),
            ("exit_permille", self.exit_permille, new.exit_permille),
            ("weight_pct", self.weight_pct, new.weight_pct),
            ("slice_pct", self.slice_pct, new.slice_pct),
            ("cpus_pct", self.cpus_pct, new.cpus_pct),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(k, a, b)| format!("{k} {a} -> {b}"))
        .collect()
    }

    /// Every problem with these parameters: (the key to change first, the
    /// keys involved, message). The policy file uses the keys for lines.
    pub fn problems(&self) -> Vec<(&'static [&'static str], String)> {
        let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
        if self.enter_permille == 0 || self.enter_permille > THRASH_MAX {
            out.push((
                &["enter_permille"],
                format!(
                    "enter_permille = {} is out of range: use 1 to {THRASH_MAX}",
                    self.enter_permille
                ),
            ));
        }
        if self.exit_permille == 0 {
            out.push((
                &["exit_permille"],
                "exit_permille = 0 would keep a penalty until the score is exactly 0: use 1 or more".to_string(),
            ));
        }
        if self.exit_permille >= self.enter_permille {
            out.push((
                &["exit_permille", "enter_permille"],
                format!(
                    "exit_permille = {} must be below enter_permille = {} (the gap between them stops the penalty from flapping): \
                     lower exit_permille or raise enter_permille",
                    self.exit_permille, self.enter_permille
                ),
            ));
        }
        for (key, v) in [
            ("weight_pct", self.weight_pct),
            ("slice_pct", self.slice_pct),
            ("cpus_pct", self.cpus_pct),
        ] {
            if !(1..=100).contains(&v) {
                let keys: &'static [&'static str] = match key {
                    "weight_pct" => &["weight_pct"],
                    "slice_pct" => &["slice_pct"],
                    _ => &["cpus_pct"],
                };
                out.push((
                    keys,
                    format!("{key} = {v} is out of range: use 1 to 100 (100 means no penalty)"),
                ));
            }
        }
        out
    }

    /// Check 0 < exit < enter <= 1000 and both percentages in 1..=100.
    pub fn validate(&self) -> Result<(), String> {
        crate::policy::problems_result(self.problems())
    }
}

/// One period's thrash sample, permille:
/// `min(1000, stall_ns * 1000 / period_ns + 100 * high_events + 300 * max_events)`.
///
/// All of it is u64 arithmetic that saturates at `U64_MAX` (in C: a
/// product whose factor exceeds `U64_MAX / k` is `U64_MAX`; a sum that
/// wraps is `U64_MAX`). `period_ns == 0` makes the stall part 0.
pub fn thrash_sample(stall_ns: u64, period_ns: u64, high_events: u64, max_events: u64) -> u32 {
    // period_ns == 0: no stall part
    let stall = stall_ns
        .saturating_mul(1000)
        .checked_div(period_ns)
        .unwrap_or(0);
    let sum = stall
        .saturating_add(HIGH_EVENT_PERMILLE.saturating_mul(high_events))
        .saturating_add(MAX_EVENT_PERMILLE.saturating_mul(max_events));
    sum.min(THRASH_MAX as u64) as u32
}

/// Fold a sample into the score: `(score * 3 + sample) / 4`, computed in u64
/// (the result never exceeds the larger input, so it fits in u32).
pub fn thrash_fold(score: u32, sample: u32) -> u32 {
    ((score as u64 * 3 + sample as u64) / 4) as u32
}

/// The score after @idle_periods periods without a sample: [`thrash_fold`]
/// with sample 0, `min(idle_periods, 16)` times.
pub fn thrash_decay(score: u32, idle_periods: u32) -> u32 {
    let mut s = score;
    for _ in 0..idle_periods.min(DECAY_MAX_PERIODS) {
        s = thrash_fold(s, 0);
    }
    s
}

/// Whether a cgroup is penalised after this score, with hysteresis: an
/// unpenalised cgroup enters at `score >= enter_permille`, a penalised one
/// leaves at `score <= exit_permille`, anything in between keeps the state.
pub fn penalty_next(penalised: bool, score: u32, p: &ThrashParams) -> bool {
    if penalised {
        score > p.exit_permille
    } else {
        score >= p.enter_permille
    }
}

/// A penalised cgroup's weight: `max(1, weight * weight_pct / 100)` (u64,
/// the product saturating).
pub fn penalised_weight(weight: u64, p: &ThrashParams) -> u64 {
    (weight.saturating_mul(p.weight_pct as u64) / 100).max(1)
}

/// A penalised task's slice: `max(MIN_SLICE_NS, slice_ns * slice_pct / 100)`
/// (u64, the product saturating). A slice already below `MIN_SLICE_NS`
/// comes back as `MIN_SLICE_NS`.
pub fn penalised_slice(slice_ns: u64, p: &ThrashParams) -> u64 {
    (slice_ns.saturating_mul(p.slice_pct as u64) / 100).max(MIN_SLICE_NS)
}

/// How many of @n CPUs a penalised cgroup's tasks may use:
/// `max(1, n * cpus_pct / 100)` (0 if @n is 0).
pub fn penalty_cpus(n: u32, p: &ThrashParams) -> u32 {
    if n == 0 {
        return 0;
    }
    ((n as u64 * p.cpus_pct as u64 / 100) as u32).max(1)
}

/// The CPUs of @cpus (a task's CPUs) a penalised task may run on: the
/// [`penalty_cpus`] highest-numbered ones, what `thrash_cap_mask()` in
/// thrash.bpf.h leaves of a task's mask.
pub fn penalty_cpu_set(cpus: &[u32], p: &ThrashParams) -> Vec<u32> {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let keep = penalty_cpus(v.len() as u32, p) as usize;
    v.split_off(v.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_params_are_refused() {
        let d = ThrashParams::default();
        assert_eq!(
            (d.enter_permille, d.exit_permille, d.weight_pct, d.slice_pct),
            (200, 50, 25, 50)
        );
        d.validate().unwrap();
        let bad = |f: fn(&mut ThrashParams)| {
            let mut p = ThrashParams::default();
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.exit_permille = 200).contains("must be below enter_permille"));
        assert!(bad(|p| p.exit_permille = 300).contains("lower exit_permille"));
        assert!(bad(|p| p.exit_permille = 0).contains("use 1 or more"));
        assert!(bad(|p| p.enter_permille = 1001).contains("use 1 to 1000"));
        assert!(bad(|p| p.weight_pct = 0).contains("weight_pct = 0"));
        assert!(bad(|p| p.slice_pct = 101).contains("slice_pct = 101"));
        let mut p = ThrashParams {
            enter_permille: 1000,
            exit_permille: 999,
            weight_pct: 100,
            slice_pct: 1,
            cpus_pct: 100,
        };
        p.validate().unwrap();
        p.enter_permille = 0;
        let e = p.validate().unwrap_err();
        assert!(
            e.contains("enter_permille = 0") && e.contains("exit_permille = 999"),
            "{e}"
        );
    }

    #[test]
    fn sample_parts_and_saturation() {
        assert_eq!(thrash_sample(0, 100_000_000, 0, 0), 0);
        assert_eq!(thrash_sample(10_000_000, 100_000_000, 0, 0), 100);
        assert_eq!(thrash_sample(10_000_000, 100_000_000, 1, 0), 200);
        assert_eq!(thrash_sample(10_000_000, 100_000_000, 1, 1), 500);
        assert_eq!(thrash_sample(0, 0, 0, 1), 300);
        assert_eq!(thrash_sample(5_000, 0, 0, 0), 0); // no period: no stall part
        assert_eq!(thrash_sample(1, 3, 0, 0), 333); // truncating division
        assert_eq!(thrash_sample(200, 100, 0, 0), 1000);
        assert_eq!(thrash_sample(u64::MAX, 1, u64::MAX, u64::MAX), 1000);
        assert_eq!(thrash_sample(u64::MAX, u64::MAX, 0, 0), 1); // (U64_MAX saturated) / U64_MAX
        assert_eq!(thrash_sample(0, 1, 0, u64::MAX / 2), 1000);
    }

    #[test]
    fn ewma_converges_and_decays() {
        assert_eq!(thrash_fold(0, 1000), 250);
        assert_eq!(thrash_fold(250, 1000), 437);
        assert_eq!(thrash_fold(u32::MAX, u32::MAX), u32::MAX);
        let mut s = 0;
        for _ in 0..40 {
            s = thrash_fold(s, 600);
        }
        // integer EWMA settles just below the constant input (the /4 truncates)
        assert!((597..=600).contains(&s), "{s}");
        let fixed = s;
        assert_eq!(thrash_fold(fixed, 600), fixed);
        let mut t = 1000;
        for _ in 0..40 {
            t = thrash_fold(t, 600);
        }
        assert!((600..=603).contains(&t), "{t}");

        assert_eq!(thrash_decay(1000, 0), 1000);
        assert_eq!(thrash_decay(1000, 1), 750);
        assert_eq!(thrash_decay(1000, 2), 562);
        assert_eq!(thrash_decay(1000, 16), thrash_decay(1000, u32::MAX));
        assert!(thrash_decay(1000, 16) <= 10);
        let mut manual = 800;
        for _ in 0..5 {
            manual = thrash_fold(manual, 0);
        }
        assert_eq!(thrash_decay(800, 5), manual);
    }

    #[test]
    fn hysteresis_does_not_flap() {
        let p = ThrashParams::default();
        assert!(!penalty_next(false, 199, &p));
        assert!(penalty_next(false, 200, &p));
        assert!(penalty_next(true, 51, &p));
        assert!(!penalty_next(true, 50, &p));
        // a score swinging anywhere strictly between exit and enter never
        // changes the state, whichever it started in
        for start in [false, true] {
            let mut pen = start;
            let mut changes = 0;
            for i in 0..1000u32 {
                let score = if i % 2 == 0 {
                    p.exit_permille + 1
                } else {
                    p.enter_permille - 1
                };
                let next = penalty_next(pen, score, &p);
                changes += (next != pen) as u32;
                pen = next;
            }
            assert_eq!((pen, changes), (start, 0));
        }
        // swinging between exactly exit and exactly enter changes it once per
        // crossing, never twice in a row at the same level
        let mut pen = false;
        let mut trace = Vec::new();
        for score in [200, 150, 100, 50, 100, 150, 199, 200] {
            pen = penalty_next(pen, score, &p);
            trace.push(pen);
        }
        assert_eq!(trace, [true, true, true, false, false, false, false, true]);
        // a real EWMA score fed by samples alternating around the thresholds
        let mut score = 0;
        let mut pen = false;
        let mut changes = 0;
        for i in 0..200 {
            score = thrash_fold(score, if i % 2 == 0 { 220 } else { 40 });
            let next = penalty_next(pen, score, &p);
            changes += (next != pen) as u32;
            pen = next;
        }
        assert_eq!(changes, 0);
    }

    #[test]
    fn penalties() {
        let p = ThrashParams::default();
        assert_eq!(penalised_weight(100, &p), 25);
        assert_eq!(penalised_weight(3, &p), 1);
        assert_eq!(penalised_weight(0, &p), 1);
        assert_eq!(penalised_weight(u64::MAX, &p), u64::MAX / 100);
        assert_eq!(penalised_slice(20_000_000, &p), 10_000_000);
        assert_eq!(penalised_slice(150_000, &p), MIN_SLICE_NS);
        assert_eq!(penalised_slice(50_000, &p), MIN_SLICE_NS);
        assert_eq!(penalised_slice(u64::MAX, &p), u64::MAX / 100);
        let none = ThrashParams {
            weight_pct: 100,
            slice_pct: 100,
            ..p
        };
        assert_eq!(
            (
                penalised_weight(77, &none),
                penalised_slice(3_000_000, &none)
            ),
            (77, 3_000_000)
        );
    }

    #[test]
    fn a_reload_names_what_it_cannot_apply() {
        let p = ThrashParams::default();
        assert!(p.changes(&p).is_empty());
        let q = ThrashParams { enter_permille: 300, cpus_pct: 50, ..p };
        assert_eq!(p.changes(&q), ["enter_permille 200 -> 300", "cpus_pct 25 -> 50"]);
    }

    #[test]
    fn penalty_cpu_cap() {
        let p = ThrashParams::default();
        assert_eq!(penalty_cpus(8, &p), 2);
        assert_eq!(penalty_cpus(4, &p), 1);
        assert_eq!(penalty_cpus(3, &p), 1);
        assert_eq!(penalty_cpus(1, &p), 1);
        assert_eq!(penalty_cpus(0, &p), 0);
        assert_eq!(penalty_cpu_set(&[0, 1, 2, 3], &p), vec![3]);
        let half = ThrashParams { cpus_pct: 50, ..p };
        assert_eq!(penalty_cpu_set(&[0, 1, 2, 3], &half), vec![2, 3]);
        assert_eq!(penalty_cpu_set(&[5, 1, 9], &p), vec![9]);
        assert_eq!(penalty_cpu_set(&[], &p), Vec::<u32>::new());
        let all = ThrashParams { cpus_pct: 100, ..p };
        assert_eq!(penalty_cpu_set(&[0, 1, 2, 3], &all), vec![0, 1, 2, 3]);
        let tiny = ThrashParams { cpus_pct: 1, ..p };
        assert_eq!(penalty_cpu_set(&(0..64).collect::<Vec<_>>(), &tiny), vec![63]);
        assert_eq!(penalty_cpus(256, &tiny), 2);
        assert!(ThrashParams { cpus_pct: 0, ..p }.validate().unwrap_err().contains("cpus_pct = 0"));
    }

    #[test]
    fn min_slice_matches_the_bpf_constant() {
        assert_eq!(
            MIN_SLICE_NS,
            crate::bpf_intf::agentcg_consts_AGENTCG_BW_MIN_SLICE_NS as u64
        );
    }
}
