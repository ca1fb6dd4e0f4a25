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
//! background has none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

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
}

impl Profile {
    fn builtin(class: StepClass) -> Self {
        let (boost, credit, refill) = class.boost_defaults();
        Profile {
            name: class.as_str().to_string(),
            class,
            weight: 1.0,
            slice_us: None,
            wakeup_boost: boost,
            burst_credit_ms: credit,
            burst_refill_pct: refill,
            cpus: CpuShare::Pct(100),
        }
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
}

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
            profiles.push(prof);
        }

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
        Ok(Policy { profiles, selectors, source: None })
    }

    #[cfg(test)]
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
}
