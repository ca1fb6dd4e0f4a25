// SPDX-License-Identifier: GPL-2.0-only
//! The `report` subcommand: the markdown tables of the trace-replay
//! experiment (tests/experiment.sh) from its result records and the
//! scheduler's stats replies, and the design's goals checked against them.
//!
//! Every ratio is against the solo median of the same role, measured in the
//! same VM boot. The report measures and states; it never fails on a goal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::stats;

/// Arms in the order of the experiment design.
pub const ARMS: [&str; 5] = ["NoLimit", "Static", "HighOnly", "AgentCG-CPU", "AgentCG"];
/// Goal of the design: HIGH's completion against its solo time.
pub const HIGH_GOAL_X: f64 = 1.10;
/// Goal of the design with swap: LOW's completion against its solo time.
pub const LOW_GOAL_X: f64 = 2.5;
/// Goal of the design: in-kernel reaction time, microseconds.
pub const REACTION_GOAL_US: f64 = 10_000.0;

/// memory.events counter deltas of one session over one run.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Events {
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
}

/// One session run (an EXP-RECORD line: the replay report plus the
/// harness's fields). Fields a killed run cannot report are absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Record {
    pub arm: String,
    pub role: String,
    pub rep: u32,
    pub trace: Option<String>,
    pub oom_kills: u64,
    pub killed_by: Option<String>,
    pub timed_out: bool,
    pub completion_s: Option<f64>,
    pub alloc_lat_p50_us: Option<f64>,
    pub alloc_lat_p99_us: Option<f64>,
    pub cpu_s: Option<f64>,
    pub expected_s: Option<f64>,
    pub speed: Option<f64>,
    pub trace_peak_s: Option<f64>,
    pub window_start_s: Option<f64>,
    pub peak_replayed: Option<bool>,
    pub peak_mem_bytes: Option<u64>,
    pub events: Option<Events>,
    /// The shared parent's own memory.events deltas (on HIGH's record).
    pub parent_events: Option<Events>,
}

impl Record {
    fn completed(&self) -> bool {
        self.completion_s.is_some() && !self.timed_out && self.killed_by.is_none()
    }
}

/// The scheduler's counters after one AgentCG run (an EXP-SCHED line).
#[derive(Debug, Clone, Default)]
pub struct Sched {
    pub arm: String,
    pub rep: u32,
    /// The `mem_arbitration` counters (empty without --mem-arbitration).
    pub arb: BTreeMap<String, f64>,
    /// Thrash penalty entries summed over all cgroups.
    pub penalties: u64,
}

fn walk<'a>(v: &'a Value, f: &mut dyn FnMut(&str, &'a Value)) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                f(k, x);
                walk(x, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
        _ => {}
    }
}

/// Numbers that scx_stats may render as strings.
fn as_num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Interpret one EXP-SCHED object: `{"arm", "rep", "reply": <stats reply>}`.
pub fn parse_sched(v: &Value) -> Option<Sched> {
    let arm = v.get("arm")?.as_str()?.to_string();
    let rep = v.get("rep")?.as_u64()? as u32;
    let mut s = Sched {
        arm,
        rep,
        ..Default::default()
    };
    if let Some(reply) = v.get("reply") {
        walk(reply, &mut |k, x| match k {
            "mem_arbitration" => {
                if let Some(m) = x.as_object() {
                    for (name, n) in m {
                        if let Some(n) = as_num(n) {
                            s.arb.insert(name.clone(), n);
                        }
                    }
                }
            }
            "penalty_entries" => s.penalties += as_num(x).unwrap_or(0.0) as u64,
            _ => {}
        });
    }
    Some(s)
}

fn read_lines<T>(path: &Path, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse(line) {
            Some(x) => out.push(x),
            None => eprintln!(
                "agentcg-replay: warning: {}:{}: not a usable record, skipped",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

pub fn read_records(path: &Path) -> Result<Vec<Record>, String> {
    read_lines(path, |l| serde_json::from_str::<Record>(l).ok())
}

pub fn read_sched(path: &Path) -> Result<Vec<Sched>, String> {
    read_lines(path, |l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .as_ref()
            .and_then(parse_sched)
    })
}

/// The experiment's configuration, for the goals that depend on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    pub swap: bool,
}

fn of<'a>(recs: &'a [Record], arm: &'a str, role: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
    recs.iter().filter(move |r| r.arm == arm && r.role == role)
}

fn median(v: &[f64]) -> Option<f64> {
    stats::quantile(v, 0.5)
}

/// Per-repetition ratios of a role's completions to its solo median (runs
/// that did not complete have none).
pub fn ratios(recs: &[Record], arm: &str, role: &str) -> Vec<f64> {
    let solo: Vec<f64> = of(recs, "Solo", role).filter_map(|r| r.completion_s).collect();
    let Some(s) = median(&solo).filter(|s| *s > 0.0) else {
        return Vec::new();
    };
    of(recs, arm, role)
        .filter(|r| r.completed())
        .filter_map(|r| r.completion_s.map(|c| c / s))
        .collect()
}

/// How the runs of a role in an arm ended.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub runs: usize,
    pub completed: usize,
    pub oom_killed: usize,
    pub arbitration_killed: usize,
    pub other_killed: usize,
    pub timed_out: usize,
}

pub fn outcome(recs: &[Record], arm: &str, role: &str) -> Outcome {
    let mut o = Outcome::default();
    for r in of(recs, arm, role) {
        o.runs += 1;
        if r.timed_out {
            o.timed_out += 1;
        } else if r.completed() {
            o.completed += 1;
        } else {
            match r.killed_by.as_deref() {
                Some("arbitration") => o.arbitration_killed += 1,
                Some("oom") => o.oom_killed += 1,
                _ => o.other_killed += 1,
            }
        }
    }
    o
}

fn fmt_outcome(o: &Outcome) -> String {
    let mut s = format!("{}/{}", o.completed, o.runs);
    let mut extra = Vec::new();
    for (n, what) in [
        (o.oom_killed, "OOM"),
        (o.arbitration_killed, "arb. kill"),
        (o.other_killed, "other kill"),
        (o.timed_out, "timed out"),
    ] {
        if n > 0 {
            extra.push(format!("{n} {what}"));
        }
    }
    if !extra.is_empty() {
        let _ = write!(s, " ({})", extra.join(", "));
    }
    s
}

/// Kernel OOM kills (memory.events oom_kill deltas) of an arm, all sessions.
pub fn kernel_oom_kills(recs: &[Record], arm: &str) -> u64 {
    recs.iter().filter(|r| r.arm == arm).map(|r| r.oom_kills).sum()
}

/// Arms present, in design order.
pub fn arms(recs: &[Record]) -> Vec<&'static str> {
    ARMS.iter()
        .copied()
        .filter(|a| recs.iter().any(|r| r.arm == *a))
        .collect()
}

fn completion_table(recs: &[Record]) -> String {
    let solo = |role| {
        let v: Vec<f64> = of(recs, "Solo", role).filter_map(|r| r.completion_s).collect();
        median(&v).map_or("-".into(), |m| format!("{m:.1} s"))
    };
    let mut s = format!(
        "| arm | HIGH completed | HIGH x solo ({}) | LOW completed | LOW x solo ({}) | kernel OOM kills |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        solo("HIGH"),
        solo("LOW")
    );
    for a in arms(recs) {
        let _ = writeln!(
            s,
            "| {a} | {} | {} | {} | {} | {} |",
            fmt_outcome(&outcome(recs, a, "HIGH")),
            stats::median_range(&ratios(recs, a, "HIGH"), 2),
            fmt_outcome(&outcome(recs, a, "LOW")),
            stats::median_range(&ratios(recs, a, "LOW"), 2),
            kernel_oom_kills(recs, a)
        );
    }
    s.push_str(
        "\nx solo: completion over the solo median of the same role, median [min-max] over the \
         runs that completed. OOM: the kernel's OOM killer; arb. kill: --mem-arbitration's \
         cgroup.kill with its logged reason.\n",
    );
    s
}

/// Sum of a memory.events counter over an arm's sessions, per repetition.
fn events_per_rep(recs: &[Record], arm: &str, f: fn(&Events) -> u64) -> Vec<f64> {
    let mut by_rep: BTreeMap<u32, u64> = BTreeMap::new();
    for r in recs.iter().filter(|r| r.arm == arm) {
        if let Some(e) = &r.events {
            *by_rep.entry(r.rep).or_default() += f(e);
        }
    }
    by_rep.values().map(|&v| v as f64).collect()
}

/// A counter of the shared parent's memory.events, per repetition.
fn parent_events(recs: &[Record], arm: &str, f: fn(&Events) -> u64) -> Vec<f64> {
    recs.iter()
        .filter(|r| r.arm == arm)
        .filter_map(|r| r.parent_events.as_ref())
        .map(|e| f(e) as f64)
        .collect()
}

fn pressure_table(recs: &[Record]) -> String {
    let mut s = String::from(
        "| arm | sessions' memory.events high / max / oom | parent's max / oom / oom_kill | HIGH alloc p50 (us) | HIGH alloc p99 (us) | HIGH share of the sessions' CPU |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for a in arms(recs) {
        let lat = |f: fn(&Record) -> Option<f64>| {
            let v: Vec<f64> = of(recs, a, "HIGH").filter(|r| r.completed()).filter_map(f).collect();
            stats::median_range(&v, 0)
        };
        let ev = |f: fn(&Events) -> u64| stats::median_range(&events_per_rep(recs, a, f), 0);
        let pev = |f: fn(&Events) -> u64| stats::median_range(&parent_events(recs, a, f), 0);
        let all: f64 = recs.iter().filter(|r| r.arm == a).filter_map(|r| r.cpu_s).sum();
        let high: f64 = of(recs, a, "HIGH").filter_map(|r| r.cpu_s).sum();
        let share = if all > 0.0 {
            format!("{:.1} % of {all:.0} s", 100.0 * high / all)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {a} | {} / {} / {} | {} / {} / {} | {} | {} | {share} |",
            ev(|e| e.high),
            ev(|e| e.max),
            ev(|e| e.oom),
            pev(|e| e.max),
            pev(|e| e.oom),
            pev(|e| e.oom_kill),
            lat(|r| r.alloc_lat_p50_us),
            lat(|r| r.alloc_lat_p99_us),
        );
    }
    s.push_str(
        "\nmemory.events: counter increases during the run (the sessions' summed), per repetition, \
         median [min-max]; the parent holds the shared memory.max. Latency: each completed HIGH run's chunk allocation percentile, median \
         [min-max] over runs. CPU: seconds the replayers used (runs that could report).\n",
    );
    s
}

fn sched_table(sched: &[Sched]) -> String {
    const COLS: [&str; 12] = [
        "holds",
        "frozen",
        "thawed",
        "reclaims",
        "reclaimed_mb",
        "killed",
        "errors",
        "reactions",
        "reaction_us_median",
        "reaction_us_max",
        "stop_us_median",
        "stop_us_max",
    ];
    let mut s = String::from("| arm | rep |");
    for c in COLS {
        let _ = write!(s, " {c} |");
    }
    s.push_str(" thrash penalties |\n|---|---|");
    s.push_str(&"---|".repeat(COLS.len() + 1));
    s.push('\n');
    for x in sched {
        let _ = write!(s, "| {} | {} |", x.arm, x.rep);
        for c in COLS {
            match x.arb.get(c) {
                Some(v) => {
                    let _ = write!(s, " {v:.0} |");
                }
                None => s.push_str(" - |"),
            }
        }
        let _ = writeln!(s, " {} |", x.penalties);
    }
    s
}

fn window_table(recs: &[Record]) -> String {
    // one row per (role, trace): the first record that reports the window
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut s = String::from(
        "| role | trace | trace peak (MB) at trace s | replayed window (trace s) | peak replayed |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for r in recs {
        let (Some(t), Some(peak_t), Some(exp), Some(speed)) =
            (&r.trace, r.trace_peak_s, r.expected_s, r.speed)
        else {
            continue;
        };
        let key = (r.role.clone(), t.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let start = r.window_start_s.unwrap_or(0.0);
        let peak_mb = recs
            .iter()
            .filter(|x| x.arm == "Solo" && x.trace.as_deref() == Some(t))
            .filter_map(|x| x.peak_mem_bytes)
            .max()
            .map_or("-".into(), |b| format!("{:.0}", b as f64 / 1e6));
        let _ = writeln!(
            s,
            "| {} | `{t}` | {peak_mb} at {peak_t:.1} s | {start:.1}-{:.1} | {} |",
            r.role,
            start + exp * speed,
            match r.peak_replayed {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "?",
            }
        );
    }
    s.push_str("\nPeak MB: the largest footprint a solo run reached (the replayed window).\n");
    s
}

/// One goal of the design, measured.
#[derive(Debug, PartialEq)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

fn max_of(v: &[f64]) -> Option<f64> {
    stats::sorted(v).last().copied()
}

/// The design's goals for AgentCG in this configuration.
pub fn goals(recs: &[Record], sched: &[Sched], setup: Setup) -> Vec<Goal> {
    let mut g = Vec::new();
    let a = "AgentCG";
    let high = outcome(recs, a, "HIGH");
    let low = outcome(recs, a, "LOW");
    if high.runs == 0 {
        return g;
    }
    let hx = ratios(recs, a, "HIGH");
    let hmax = max_of(&hx);
    g.push(Goal {
        goal: format!("HIGH <= {HIGH_GOAL_X:.2}x solo in every repetition, never killed"),
        measured: format!(
            "{} completed, x solo {}",
            fmt_outcome(&high),
            stats::median_range(&hx, 2)
        ),
        met: high.completed == high.runs && hmax.is_some_and(|m| m <= HIGH_GOAL_X),
    });
    let ooms = kernel_oom_kills(recs, a);
    if setup.swap {
        // kills only: a run that timed out did not complete but was not killed
        let killed = |o: &Outcome| (o.arbitration_killed + o.other_killed) as u64;
        let kills = ooms + killed(&low) + killed(&high);
        g.push(Goal {
            goal: "every session completes in every repetition, 0 kills of any kind".into(),
            measured: format!(
                "HIGH {}, LOW {}, {ooms} kernel OOM kills",
                fmt_outcome(&high),
                fmt_outcome(&low)
            ),
            met: high.completed == high.runs && low.completed == low.runs && kills == 0,
        });
        let lx = ratios(recs, a, "LOW");
        g.push(Goal {
            goal: format!("LOW <= {LOW_GOAL_X:.1}x solo"),
            measured: format!("x solo {} ({} completed)", stats::median_range(&lx, 2), low.completed),
            met: low.completed == low.runs && max_of(&lx).is_some_and(|m| m <= LOW_GOAL_X),
        });
    } else {
        g.push(Goal {
            goal: "the kernel's OOM killer fires 0 times".into(),
            measured: format!("{ooms} kernel OOM kills"),
            met: ooms == 0,
        });
        let reps: Vec<u32> = of(recs, a, "HIGH").map(|r| r.rep).collect();
        let with_low = reps
            .iter()
            .filter(|&&rep| of(recs, a, "LOW").any(|r| r.rep == rep && r.completed()))
            .count();
        g.push(Goal {
            goal: "at least one LOW completes in every repetition".into(),
            measured: format!("{with_low} of {} repetitions", reps.len()),
            met: with_low == reps.len(),
        });
        let not_ours = low.oom_killed + low.other_killed + low.timed_out;
        g.push(Goal {
            goal: "every LOW that does not complete is scx_agentcg's logged decision".into(),
            measured: format!(
                "{} arbitration kills, {not_ours} ended otherwise",
                low.arbitration_killed
            ),
            met: not_ours == 0,
        });
    }
    let react: Vec<f64> = sched
        .iter()
        .filter(|s| s.arm == a && s.arb.get("reactions").is_some_and(|n| *n > 0.0))
        .filter_map(|s| s.arb.get("reaction_us_max").copied())
        .collect();
    if !react.is_empty() {
        g.push(Goal {
            goal: format!(
                "in-kernel reaction <= {:.0} ms (guard crossing to the held session's last growth)",
                REACTION_GOAL_US / 1000.0
            ),
            measured: format!("per-run maximum {} us", stats::median_range(&react, 0)),
            met: max_of(&react).is_some_and(|m| m <= REACTION_GOAL_US),
        });
    }
    g
}

fn goal_table(g: &[Goal]) -> String {
    let mut s = String::from("| goal (AgentCG) | measured | met |\n| --- | --- | --- |\n");
    for x in g {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            x.goal,
            x.measured,
            if x.met { "yes" } else { "**no**" }
        );
    }
    s
}

/// The whole report, markdown.
pub fn render(recs: &[Record], sched: &[Sched], setup: Setup) -> String {
    let mut s = String::new();
    s.push_str("### Goals\n\n");
    s.push_str(&goal_table(&goals(recs, sched, setup)));
    s.push_str("\n### Completion\n\n");
    s.push_str(&completion_table(recs));
    s.push_str("\n### Memory pressure, HIGH's latency and CPU\n\n");
    s.push_str(&pressure_table(recs));
    s.push_str("\n### Replayed windows\n\n");
    s.push_str(&window_table(recs));
    if !sched.is_empty() {
        s.push_str(
            "\n### scx_agentcg counters per run\n\n\
             --mem-arbitration's counters (empty for AgentCG-CPU); reaction: guard crossing to the \
             held session's last growth (first hold of an episode), stop: hold to last growth, \
             microseconds.\n\n",
        );
        s.push_str(&sched_table(sched));
    }
    s
}

/// `report`: read the records (and stats replies), print the markdown.
pub fn report(results: &Path, sched: Option<&Path>, setup: Setup) -> Result<(), String> {
    let recs = read_records(results)?;
    if recs.is_empty() {
        return Err(format!("{}: no result records", results.display()));
    }
    let sched = match sched {
        Some(p) => read_sched(p)?,
        None => Vec::new(),
    };
    print!("{}", render(&recs, &sched, setup));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(arm: &str, role: &str, rep: u32, c: Option<f64>) -> Record {
        Record {
            arm: arm.into(),
            role: role.into(),
            rep,
            completion_s: c,
            killed_by: if c.is_none() { Some("oom".into()) } else { None },
            oom_kills: u64::from(c.is_none()),
            ..Default::default()
        }
    }

    fn sample() -> Vec<Record> {
        let mut v = vec![
            rec("Solo", "HIGH", 1, Some(10.0)),
            rec("Solo", "HIGH", 2, Some(10.0)),
            rec("Solo", "LOW", 1, Some(20.0)),
        ];
        for rep in 1..=2 {
            v.push(rec("AgentCG", "HIGH", rep, Some(10.5)));
            v.push(rec("AgentCG", "LOW", rep, Some(30.0)));
            let mut k = rec("AgentCG", "LOW", rep, None);
            k.killed_by = Some("arbitration".into());
            k.oom_kills = 0;
            v.push(k);
            v.push(rec("NoLimit", "HIGH", rep, None));
        }
        v
    }

    #[test]
    fn ratios_and_outcomes() {
        let r = sample();
        assert_eq!(ratios(&r, "AgentCG", "HIGH"), vec![1.05, 1.05]);
        assert_eq!(ratios(&r, "AgentCG", "LOW"), vec![1.5, 1.5]);
        let o = outcome(&r, "AgentCG", "LOW");
        assert_eq!((o.runs, o.completed, o.arbitration_killed), (4, 2, 2));
        assert_eq!(kernel_oom_kills(&r, "NoLimit"), 2);
        assert_eq!(kernel_oom_kills(&r, "AgentCG"), 0);
        assert_eq!(arms(&r), vec!["NoLimit", "AgentCG"]);
    }

    #[test]
    fn no_swap_goals_met_and_not() {
        let mut r = sample();
        let g = goals(&r, &[], Setup { swap: false });
        assert_eq!(g.len(), 4);
        assert!(g.iter().all(|x| x.met), "{g:?}");
        // one slow HIGH breaks "every repetition"
        r.push(rec("AgentCG", "HIGH", 3, Some(11.5)));
        let g = goals(&r, &[], Setup { swap: false });
        assert!(!g[0].met);
        // with swap an arbitration kill is a kill
        let g = goals(&sample(), &[], Setup { swap: true });
        assert!(!g[1].met);
        assert!(g[2].met == false, "LOW did not all complete");
    }

    #[test]
    fn reaction_goal_from_stats() {
        let v = json!({"arm": "AgentCG", "rep": 1, "reply": {"errno": 0, "args": {"resp": {
            "mem_arbitration": {"reactions": "2", "reaction_us_max": 12000, "holds": 3},
            "cgroups": [{"penalty_entries": 2}, {"penalty_entries": 3}]}}}});
        let s = parse_sched(&v).unwrap();
        assert_eq!(s.arb["holds"], 3.0);
        assert_eq!(s.arb["reactions"], 2.0);
        assert_eq!(s.penalties, 5);
        let g = goals(&sample(), &[s.clone()], Setup { swap: false });
        let last = g.last().unwrap();
        assert!(last.goal.contains("reaction") && !last.met);
        let mut fast = s;
        fast.arb.insert("reaction_us_max".into(), 800.0);
        assert!(goals(&sample(), &[fast], Setup { swap: false }).last().unwrap().met);
    }

    #[test]
    fn records_parse_leniently() {
        let line = r#"{"arm":"AgentCG","role":"LOW","session":"low1","rep":2,"oom_kills":0,"exit":137,"killed_by":"arbitration","oom_killed":true,"events":{"high":0,"max":7,"oom":1,"oom_kill":0}}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert!(!r.completed());
        assert_eq!(r.events.unwrap().max, 7);
        let md = render(&sample(), &[], Setup::default());
        assert!(md.contains("| AgentCG | 2/2 | 1.05 [1.05-1.05] | 2/4 (2 arb. kill) | 1.50 [1.50-1.50] | 0 |"), "{md}");
    }
}
