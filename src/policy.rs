// SPDX-License-Identifier: GPL-2.0-only
//! The step policy file (`--policy FILE`, TOML).
//!
//! Profiles say how a step is scheduled; selectors say which cgroups get
//! which profile. Example:
//!
//! ```toml
//! [profile.chat]
//! class = "interactive"     # interactive | tool | background (required)
//! weight = 2.0              # multiplier on cpu.weight, 0.01 to 100 (1.0)
//! slice_us = 1000           # task slice, 100 to 100000 (the --slice-us)
//! wakeup_boost = true       # in-kernel wakeup boost (interactive: on)
//! burst_credit_ms = 20      # boost credit capacity, 0 to 10000
//! burst_refill_pct = 10     # credit refill, percent of one CPU, 0 to 100
//! cpus_pct = 100            # share of the session cell's CPUs, 1 to 100
//! # cpus = "exclusive:2"    # or: reserve 2 CPUs of the cell while it runs
//! thrash_weight_pct = 50    # weight while thrashing, percent of normal, 1 to 100 (25)
//! thrash_slice_pct = 75     # slice while thrashing, percent of normal, 1 to 100 (50)
//! memory_high = "2G"        # session memory.high (--mem-escalation), see below
//! memory_max = "4G"         # session memory.max (--mem-escalation), see below
//! protect_low = "256M"      # memory protection (--memcg-ops), a size (none)
//! delay_start_pct = 20      # memory.high delay curve (--memcg-ops): from 20 %
//! delay_base_ms = 5         #   over memory.high a delay of 5 ms (0 to 1000 %,
//! delay_slope_ms_per_pct = 1 #  0 to 2000 ms), plus 1 ms per % further over
//! delay_max_ms = 100        #   (0 to 2000), up to 100 ms (0 to 2000)
//! cpu_mode = "scx"          # scx | cfs: with --partial, "cfs" keeps the
//!                           #   sessions of this profile on the fair class
//! yield_to_interactive = true # while an interactive step is runnable, run
//!                           #   only on the [yield] CPUs (false)
//!
//! [thrash]                  # thrash score (permille) of the CPU penalty
//! enter_permille = 200      # penalised from this score on, 1 to 1000 (200)
//! exit_permille = 50        # until it falls to this, 1 to enter - 1 (50)
//! cpus_pct = 25             # penalised tasks run on this % of their CPUs, 1 to 100 (25)
//!
//! [yield]                   # CPUs left to profiles that yield_to_interactive
//! cpus_pct = 25             # this % of the CPUs outside interactive cells, 1 to 99 (25)
//!
//! [escalation]              # --mem-escalation; pct: full avg10 of memory.pressure
//! throttle_full_pct = 10.0  # above: throttled (10)
//! freeze_full_pct = 40.0    # above for freeze_after_ms: frozen (40, 2000)
//! freeze_after_ms = 2000
//! kill_after_ms = 10000     # frozen this long and still over its limits: killed
//! thaw_below_pct = 5.0      # below for thaw_after_ms: running again (5, 1000)
//! thaw_after_ms = 1000
//!
//! [memory]                  # --mem-arbitration (src/memory.rs); pct of the shared memory.max
//! pause = true              # hold background sessions back near the limit (true)
//! guard_pct = 90            # pause the next session from here, 1 to 99 (90)
//! resume_pct = 80           # resume below, below guard_pct (80)
//! kill_pct = 97             # last resort, above guard_pct (97)
//! pause_gap_ms = 100        # between two pauses or two resumes (100)
//! freeze_after_ms = 1000    # a pause this long becomes cgroup.freeze, below 5000 (1000)
//! reclaim = true            # with swap: memory.reclaim of paused sessions (true)
//! kill_after_ms = 3000      # every session paused this long: the youngest is killed (3000)
//! poll_us = 1000            # in-kernel poll of the limit, 100 to 100000 (1000)
//! protect_low = "256M"      # interactive budget where the profile has no protect_low
//! protect_headroom_pct = 25 # memory.low = usage + 25 %, within the budget
//! protect_min_pct = 50      # memory.min = 50 % of memory.low
//! protect_total_pct = 50    # all interactive sessions: at most 50 % of the limit
//! oom_prefer_background = true # oom_score_adj / memory.oom.group for pausable sessions
//! keep_one_running = true   # no interactive session running: the oldest is never paused
//!
//! [[select]]
//! profile = "chat"
//! path = "agentcg/*/chat_*" # glob on the cgroup path below the cgroup2 root
//! # session = "sess_a*"     # or: glob on the session name
//! # comm = "bash"           # or: glob on the step's first command name
//! ```
//!
//! Globs: `*` is any run of characters but `/`, `?` one character but `/`,
//! and a whole `**` component any number of path components. A selector
//! has exactly one of `path`, `session`, `comm`; when selectors of different
//! kinds match, `comm` wins over `path`, and `path` over `session`. Two
//! selectors of the same kind must not both match one name: that is an
//! error naming both lines and a name they share.
//!
//! Class defaults: interactive boosts wakeups with 20 ms of credit refilled
//! at 10 % of a CPU; tool has no boost unless asked (10 ms, 5 %);
//! background has none. Delay curves (start %, base ms, ms per %, max ms):
//! interactive 20, 5, 1, 100 (late and gentle); tool 5, 10, 5, 500;
//! background 0, 50, 20, 2000 (early and hard); a `delay_*` key overrides
//! one value of its class's curve, and `delay_base_ms` must not exceed
//! `delay_max_ms`; the curve is one per class in BPF, so all profiles of a
//! class must give the same `delay_*` keys (or none). The thrash penalty is 25 % of the weight and 50 % of the
//! slice (never below 100 us) for every class unless the profile says.
//!
//! Sizes (`memory_high`, `memory_max`, `protect_low`) are bytes (an integer
//! or a string of digits) or a number with K, M, G or T (powers of 1024:
//! `"512M"`, `"2G"`); `memory_high` and `memory_max` may also be `"max"`
//! (no limit) and otherwise must be at least 1M, with `memory_high` not
//! above `memory_max`. With `--mem-escalation`, a session (a direct child
//! of the managed parent) whose path or name a selector matches gets its
//! profile's `memory_high` / `memory_max` written when it appears (and
//! again when a reloaded policy changes them).
//!
//! `[thrash]` and `[escalation]` are optional; a key left out takes the
//! default shown. `[escalation]` must keep thaw_below_pct < throttle_full_pct
//! <= freeze_full_pct <= 100, dwell times above 0 and kill_after_ms above
//! freeze_after_ms. The escalation rules are in src/escalation.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::escalation::{EscalationConfig, MAX_DWELL_MS};
use crate::memory::{MemoryConfig, MAX_MEMORY_DWELL_MS};
use crate::memcg_ops::{DelayCurve, MAX_DELAY_MS, MAX_SLOPE_MS_PER_PCT, MAX_START_PCT};
use crate::thrash::{ThrashParams, THRASH_MAX};

/// Which scheduling class a session's tasks run in (`cpu_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuMode {
    /// under scx_agentcg (the default)
    #[default]
    Scx,
    /// on the kernel's fair class: only with --partial, no cell
    Cfs,
}

/// What a step is, for the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepClass {
    Interactive,
    Tool,
    Background,
}

impl StepClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepClass::Interactive => "interactive",
            StepClass::Tool => "tool",
            StepClass::Background => "background",
        }
    }

    /// The code the BPF side uses (0 means no profile).
    pub fn code(&self) -> u32 {
        match self {
            StepClass::Interactive => 1,
            StepClass::Tool => 2,
            StepClass::Background => 3,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "interactive" => Some(StepClass::Interactive),
            "tool" => Some(StepClass::Tool),
            "background" => Some(StepClass::Background),
            _ => None,
        }
    }

    /// The memory.high delay curve when the profile does not say.
    pub fn delay_curve(&self) -> DelayCurve {
        DelayCurve::for_class(self.code())
    }

    /// (wakeup boost, credit ms, refill %) when the profile does not say.
    fn boost_defaults(&self) -> (bool, u64, u32) {
        match self {
            StepClass::Interactive => (true, 20, 10),
            StepClass::Tool => (false, 10, 5),
            StepClass::Background => (false, 0, 0),
        }
    }
}

/// How many of its session cell's CPUs a step may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuShare {
    Pct(u32),
    Exclusive(u32),
}

/// A memory limit: a number of bytes or "max" (none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemLimit {
    Bytes(u64),
    Max,
}

impl MemLimit {
    /// What to write to memory.high / memory.max.
    pub fn to_cgroup_value(self) -> String {
        match self {
            MemLimit::Bytes(b) => b.to_string(),
            MemLimit::Max => "max".to_string(),
        }
    }

    /// The bytes, u64::MAX for "max".
    pub fn bytes(self) -> u64 {
        match self {
            MemLimit::Bytes(b) => b,
            MemLimit::Max => u64::MAX,
        }
    }
}

/// Smallest memory_high / memory_max a profile may give.
pub const MIN_MEM_LIMIT: u64 = 1 << 20;

/// Parse a size: bytes ("536870912"), a number with K, M, G or T (powers
/// of 1024, either case: "512M", "2g"), or "max".
pub fn parse_size(s: &str) -> Result<MemLimit, String> {
    let t = s.trim();
    let bad = || {
        format!("{s:?} is not a size: use bytes (536870912), a number with K, M, G or T (\"512M\", \"2G\"), or \"max\"")
    };
    if t.eq_ignore_ascii_case("max") {
        return Ok(MemLimit::Max);
    }
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is too large"))?;
    n.checked_mul(1u64 << shift)
        .map(MemLimit::Bytes)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub name: String,
    pub class: StepClass,
    pub weight: f64,
    pub slice_us: Option<u64>,
    pub wakeup_boost: bool,
    pub burst_credit_ms: u64,
    pub burst_refill_pct: u32,
    pub cpus: CpuShare,
    /// weight and slice while the step thrashes, percent of normal
    pub thrash_weight_pct: u32,
    pub thrash_slice_pct: u32,
    /// session memory.high / memory.max (--mem-escalation); None: not set
    pub memory_high: Option<MemLimit>,
    pub memory_max: Option<MemLimit>,
    /// memory protection in bytes (memcg BPF ops); None: none
    pub protect_low: Option<u64>,
    /// memory.high delay curve (memcg BPF ops)
    pub delay: DelayCurve,
    /// the class its sessions' tasks run in (fair needs --partial)
    pub cpu_mode: CpuMode,
    /// run only on the `[yield]` CPUs while an interactive step is runnable
    pub yield_to_interactive: bool,
}

impl Profile {
    fn builtin(class: StepClass) -> Self {
        let (boost, credit, refill) = class.boost_defaults();
        let thrash = ThrashParams::default();
        Profile {
            name: class.as_str().to_string(),
            class,
            weight: 1.0,
            slice_us: None,
            wakeup_boost: boost,
            burst_credit_ms: credit,
            burst_refill_pct: refill,
            cpus: CpuShare::Pct(100),
            thrash_weight_pct: thrash.weight_pct,
            thrash_slice_pct: thrash.slice_pct,
            memory_high: None,
            memory_max: None,
            protect_low: None,
            delay: class.delay_curve(),
            cpu_mode: CpuMode::Scx,
            yield_to_interactive: false,
        }
    }

    /// The thrash parameters of this profile: the thresholds of @global
    /// (the policy's `[thrash]`), this profile's penalty.
    #[allow(dead_code)] // main.rs wires it
    pub fn thrash_params(&self, global: &ThrashParams) -> ThrashParams {
        ThrashParams { weight_pct: self.thrash_weight_pct, slice_pct: self.thrash_slice_pct, ..*global }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorKind {
    Comm,
    Path,
    Session,
}

impl SelectorKind {
    fn as_str(&self) -> &'static str {
        match self {
            SelectorKind::Comm => "comm",
            SelectorKind::Path => "path",
            SelectorKind::Session => "session",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub kind: SelectorKind,
    pub pattern: String,
    /// index into `Policy::profiles`
    pub profile: usize,
    pub line: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub profiles: Vec<Profile>,
    pub selectors: Vec<Selector>,
    pub source: Option<PathBuf>,
    /// `[thrash]`: enter / exit thresholds (weight_pct and slice_pct are
    /// the defaults; each profile has its own)
    pub thrash: ThrashParams,
    /// `[escalation]`
    pub escalation: EscalationConfig,
    /// `[memory]` (--mem-arbitration)
    pub memory: MemoryConfig,
    /// `[yield]` cpus_pct: the yield CPUs, percent of those outside
    /// interactive cells (src/yielding.rs)
    pub yield_cpus_pct: u32,
}

/// The default of `[yield]` cpus_pct.
pub const YIELD_CPUS_PCT: u32 = 25;

/// Every problem found in a policy file, each as "FILE:LINE: message".
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problems.join("\n"))
    }
}

impl std::error::Error for PolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    profile: BTreeMap<String, Spanned<RawProfile>>,
    #[serde(default)]
    select: Vec<Spanned<RawSelect>>,
    thrash: Option<Spanned<RawThrash>>,
    escalation: Option<Spanned<RawEscalation>>,
    memory: Option<Spanned<RawMemory>>,
    #[serde(rename = "yield")]
    yield_: Option<Spanned<RawYield>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawYield {
    cpus_pct: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    pause: Option<bool>,
    guard_pct: Option<Spanned<i64>>,
    resume_pct: Option<Spanned<i64>>,
    kill_pct: Option<Spanned<i64>>,
    pause_gap_ms: Option<Spanned<i64>>,
    freeze_after_ms: Option<Spanned<i64>>,
    reclaim: Option<bool>,
    kill_after_ms: Option<Spanned<i64>>,
    poll_us: Option<Spanned<i64>>,
    protect_headroom_pct: Option<Spanned<i64>>,
    protect_min_pct: Option<Spanned<i64>>,
    protect_total_pct: Option<Spanned<i64>>,
    protect_low: Option<Spanned<toml::Value>>,
    oom_prefer_background: Option<bool>,
    keep_one_running: Option<bool>,
}

/// The `[memory]` table, its problems added to @problems.
fn parse_memory(m: &Spanned<RawMemory>, text: &str, file: &str, problems: &mut Vec<String>) -> MemoryConfig {
    let mut cfg = MemoryConfig::default();
    let mline = line_of(text, m.span().start);
    let rm = m.get_ref();
    let at = |s: &std::ops::Range<usize>| format!("{file}:{}: [memory]", line_of(text, s.start));
    let mut given: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ok = true;
    for (key, raw, lo, hi, slot) in [
        ("guard_pct", &rm.guard_pct, 1, 99, &mut cfg.guard_pct),
        ("resume_pct", &rm.resume_pct, 1, 98, &mut cfg.resume_pct),
        ("kill_pct", &rm.kill_pct, 2, 100, &mut cfg.kill_pct),
        ("protect_headroom_pct", &rm.protect_headroom_pct, 0, 1000, &mut cfg.protect_headroom_pct),
        ("protect_min_pct", &rm.protect_min_pct, 0, 100, &mut cfg.protect_min_pct),
        ("protect_total_pct", &rm.protect_total_pct, 0, 100, &mut cfg.protect_total_pct),
    ] {
        let Some(v) = raw else { continue };
        given.insert(key, line_of(text, v.span().start));
        if check_range(problems, at(&v.span()), key, *v.get_ref(), lo, hi) {
            *slot = *v.get_ref() as u32;
        } else {
            ok = false;
        }
    }
    for (key, raw, lo, hi, slot) in [
        ("pause_gap_ms", &rm.pause_gap_ms, 1, MAX_MEMORY_DWELL_MS as i64, &mut cfg.pause_gap_ms),
        ("freeze_after_ms", &rm.freeze_after_ms, 1, MAX_MEMORY_DWELL_MS as i64, &mut cfg.freeze_after_ms),
        ("kill_after_ms", &rm.kill_after_ms, 0, MAX_MEMORY_DWELL_MS as i64, &mut cfg.kill_after_ms),
        ("poll_us", &rm.poll_us, 100, 100_000, &mut cfg.poll_us),
    ] {
        let Some(v) = raw else { continue };
        given.insert(key, line_of(text, v.span().start));
        if check_range(problems, at(&v.span()), key, *v.get_ref(), lo, hi) {
            *slot = *v.get_ref() as u64;
        } else {
            ok = false;
        }
    }
    if let Some(v) = &rm.protect_low {
        match size_of(v.get_ref(), false) {
            Ok(l) => cfg.protect_low = Some(l.bytes()),
            Err(e) => {
                problems.push(format!("{}: protect_low: {e}", at(&v.span())));
                ok = false;
            }
        }
    }
    for (v, slot) in [
        (rm.pause, &mut cfg.pause),
        (rm.reclaim, &mut cfg.reclaim),
        (rm.oom_prefer_background, &mut cfg.oom_prefer_background),
        (rm.keep_one_running, &mut cfg.keep_one_running),
    ] {
        if let Some(v) = v {
            *slot = v;
        }
    }
    if ok {
        for (keys, msg) in cfg.problems() {
            let (l, note) = blame(keys, &given, mline, "the default applies");
            problems.push(format!("{file}:{l}: [memory]: {msg}{note}"));
        }
    }
    cfg
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrash {
    enter_permille: Option<Spanned<i64>>,
    exit_permille: Option<Spanned<i64>>,
    cpus_pct: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    throttle_full_pct: Option<Spanned<f64>>,
    freeze_full_pct: Option<Spanned<f64>>,
    freeze_after_ms: Option<Spanned<i64>>,
    kill_after_ms: Option<Spanned<i64>>,
    thaw_below_pct: Option<Spanned<f64>>,
    thaw_after_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    class: Option<Spanned<String>>,
    weight: Option<Spanned<f64>>,
    slice_us: Option<Spanned<i64>>,
    wakeup_boost: Option<bool>,
    burst_credit_ms: Option<Spanned<i64>>,
    burst_refill_pct: Option<Spanned<i64>>,
    cpus_pct: Option<Spanned<i64>>,
    cpus: Option<Spanned<String>>,
    thrash_weight_pct: Option<Spanned<i64>>,
    thrash_slice_pct: Option<Spanned<i64>>,
    memory_high: Option<Spanned<toml::Value>>,
    memory_max: Option<Spanned<toml::Value>>,
    protect_low: Option<Spanned<toml::Value>>,
    delay_start_pct: Option<Spanned<i64>>,
    delay_base_ms: Option<Spanned<i64>>,
    delay_slope_ms_per_pct: Option<Spanned<i64>>,
    delay_max_ms: Option<Spanned<i64>>,
    cpu_mode: Option<Spanned<String>>,
    yield_to_interactive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    profile: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    session: Option<Spanned<String>>,
    comm: Option<Spanned<String>>,
}

/// 1-based line of byte offset @pos in @text.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

fn check_range(
    problems: &mut Vec<String>,
    at: String,
    what: &str,
    v: i64,
    lo: i64,
    hi: i64,
) -> bool {
    if v < lo || v > hi {
        problems.push(format!("{at}: {what} = {v} is out of range: use {lo} to {hi}"));
        return false;
    }
    true
}

/// A size key of a profile: an integer (bytes) or a size string; "max"
/// only if @allow_max.
fn size_of(v: &toml::Value, allow_max: bool) -> Result<MemLimit, String> {
    let lim = match v {
        toml::Value::Integer(i) if *i >= 0 => MemLimit::Bytes(*i as u64),
        toml::Value::Integer(i) => return Err(format!("{i} is negative: give a size like \"512M\"")),
        toml::Value::String(s) => parse_size(s)?,
        other => {
            return Err(format!(
                "{other} is not a size: use bytes (536870912), a number with K, M, G or T (\"512M\", \"2G\"){}",
                if allow_max { ", or \"max\"" } else { "" }
            ))
        }
    };
    if lim == MemLimit::Max && !allow_max {
        return Err("\"max\" is not allowed here: give a size like \"256M\"".to_string());
    }
    Ok(lim)
}

/// The line to blame for a problem between keys: the first of @keys given
/// in the file, else @fallback; and a note naming the keys that were not
/// given (their defaults took part).
fn blame(keys: &[&str], given: &BTreeMap<&str, usize>, fallback: usize, defaults: &str) -> (usize, String) {
    let line = keys.iter().find_map(|k| given.get(k).copied()).unwrap_or(fallback);
    let absent: Vec<&str> = keys.iter().copied().filter(|k| !given.contains_key(k)).collect();
    let note = if absent.is_empty() {
        String::new()
    } else {
        format!(" ({} not set: {defaults})", absent.join(", "))
    };
    (line, note)
}

/// A percentage of `[escalation]`: above 0, at most 100.
fn check_pct(problems: &mut Vec<String>, at: String, what: &str, v: f64) -> bool {
    if !(v.is_finite() && v > 0.0 && v <= 100.0) {
        problems.push(format!("{at}: {what} = {v} is out of range: use a percentage above 0, at most 100"));
        return false;
    }
    true
}

impl Policy {
    /// The built-in profiles (one per class, named after it), no selectors.
    pub fn builtin() -> Self {
        Policy {
            profiles: vec![
                Profile::builtin(StepClass::Interactive),
                Profile::builtin(StepClass::Tool),
                Profile::builtin(StepClass::Background),
            ],
            selectors: Vec::new(),
            source: None,
            thrash: ThrashParams::default(),
            escalation: EscalationConfig::default(),
            memory: MemoryConfig::default(),
            yield_cpus_pct: YIELD_CPUS_PCT,
        }
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            problems: vec![format!("{}: cannot read the policy file: {e}", path.display())],
        })?;
        let mut p = Self::parse_str(&text, &path.display().to_string())?;
        p.source = Some(path.to_path_buf());
        Ok(p)
    }

    pub fn parse_str(text: &str, file: &str) -> Result<Policy, PolicyError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let msg = e.message().trim().to_string();
            PolicyError { problems: vec![format!("{file}:{line}: {msg}")] }
        })?;
        let mut problems = Vec::new();
        let mut profiles = Vec::new();
        let mut curve_of_class: BTreeMap<u32, (String, DelayCurve)> = BTreeMap::new();

        for (name, sp) in &raw.profile {
            let line = line_of(text, sp.span().start);
            let at = |s: &std::ops::Range<usize>| format!("{file}:{}", line_of(text, s.start));
            let rp = sp.get_ref();
            let class = match &rp.class {
                None => {
                    problems.push(format!(
                        "{file}:{line}: profile {name:?} has no class: add class = \"interactive\", \"tool\" or \"background\""
                    ));
                    continue;
                }
                Some(c) => match StepClass::parse(c.get_ref()) {
                    Some(c) => c,
                    None => {
                        problems.push(format!(
                            "{}: profile {name:?}: unknown class {:?}: use \"interactive\", \"tool\" or \"background\"",
                            at(&c.span()),
                            c.get_ref()
                        ));
                        continue;
                    }
                },
            };
            let mut prof = Profile::builtin(class);
            prof.name = name.clone();
            if let Some(w) = &rp.weight {
                let v = *w.get_ref();
                if !(v.is_finite() && (0.01..=100.0).contains(&v)) {
                    problems.push(format!(
                        "{}: profile {name:?}: weight = {v} is out of range: use 0.01 to 100",
                        at(&w.span())
                    ));
                } else {
                    prof.weight = v;
                }
            }
            if let Some(s) = &rp.slice_us {
                if check_range(&mut problems, at(&s.span()), "slice_us", *s.get_ref(), 100, 100_000) {
                    prof.slice_us = Some(*s.get_ref() as u64);
                }
            }
            if let Some(b) = rp.wakeup_boost {
                prof.wakeup_boost = b;
            }
            if let Some(y) = rp.yield_to_interactive {
                prof.yield_to_interactive = y;
            }
            if let Some(m) = &rp.cpu_mode {
                match m.get_ref().as_str() {
                    "scx" => prof.cpu_mode = CpuMode::Scx,
                    "cfs" => prof.cpu_mode = CpuMode::Cfs,
                    other => problems.push(format!(
                        "{}: profile {name:?}: unknown cpu_mode {other:?}: use \"scx\" or \"cfs\"",
                        at(&m.span())
                    )),
                }
            }
            if let Some(c) = &rp.burst_credit_ms {
                if check_range(&mut problems, at(&c.span()), "burst_credit_ms", *c.get_ref(), 0, 10_000) {
                    prof.burst_credit_ms = *c.get_ref() as u64;
                }
            }
            if let Some(r) = &rp.burst_refill_pct {
                if check_range(&mut problems, at(&r.span()), "burst_refill_pct", *r.get_ref(), 0, 100) {
                    prof.burst_refill_pct = *r.get_ref() as u32;
                }
            }
            if prof.wakeup_boost && rp.burst_credit_ms.is_none() && prof.burst_credit_ms == 0 {
                // a boost asked for on a class without credit: give it the tool default
                prof.burst_credit_ms = 10;
                prof.burst_refill_pct = prof.burst_refill_pct.max(5);
            }
            match (&rp.cpus_pct, &rp.cpus) {
                (Some(_), Some(c)) => problems.push(format!(
                    "{}: profile {name:?}: give either cpus_pct or cpus, not both",
                    at(&c.span())
                )),
                (Some(p), None) => {
                    if check_range(&mut problems, at(&p.span()), "cpus_pct", *p.get_ref(), 1, 100) {
                        prof.cpus = CpuShare::Pct(*p.get_ref() as u32);
                    }
                }
                (None, Some(c)) => match parse_exclusive(c.get_ref()) {
                    Some(n) => prof.cpus = CpuShare::Exclusive(n),
                    None => problems.push(format!(
                        "{}: profile {name:?}: cpus = {:?} is not understood: write cpus = \"exclusive:N\" with N >= 1 (or use cpus_pct)",
                        at(&c.span()),
                        c.get_ref()
                    )),
                },
                (None, None) => {}
            }
            if let Some(v) = &rp.thrash_weight_pct {
                if check_range(&mut problems, at(&v.span()), "thrash_weight_pct", *v.get_ref(), 1, 100) {
                    prof.thrash_weight_pct = *v.get_ref() as u32;
                }
            }
            if let Some(v) = &rp.thrash_slice_pct {
                if check_range(&mut problems, at(&v.span()), "thrash_slice_pct", *v.get_ref(), 1, 100) {
                    prof.thrash_slice_pct = *v.get_ref() as u32;
                }
            }
            for (key, raw, allow_max) in [
                ("memory_high", &rp.memory_high, true),
                ("memory_max", &rp.memory_max, true),
                ("protect_low", &rp.protect_low, false),
            ] {
                let Some(v) = raw else { continue };
                let lim = match size_of(v.get_ref(), allow_max) {
                    Ok(l) => l,
                    Err(e) => {
                        problems.push(format!("{}: profile {name:?}: {key} = {e}", at(&v.span())));
                        continue;
                    }
                };
                match (key, lim) {
                    ("protect_low", l) => prof.protect_low = Some(l.bytes()),
                    (_, MemLimit::Bytes(b)) if b < MIN_MEM_LIMIT => problems.push(format!(
                        "{}: profile {name:?}: {key} = {b} bytes is below 1M, which no session runs in: \
                         give at least \"1M\" (did you mean \"{b}M\"?)",
                        at(&v.span())
                    )),
                    ("memory_high", l) => prof.memory_high = Some(l),
                    (_, l) => prof.memory_max = Some(l),
                }
            }
            if let (Some(MemLimit::Bytes(h)), Some(MemLimit::Bytes(m)), Some(hs)) =
                (prof.memory_high, prof.memory_max, &rp.memory_high)
            {
                if h > m {
                    problems.push(format!(
                        "{}: profile {name:?}: memory_high ({h} bytes) is above memory_max ({m} bytes): \
                         lower memory_high or raise memory_max",
                        at(&hs.span())
                    ));
                }
            }
            let mut given: BTreeMap<&str, usize> = BTreeMap::new();
            let mut curve_ok = true;
            for (key, raw, hi) in [
                ("delay_start_pct", &rp.delay_start_pct, MAX_START_PCT),
                ("delay_base_ms", &rp.delay_base_ms, MAX_DELAY_MS),
                ("delay_slope_ms_per_pct", &rp.delay_slope_ms_per_pct, MAX_SLOPE_MS_PER_PCT),
                ("delay_max_ms", &rp.delay_max_ms, MAX_DELAY_MS),
            ] {
                let Some(v) = raw else { continue };
                given.insert(key, line_of(text, v.span().start));
                if !check_range(&mut problems, at(&v.span()), key, *v.get_ref(), 0, hi as i64) {
                    curve_ok = false;
                    continue;
                }
                let x = *v.get_ref() as u32;
                match key {
                    "delay_start_pct" => prof.delay.start_pct = x,
                    "delay_base_ms" => prof.delay.base_ms = x,
                    "delay_slope_ms_per_pct" => prof.delay.slope_ms_per_pct = x,
                    _ => prof.delay.max_ms = x,
                }
            }
            if curve_ok {
                let defaults = format!("the {} class default applies", class.as_str());
                for (keys, msg) in prof.delay.problems() {
                    let (l, note) = blame(keys, &given, line, &defaults);
                    problems.push(format!("{file}:{l}: profile {name:?}: {msg}{note}"));
                }
                // BPF keeps one delay curve per class: two profiles of a
                // class must agree on it, or the second's keys would be lost
                match curve_of_class.get(&class.code()) {
                    Some((first, c)) if *c != prof.delay => problems.push(format!(
                        "{file}:{line}: profile {name:?}: its delay curve differs from profile {first:?}'s, also of the {} \
                         class; the memcg_ops delay curve is one per class, so give both profiles the same delay_* keys \
                         (or none)",
                        class.as_str()
                    )),
                    Some(_) => {}
                    None => {
                        curve_of_class.insert(class.code(), (name.to_string(), prof.delay));
                    }
                }
            }
            profiles.push(prof);
        }

        let mut yield_cpus_pct = YIELD_CPUS_PCT;
        if let Some(v) = raw.yield_.as_ref().and_then(|y| y.get_ref().cpus_pct.as_ref()) {
            let at = format!("{file}:{}: [yield]", line_of(text, v.span().start));
            if check_range(&mut problems, at, "cpus_pct", *v.get_ref(), 1, 99) {
                yield_cpus_pct = *v.get_ref() as u32;
            }
        }
        let mut thrash = ThrashParams::default();
        if let Some(t) = &raw.thrash {
            let tline = line_of(text, t.span().start);
            let rt = t.get_ref();
            let at = |s: &std::ops::Range<usize>| format!("{file}:{}", line_of(text, s.start));
            let mut given: BTreeMap<&str, usize> = BTreeMap::new();
            let mut ok = true;
            for (key, raw, lo, hi, slot) in [
                ("enter_permille", &rt.enter_permille, 1, THRASH_MAX as i64, &mut thrash.enter_permille),
                ("exit_permille", &rt.exit_permille, 1, THRASH_MAX as i64 - 1, &mut thrash.exit_permille),
                ("cpus_pct", &rt.cpus_pct, 1, 100, &mut thrash.cpus_pct),
            ] {
                let Some(v) = raw else { continue };
                given.insert(key, line_of(text, v.span().start));
                if check_range(&mut problems, format!("{}: [thrash]", at(&v.span())), key, *v.get_ref(), lo, hi) {
                    *slot = *v.get_ref() as u32;
                } else {
                    ok = false;
                }
            }
            if ok {
                for (keys, msg) in thrash.problems() {
                    let (l, note) = blame(keys, &given, tline, "the default applies");
                    problems.push(format!("{file}:{l}: [thrash]: {msg}{note}"));
                }
            }
        }

        let mut escalation = EscalationConfig::default();
        if let Some(e) = &raw.escalation {
            let eline = line_of(text, e.span().start);
            let re = e.get_ref();
            let at = |s: &std::ops::Range<usize>| format!("{file}:{}: [escalation]", line_of(text, s.start));
            let mut given: BTreeMap<&str, usize> = BTreeMap::new();
            let mut ok = true;
            for (key, raw, slot) in [
                ("throttle_full_pct", &re.throttle_full_pct, &mut escalation.throttle_full_pct),
                ("freeze_full_pct", &re.freeze_full_pct, &mut escalation.freeze_full_pct),
                ("thaw_below_pct", &re.thaw_below_pct, &mut escalation.thaw_below_pct),
            ] {
                let Some(v) = raw else { continue };
                given.insert(key, line_of(text, v.span().start));
                if check_pct(&mut problems, at(&v.span()), key, *v.get_ref()) {
                    *slot = *v.get_ref();
                } else {
                    ok = false;
                }
            }
            for (key, raw, slot) in [
                ("freeze_after_ms", &re.freeze_after_ms, &mut escalation.freeze_after_ms),
                ("kill_after_ms", &re.kill_after_ms, &mut escalation.kill_after_ms),
                ("thaw_after_ms", &re.thaw_after_ms, &mut escalation.thaw_after_ms),
            ] {
                let Some(v) = raw else { continue };
                given.insert(key, line_of(text, v.span().start));
                if check_range(&mut problems, at(&v.span()), key, *v.get_ref(), 1, MAX_DWELL_MS as i64) {
                    *slot = *v.get_ref() as u64;
                } else {
                    ok = false;
                }
            }
            if ok {
                for (keys, msg) in escalation.problems() {
                    let (l, note) = blame(keys, &given, eline, "the default applies");
                    problems.push(format!("{file}:{l}: [escalation]: {msg}{note}"));
                }
            }
        }

        let memory = match &raw.memory {
            Some(m) => parse_memory(m, text, file, &mut problems),
            None => MemoryConfig::default(),
        };

        let mut selectors = Vec::new();
        for sp in &raw.select {
            let line = line_of(text, sp.span().start);
            let rs = sp.get_ref();
            let keys: Vec<(SelectorKind, &Spanned<String>)> = [
                (SelectorKind::Path, &rs.path),
                (SelectorKind::Session, &rs.session),
                (SelectorKind::Comm, &rs.comm),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .collect();
            if keys.len() != 1 {
                problems.push(format!(
                    "{file}:{line}: a selector needs exactly one of path, session or comm (it has {})",
                    keys.len()
                ));
                continue;
            }
            let (kind, pat) = keys[0];
            let pline = line_of(text, pat.span().start);
            if let Err(e) = check_glob(pat.get_ref()) {
                problems.push(format!("{file}:{pline}: {} = {:?}: {e}", kind.as_str(), pat.get_ref()));
                continue;
            }
            let Some(pname) = &rs.profile else {
                problems.push(format!("{file}:{line}: a selector needs profile = \"NAME\""));
                continue;
            };
            let Some(idx) = profiles.iter().position(|p| p.name == *pname.get_ref()) else {
                problems.push(format!(
                    "{}:{}: selector names profile {:?}, which is not defined: add [profile.{}]",
                    file,
                    line_of(text, pname.span().start),
                    pname.get_ref(),
                    pname.get_ref()
                ));
                continue;
            };
            selectors.push(Selector { kind, pattern: pat.get_ref().clone(), profile: idx, line: pline });
        }

        for (i, a) in selectors.iter().enumerate() {
            for b in &selectors[i + 1..] {
                if a.kind != b.kind {
                    continue;
                }
                if let Some(w) = globs_overlap(&a.pattern, &b.pattern) {
                    problems.push(format!(
                        "{file}:{}: selectors at lines {} and {} both match {} {:?}: make them disjoint",
                        b.line,
                        a.line,
                        b.line,
                        a.kind.as_str(),
                        w
                    ));
                }
            }
        }

        if !problems.is_empty() {
            problems.sort_by_key(|p| {
                p.strip_prefix(&format!("{file}:"))
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
            });
            return Err(PolicyError { problems });
        }
        Ok(Policy { profiles, selectors, source: None, thrash, escalation, memory, yield_cpus_pct })
    }

    pub fn profile_index(&self, name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.name == name)
    }

    /// The profile of a cgroup: @rel_path below the cgroup2 root, its
    /// session's name, its first command name.
    pub fn resolve(&self, rel_path: &str, session: Option<&str>, comm: Option<&str>) -> Option<usize> {
        for kind in [SelectorKind::Comm, SelectorKind::Path, SelectorKind::Session] {
            let subject = match kind {
                SelectorKind::Comm => comm,
                SelectorKind::Path => Some(rel_path),
                SelectorKind::Session => session,
            };
            let Some(subject) = subject else { continue };
            if let Some(s) = self
                .selectors
                .iter()
                .find(|s| s.kind == kind && glob_match(&s.pattern, subject))
            {
                return Some(s.profile);
            }
        }
        None
    }
}

fn parse_exclusive(s: &str) -> Option<u32> {
    let n: u32 = s.strip_prefix("exclusive:")?.trim().parse().ok()?;
    (n >= 1).then_some(n)
}

fn check_glob(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if let Some(c) = p.chars().find(|c| "[]{}".contains(*c)) {
        return Err(format!("'{c}' is not supported: use only * ? and **"));
    }
    Ok(())
}

/// Pattern elements: a literal char, `?`, `*` (no '/'), `**` (anything).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok {
    Lit(char),
    One,
    Star,
    Any,
}

fn tokens(p: &str) -> Vec<Tok> {
    let comps: Vec<&str> = p.split('/').collect();
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if *c == "**" {
            // "a/**/b" matches a/b, a/x/b, a/x/y/b: "**/" together is Any
            out.push(Tok::Any);
            continue;
        }
        for ch in c.chars() {
            out.push(match ch {
                '*' => Tok::Star,
                '?' => Tok::One,
                ch => Tok::Lit(ch),
            });
        }
        if i + 1 < comps.len() {
            out.push(Tok::Lit('/'));
        }
    }
    out
}

/// Ok, or the problems (key names, message) of a table's check joined into
/// one message.
pub fn problems_result(problems: Vec<(&'static [&'static str], String)>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "))
    }
}

/// Does glob @pattern match @s?
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p = tokens(pattern);
    let s: Vec<char> = s.chars().collect();
    // reachable[i] = pattern prefix i can match the text consumed so far
    let mut cur = vec![false; p.len() + 1];
    cur[0] = true;
    close(&p, &mut cur);
    for &ch in &s {
        let mut next = vec![false; p.len() + 1];
        for i in 0..p.len() {
            if !cur[i] {
                continue;
            }
            match p[i] {
                Tok::Lit(c) if c == ch => next[i + 1] = true,
                Tok::One if ch != '/' => next[i + 1] = true,
                Tok::Star if ch != '/' => next[i] = true,
                Tok::Any => next[i] = true,
                _ => {}
            }
        }
        close(&p, &mut next);
        cur = next;
    }
    cur[p.len()]
}

/// Epsilon closure: `*` and `**` may match nothing (and `**` eats a '/').
fn close(p: &[Tok], set: &mut [bool]) {
    for i in 0..p.len() {
        if set[i] && matches!(p[i], Tok::Star | Tok::Any) {
            set[i + 1] = true;
        }
    }
}

/// A string both globs match, if there is one (product automaton search).
pub fn globs_overlap(a: &str, b: &str) -> Option<String> {
    let pa = tokens(a);
    let pb = tokens(b);
    let mut alphabet: Vec<char> = pa
        .iter()
        .chain(pb.iter())
        .filter_map(|t| if let Tok::Lit(c) = t { Some(*c) } else { None })
        .collect();
    alphabet.push('/');
    alphabet.push('x'); // stands for any character neither pattern names
    alphabet.sort();
    alphabet.dedup();
    if alphabet.iter().filter(|c| **c == 'x').count() == 1
        && pa.iter().chain(pb.iter()).any(|t| *t == Tok::Lit('x'))
    {
        alphabet.push('\u{e000}');
    }

    let start_a = closure_of(&pa, 0);
    let start_b = closure_of(&pb, 0);
    let mut seen = std::collections::BTreeSet::new();
    let mut queue = std::collections::VecDeque::new();
    queue.push_back((start_a, start_b, String::new()));
    while let Some((sa, sb, w)) = queue.pop_front() {
        if sa.contains(&pa.len()) && sb.contains(&pb.len()) && !w.is_empty() {
            return Some(w);
        }
        if !seen.insert((sa.clone(), sb.clone())) || w.len() > 64 {
            continue;
        }
        for &ch in &alphabet {
            let na = step(&pa, &sa, ch);
            let nb = step(&pb, &sb, ch);
            if na.is_empty() || nb.is_empty() {
                continue;
            }
            let mut w2 = w.clone();
            w2.push(ch);
            queue.push_back((na, nb, w2));
        }
    }
    None
}

fn closure_of(p: &[Tok], i: usize) -> Vec<usize> {
    let mut set = vec![false; p.len() + 1];
    set[i] = true;
    close(p, &mut set);
    set.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i).collect()
}

fn step(p: &[Tok], states: &[usize], ch: char) -> Vec<usize> {
    let mut next = vec![false; p.len() + 1];
    for &i in states {
        if i >= p.len() {
            continue;
        }
        match p[i] {
            Tok::Lit(c) if c == ch => next[i + 1] = true,
            Tok::One if ch != '/' => next[i + 1] = true,
            Tok::Star if ch != '/' => next[i] = true,
            Tok::Any => next[i] = true,
            _ => {}
        }
    }
    close(p, &mut next);
    next.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[profile.chat]
class = "interactive"
weight = 2.0
slice_us = 1000
wakeup_boost = true
burst_credit_ms = 30
burst_refill_pct = 15
cpus_pct = 100

[profile.build]
class = "tool"
cpus = "exclusive:2"

[profile.bg]
class = "background"
weight = 0.5
cpus_pct = 25

[[select]]
profile = "chat"
path = "agentcg/*/chat_*"

[[select]]
profile = "build"
comm = "cargo"

[[select]]
profile = "bg"
session = "batch_*"
"#;

    fn err(text: &str) -> String {
        Policy::parse_str(text, "p.toml").unwrap_err().to_string()
    }

    #[test]
    fn full_example_parses() {
        let p = Policy::parse_str(FULL, "p.toml").unwrap();
        let chat = &p.profiles[p.profile_index("chat").unwrap()];
        assert_eq!(chat.class, StepClass::Interactive);
        assert_eq!(chat.weight, 2.0);
        assert_eq!(chat.slice_us, Some(1000));
        assert!(chat.wakeup_boost);
        assert_eq!((chat.burst_credit_ms, chat.burst_refill_pct), (30, 15));
        let build = &p.profiles[p.profile_index("build").unwrap()];
        assert_eq!(build.cpus, CpuShare::Exclusive(2));
        assert!(!build.wakeup_boost);
        let bg = &p.profiles[p.profile_index("bg").unwrap()];
        assert_eq!((bg.cpus, bg.weight, bg.class.code()), (CpuShare::Pct(25), 0.5, 3));
        assert_eq!(p.selectors.len(), 3);
        assert_eq!(p.selectors[0].line, 22);
    }

    #[test]
    fn resolve_prefers_comm_then_path_then_session() {
        let p = Policy::parse_str(FULL, "p.toml").unwrap();
        let idx = |n| p.profile_index(n);
        assert_eq!(p.resolve("agentcg/s1/chat_1", Some("s1"), None), idx("chat"));
        assert_eq!(p.resolve("agentcg/s1/chat_1", Some("s1"), Some("cargo")), idx("build"));
        assert_eq!(p.resolve("agentcg/batch_2/x", Some("batch_2"), None), idx("bg"));
        assert_eq!(p.resolve("agentcg/batch_2/chat_9", Some("batch_2"), None), idx("chat"));
        assert_eq!(p.resolve("agentcg/s1/other", Some("s1"), Some("ls")), None);
    }

    #[test]
    fn builtin_has_one_profile_per_class() {
        let p = Policy::builtin();
        assert_eq!(p.profiles.len(), 3);
        assert!(p.profiles[0].wakeup_boost && !p.profiles[2].wakeup_boost);
        assert_eq!(p.profiles[0].burst_credit_ms, 20);
        assert!(p.selectors.is_empty());
        assert_eq!(Policy::default().profiles.len(), 0);
    }

    #[test]
    fn unknown_keys_are_errors_with_lines() {
        let e = err("[profile.a]\nclass = \"tool\"\nbogus = 1\n");
        assert!(e.starts_with("p.toml:3:") && e.contains("bogus"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\n\n[other]\nx = 1\n");
        assert!(e.contains("p.toml:4:") && e.contains("other"), "{e}");
        let e = err("[[select]]\nprofile = \"a\"\npath = \"x\"\nwhat = 2\n");
        assert!(e.contains("p.toml:4:") && e.contains("what"), "{e}");
    }

    #[test]
    fn value_errors_name_the_problem_and_line() {
        let e = err("[profile.a]\nclass = \"fast\"\n");
        assert!(e.contains("p.toml:2:") && e.contains("unknown class"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\ncpu_mode = \"rt\"\n");
        assert!(e.contains("p.toml:3:") && e.contains("unknown cpu_mode \"rt\""), "{e}");
        let e = err("[profile.a]\nweight = 2.0\n");
        assert!(e.contains("p.toml:1:") && e.contains("no class"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\nweight = 500.0\n");
        assert!(e.contains("p.toml:3:") && e.contains("weight"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\nslice_us = 5\n");
        assert!(e.contains("p.toml:3:") && e.contains("slice_us = 5"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\ncpus_pct = 50\ncpus = \"exclusive:1\"\n");
        assert!(e.contains("p.toml:4:") && e.contains("not both"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\ncpus = \"exclusive:0\"\n");
        assert!(e.contains("p.toml:3:") && e.contains("exclusive:N"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\ncpus_pct = 0\n");
        assert!(e.contains("p.toml:3:") && e.contains("cpus_pct"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\nburst_refill_pct = 101\n");
        assert!(e.contains("p.toml:3:"), "{e}");
    }

    #[test]
    fn selector_errors() {
        let base = "[profile.a]\nclass = \"tool\"\n";
        let e = err(&format!("{base}[[select]]\nprofile = \"a\"\n"));
        assert!(e.contains("p.toml:3:") && e.contains("exactly one"), "{e}");
        let e = err(&format!("{base}[[select]]\nprofile = \"a\"\npath = \"x\"\ncomm = \"y\"\n"));
        assert!(e.contains("p.toml:3:") && e.contains("(it has 2)"), "{e}");
        let e = err(&format!("{base}[[select]]\nprofile = \"nope\"\npath = \"x\"\n"));
        assert!(e.contains("p.toml:4:") && e.contains("not defined"), "{e}");
        let e = err(&format!("{base}[[select]]\nprofile = \"a\"\npath = \"x[0]\"\n"));
        assert!(e.contains("p.toml:5:") && e.contains("not supported"), "{e}");
        let e = err(&format!(
            "{base}[[select]]\nprofile = \"a\"\nsession = \"s_*\"\n[[select]]\nprofile = \"a\"\nsession = \"*_1\"\n"
        ));
        assert!(e.contains("lines 5 and 8") && e.contains("\"s_1\""), "{e}");
        // different kinds never overlap
        Policy::parse_str(
            &format!("{base}[[select]]\nprofile = \"a\"\nsession = \"s\"\n[[select]]\nprofile = \"a\"\ncomm = \"s\"\n"),
            "p.toml",
        )
        .unwrap();
    }

    #[test]
    fn toml_syntax_errors_have_lines() {
        let e = err("[profile.a]\nclass = \"tool\"\nweight = \n");
        assert!(e.starts_with("p.toml:3:"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("agentcg/*/step_*", "agentcg/s1/step_2"));
        assert!(!glob_match("agentcg/*/step_*", "agentcg/s1/x/step_2"));
        assert!(glob_match("agentcg/**/step_*", "agentcg/s1/x/step_2"));
        assert!(glob_match("agentcg/**/step_*", "agentcg/step_2"));
        assert!(glob_match("s?", "s1") && !glob_match("s?", "s12"));
        assert!(glob_match("*", "abc") && !glob_match("*", "a/b"));
        assert!(glob_match("**", "a/b/c"));
        assert_eq!(globs_overlap("a*", "*b").as_deref(), Some("ab"));
        assert!(globs_overlap("a*", "b*").is_none());
        assert!(globs_overlap("x/*/y", "x/**").is_some());
        assert!(globs_overlap("x/*/y", "x/*/z").is_none());
        assert!(globs_overlap("same", "same").is_some());
    }

    /// The example at the top of this file, as a policy file.
    fn doc_example() -> String {
        let src = include_str!("policy.rs");
        let mut out = String::new();
        let mut inside = false;
        for l in src.lines() {
            let Some(l) = l.strip_prefix("//!") else { continue };
            let l = l.strip_prefix(' ').unwrap_or(l);
            if l.starts_with("```") {
                if inside {
                    break;
                }
                inside = true;
                continue;
            }
            if inside {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn doc_example_parses() {
        let text = doc_example();
        assert!(text.contains("[escalation]") && text.contains("delay_max_ms"), "{text}");
        let p = Policy::parse_str(&text, "doc.toml").unwrap();
        let chat = &p.profiles[p.profile_index("chat").unwrap()];
        assert_eq!((chat.thrash_weight_pct, chat.thrash_slice_pct), (50, 75));
        assert_eq!(chat.memory_high, Some(MemLimit::Bytes(2 << 30)));
        assert_eq!(chat.memory_max, Some(MemLimit::Bytes(4 << 30)));
        assert_eq!(chat.protect_low, Some(256 << 20));
        assert_eq!(chat.delay, DelayCurve::INTERACTIVE);
        assert_eq!(p.thrash, ThrashParams::default());
        assert_eq!(p.escalation, EscalationConfig::default());
    }

    #[test]
    fn memory_keys_default_from_the_class() {
        let p = Policy::parse_str(FULL, "p.toml").unwrap();
        for (name, curve) in [("chat", DelayCurve::INTERACTIVE), ("build", DelayCurve::TOOL), ("bg", DelayCurve::BACKGROUND)] {
            let prof = &p.profiles[p.profile_index(name).unwrap()];
            assert_eq!(prof.delay, curve, "{name}");
            assert_eq!((prof.thrash_weight_pct, prof.thrash_slice_pct), (25, 50));
            assert_eq!((prof.memory_high, prof.memory_max, prof.protect_low), (None, None, None));
        }
        assert_eq!(p.thrash, ThrashParams::default());
        assert_eq!(p.escalation, EscalationConfig::default());
        let b = Policy::builtin();
        assert_eq!(b.profiles[2].delay, DelayCurve::BACKGROUND);
        assert_eq!((b.thrash, b.escalation), (ThrashParams::default(), EscalationConfig::default()));
        assert_eq!(StepClass::Tool.delay_curve(), DelayCurve::TOOL);
    }

    #[test]
    fn memory_keys_parse() {
        let p = Policy::parse_str(
            "[profile.a]\nclass = \"background\"\nthrash_weight_pct = 10\nthrash_slice_pct = 100\n\
             memory_high = 536870912\nmemory_max = \"max\"\nprotect_low = \"0\"\n\
             delay_base_ms = 20\ndelay_max_ms = 1500\n\
             [thrash]\nenter_permille = 300\n\
             [escalation]\nthrottle_full_pct = 15\nfreeze_full_pct = 60.5\nkill_after_ms = 30000\n",
            "p.toml",
        )
        .unwrap();
        let a = &p.profiles[0];
        assert_eq!((a.thrash_weight_pct, a.thrash_slice_pct), (10, 100));
        assert_eq!((a.memory_high, a.memory_max, a.protect_low), (Some(MemLimit::Bytes(512 << 20)), Some(MemLimit::Max), Some(0)));
        assert_eq!(a.delay, DelayCurve { base_ms: 20, max_ms: 1500, ..DelayCurve::BACKGROUND });
        assert_eq!(p.thrash, ThrashParams { enter_permille: 300, ..ThrashParams::default() });
        assert_eq!(
            a.thrash_params(&p.thrash),
            ThrashParams { enter_permille: 300, exit_permille: 50, weight_pct: 10, slice_pct: 100, cpus_pct: 25 }
        );
        assert_eq!(
            p.escalation,
            EscalationConfig { throttle_full_pct: 15.0, freeze_full_pct: 60.5, kill_after_ms: 30_000, ..EscalationConfig::default() }
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("max"), Ok(MemLimit::Max));
        assert_eq!(parse_size(" MAX "), Ok(MemLimit::Max));
        assert_eq!(parse_size("4096"), Ok(MemLimit::Bytes(4096)));
        assert_eq!(parse_size("4k"), Ok(MemLimit::Bytes(4096)));
        assert_eq!(parse_size("512M"), Ok(MemLimit::Bytes(512 << 20)));
        assert_eq!(parse_size("2G"), Ok(MemLimit::Bytes(2 << 30)));
        assert_eq!(parse_size("1T"), Ok(MemLimit::Bytes(1 << 40)));
        for bad in ["", "M", "1.5G", "-1", "12X", "1 G", "1GB", "0x10"] {
            assert!(parse_size(bad).unwrap_err().contains("is not a size"), "{bad:?}");
        }
        assert!(parse_size("99999999999999999999").unwrap_err().contains("too large"));
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert_eq!(MemLimit::Bytes(7).to_cgroup_value(), "7");
        assert_eq!(MemLimit::Max.to_cgroup_value(), "max");
    }

    #[test]
    fn memory_key_errors_name_the_problem_and_line() {
        let base = "[profile.a]\nclass = \"tool\"\n";
        let e = err(&format!("{base}memory_high = \"12X\"\n"));
        assert!(e.starts_with("p.toml:3:") && e.contains("memory_high = \"12X\" is not a size"), "{e}");
        let e = err(&format!("{base}memory_max = 1.5\n"));
        assert!(e.starts_with("p.toml:3:") && e.contains("memory_max = 1.5 is not a size"), "{e}");
        let e = err(&format!("{base}memory_max = -4\n"));
        assert!(e.starts_with("p.toml:3:") && e.contains("negative"), "{e}");
        let e = err(&format!("{base}memory_high = 512\n"));
        assert!(e.starts_with("p.toml:3:") && e.contains("below 1M") && e.contains("\"512M\""), "{e}");
        let e = err(&format!("{base}protect_low = \"max\"\n"));
        assert!(e.starts_with("p.toml:3:") && e.contains("not allowed"), "{e}");
        let e = err(&format!("{base}memory_max = \"1G\"\nmemory_high = \"2G\"\n"));
        assert!(e.starts_with("p.toml:4:") && e.contains("memory_high (2147483648 bytes) is above memory_max"), "{e}");
        for (key, v, range) in [
            ("thrash_weight_pct", "0", "use 1 to 100"),
            ("thrash_slice_pct", "101", "use 1 to 100"),
            ("delay_start_pct", "1001", "use 0 to 1000"),
            ("delay_base_ms", "-1", "use 0 to 2000"),
            ("delay_slope_ms_per_pct", "2001", "use 0 to 2000"),
            ("delay_max_ms", "2001", "use 0 to 2000"),
        ] {
            let e = err(&format!("{base}{key} = {v}\n"));
            assert!(e.starts_with("p.toml:3:") && e.contains(&format!("{key} = {v} is out of range: {range}")), "{e}");
        }
        // base above max: blamed on base, saying max came from the class
        // one curve per class: a second interactive profile with other keys
        // is refused at its own line, the same keys are fine
        let e = err("[profile.a]\nclass = \"interactive\"\ndelay_max_ms = 300\n[profile.b]\nclass = \"interactive\"\ndelay_max_ms = 400\n");
        assert!(e.starts_with("p.toml:4:") && e.contains("profile \"b\": its delay curve differs from profile \"a\"'s"), "{e}");
        let e = err("[profile.a]\nclass = \"interactive\"\ndelay_max_ms = 300\n[profile.b]\nclass = \"interactive\"\n");
        assert!(e.contains("profile \"b\": its delay curve differs"), "{e}");
        Policy::parse_str("[profile.a]\nclass = \"interactive\"\ndelay_max_ms = 300\n[profile.b]\nclass = \"interactive\"\ndelay_max_ms = 300\n[profile.c]\nclass = \"tool\"\ndelay_max_ms = 900\n", "p.toml").unwrap();
        let e = err("[profile.a]\nclass = \"interactive\"\ndelay_base_ms = 200\n");
        assert!(e.starts_with("p.toml:3:") && e.contains("delay_base_ms = 200 is above delay_max_ms = 100"), "{e}");
        assert!(e.contains("delay_max_ms not set: the interactive class default applies"), "{e}");
        let e = err("[profile.a]\nclass = \"tool\"\n\ndelay_max_ms = 5\n");
        assert!(e.starts_with("p.toml:4:") && e.contains("delay_base_ms = 10 is above delay_max_ms = 5"), "{e}");
        // every problem of a profile is reported, in line order
        let e = err(&format!("{base}memory_high = \"x\"\ndelay_max_ms = 3000\nthrash_slice_pct = 0\n"));
        assert_eq!(e.lines().count(), 3, "{e}");
        assert!(e.lines().zip(["p.toml:3:", "p.toml:4:", "p.toml:5:"]).all(|(l, p)| l.starts_with(p)), "{e}");
    }

    #[test]
    fn thrash_table_errors() {
        let e = err("[thrash]\nenter_permille = 100\nexit_permille = 100\n");
        assert!(e.starts_with("p.toml:3: [thrash]: exit_permille = 100 must be below enter_permille = 100"), "{e}");
        let e = err("[thrash]\nexit_permille = 300\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("enter_permille not set"), "{e}");
        let e = err("[thrash]\nenter_permille = 20\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("exit_permille = 50 must be below enter_permille = 20"), "{e}");
        let e = err("[thrash]\nenter_permille = 1001\n");
        assert!(e.starts_with("p.toml:2: [thrash]: enter_permille = 1001 is out of range: use 1 to 1000"), "{e}");
        let e = err("[thrash]\nexit_permille = 0\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("use 1 to 999"), "{e}");
        let e = err("[thrash]\nenter_permille = 300\nweight_pct = 20\n");
        assert!(e.starts_with("p.toml:3:") && e.contains("weight_pct"), "{e}");
        let e = err("[thrash]\ncpus_pct = 0\n");
        assert!(e.starts_with("p.toml:2: [thrash]: cpus_pct = 0 is out of range: use 1 to 100"), "{e}");
        Policy::parse_str("[thrash]\n", "p.toml").unwrap();
        let p = Policy::parse_str("[thrash]\ncpus_pct = 100\n", "p.toml").unwrap();
        assert_eq!(p.thrash.cpus_pct, 100);
    }

    #[test]
    fn memory_table_parses_and_errors_name_file_and_line() {
        let p = Policy::parse_str(
            "[memory]\nguard_pct = 85\nresume_pct = 70\nfreeze_after_ms = 500\nreclaim = false\nprotect_low = \"64M\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!((p.memory.guard_pct, p.memory.resume_pct, p.memory.freeze_after_ms), (85, 70, 500));
        assert_eq!((p.memory.reclaim, p.memory.protect_low), (false, Some(64 << 20)));
        assert_eq!(Policy::parse_str("", "p.toml").unwrap().memory, MemoryConfig::default());
        let e = err("[memory]\nguard_pct = 150\n");
        assert!(e.starts_with("p.toml:2: [memory]: guard_pct = 150 is out of range: use 1 to 99"), "{e}");
        let e = err("[memory]\n\nresume_pct = 95\n");
        assert!(e.starts_with("p.toml:3: [memory]: resume_pct = 95 must be below guard_pct = 90"), "{e}");
        assert!(e.contains("guard_pct not set"), "{e}");
        let e = err("[memory]\nguard_pct = 80\nkill_pct = 75\nresume_pct = 70\n");
        assert!(e.starts_with("p.toml:3: [memory]: kill_pct = 75 must be above guard_pct = 80"), "{e}");
        let e = err("[memory]\nfreeze_after_ms = 8000\n");
        assert!(e.contains("p.toml:2: [memory]: freeze_after_ms = 8000 must be below 5000"), "{e}");
        let e = err("[memory]\nprotect_low = \"lots\"\n");
        assert!(e.starts_with("p.toml:2: [memory]: protect_low:"), "{e}");
        let e = err("[memory]\npause_after = 3\n");
        assert!(e.contains("pause_after"), "{e}");
    }

    #[test]
    fn escalation_table_errors() {
        let e = err("[escalation]\nfreeze_after_ms = 5000\nkill_after_ms = 5000\n");
        assert!(e.starts_with("p.toml:3: [escalation]: kill_after_ms = 5000 must be above freeze_after_ms = 5000"), "{e}");
        let e = err("[escalation]\nfreeze_after_ms = 20000\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("kill_after_ms = 10000 must be above") && e.contains("kill_after_ms not set"), "{e}");
        let e = err("[escalation]\nthaw_below_pct = 12\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("thaw_below_pct = 12 must be below throttle_full_pct = 10"), "{e}");
        let e = err("[escalation]\n\nthrottle_full_pct = 50\nfreeze_full_pct = 45\n");
        assert!(e.starts_with("p.toml:3:") && e.contains("above freeze_full_pct = 45"), "{e}");
        let e = err("[escalation]\nfreeze_full_pct = 120\n");
        assert!(e.starts_with("p.toml:2: [escalation]: freeze_full_pct = 120 is out of range"), "{e}");
        let e = err("[escalation]\nthaw_below_pct = 0\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("above 0"), "{e}");
        let e = err("[escalation]\nthaw_after_ms = 0\n");
        assert!(e.starts_with("p.toml:2: [escalation]: thaw_after_ms = 0 is out of range: use 1 to 86400000"), "{e}");
        let e = err("[escalation]\nthrottle_full_pct = \"10%\"\n");
        assert!(e.starts_with("p.toml:2:"), "{e}");
        let e = err("[escalation]\nkill_after = 1\n");
        assert!(e.starts_with("p.toml:2:") && e.contains("kill_after"), "{e}");
        let p = Policy::parse_str("[escalation]\nthrottle_full_pct = 40\nfreeze_full_pct = 40\n", "p.toml").unwrap();
        assert_eq!(p.escalation.throttle_full_pct, 40.0);
    }
}
