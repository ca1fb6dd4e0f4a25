// SPDX-License-Identifier: GPL-2.0-only
//! Loading recorded agent traces: `resources.json` (memory/CPU samples) and
//! `tool_calls.json` (step boundaries).
//!
//! Everything is parsed leniently from `serde_json::Value`: a sample that
//! cannot be used is skipped with a warning and counted, never a panic.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Samples with a CPU percentage above this (256 CPUs) are treated as
/// malformed: replaying them would start an absurd number of threads.
pub const MAX_CPU_PERCENT: f64 = 25_600.0;

/// How many individual warnings are printed before the rest are only counted.
const MAX_WARNINGS_PRINTED: usize = 20;

/// One usable resource sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix time of the sample, seconds.
    pub epoch: f64,
    /// Seconds since the first usable sample.
    pub t: f64,
    /// Container memory usage, bytes.
    pub mem_bytes: u64,
    /// CPU usage in percent of one CPU (115.0 = 1.15 CPUs).
    pub cpu_pct: f64,
}

/// One tool call (an agent step).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// 1-based position in start order.
    pub seq: usize,
    pub tool: String,
    /// Unix time the call started, seconds.
    pub start: f64,
    /// Unix time the call ended, if recorded (and not before `start`).
    pub end: Option<f64>,
}

/// A loaded trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// `<parent folder>/<task folder>`, e.g. `haiku/dask__dask-2205`.
    pub name: String,
    pub dir: PathBuf,
    pub samples: Vec<Sample>,
    /// Samples in the file, usable or not.
    pub samples_in_file: usize,
    /// Samples skipped as malformed.
    pub malformed: usize,
    /// None when the trace has no tool_calls.json.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool-call entries skipped as malformed.
    pub tool_calls_skipped: usize,
}

impl Trace {
    /// Seconds from the first to the last usable sample.
    pub fn duration(&self) -> f64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) => b.epoch - a.epoch,
            _ => 0.0,
        }
    }

    pub fn peak_mem(&self) -> u64 {
        self.samples.iter().map(|s| s.mem_bytes).max().unwrap_or(0)
    }

    /// Trace time (seconds since the first sample) of the first sample at
    /// the peak memory; 0 for an empty trace.
    pub fn peak_t(&self) -> f64 {
        let peak = self.peak_mem();
        self.samples
            .iter()
            .find(|s| s.mem_bytes == peak)
            .map_or(0.0, |s| s.t)
    }

    /// The part of the trace from trace time `start` on, re-based so that
    /// its first sample is at t = 0 (epochs unchanged, so tool calls that
    /// began before `start` are clamped to its start by `step_events`).
    pub fn from(&self, start: f64) -> Trace {
        let kept: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.t >= start - 1e-9)
            .collect();
        let base = kept.first().map_or(0.0, |s| s.t);
        Trace {
            samples: kept
                .into_iter()
                .map(|s| Sample {
                    t: s.t - base,
                    ..s.clone()
                })
                .collect(),
            ..self.clone()
        }
    }

    /// Mean and max CPU percent over the usable samples.
    pub fn cpu_mean_max(&self) -> (f64, f64) {
        if self.samples.is_empty() {
            return (0.0, 0.0);
        }
        let sum: f64 = self.samples.iter().map(|s| s.cpu_pct).sum();
        let max = self.samples.iter().map(|s| s.cpu_pct).fold(0.0, f64::max);
        (sum / self.samples.len() as f64, max)
    }
}

/// Prints warnings to stderr, the first few in full, then only counts them.
pub struct Warner {
    context: String,
    printed: usize,
    total: usize,
    quiet: bool,
}

impl Warner {
    pub fn new(context: impl Into<String>) -> Self {
        Warner {
            context: context.into(),
            printed: 0,
            total: 0,
            quiet: false,
        }
    }

    /// A warner that only counts (for tests).
    #[cfg(test)]
    pub fn quiet() -> Self {
        Warner {
            context: String::new(),
            printed: 0,
            total: 0,
            quiet: true,
        }
    }

    pub fn warn(&mut self, msg: impl AsRef<str>) {
        self.total += 1;
        if self.quiet {
            return;
        }
        if self.printed < MAX_WARNINGS_PRINTED {
            eprintln!(
                "agentcg-replay: warning: {}: {}",
                self.context,
                msg.as_ref()
            );
            self.printed += 1;
        } else if self.printed == MAX_WARNINGS_PRINTED {
            eprintln!(
                "agentcg-replay: warning: {}: further warnings are only counted",
                self.context
            );
            self.printed += 1;
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Print the total if some warnings were not shown one by one.
    pub fn finish(&self) {
        if !self.quiet && self.total > MAX_WARNINGS_PRINTED {
            eprintln!(
                "agentcg-replay: warning: {}: {} warnings in total",
                self.context, self.total
            );
        }
    }
}

/// Parse the usage part of a podman-style memory string, e.g.
/// `"184.7MB / 16.19GB"` -> 184_700_000 bytes. Decimal units (kB, MB, GB, TB)
/// are powers of 1000, binary ones (KiB, MiB, GiB, TiB) powers of 1024; `B`
/// is bytes. Units are matched case-insensitively. Negative, non-finite or
/// unit-less numbers are rejected.
pub fn parse_mem(s: &str) -> Option<u64> {
    let usage = s.split('/').next()?.trim();
    let split = usage.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = usage.split_at(split);
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 / 2.0 {
        return None;
    }
    Some(bytes.round() as u64)
}

/// Parse a CPU percentage: a string like `"115.74%"` (the `%` is optional) or
/// a JSON number. Must be finite, >= 0 and at most [`MAX_CPU_PERCENT`].
pub fn parse_cpu(v: &Value) -> Option<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let s = s.trim();
            let s = s.strip_suffix('%').unwrap_or(s).trim();
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return None;
            }
            s.parse::<f64>().ok()?
        }
        _ => return None,
    };
    if x.is_finite() && (0.0..=MAX_CPU_PERCENT).contains(&x) {
        Some(x)
    } else {
        None
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &str, n: usize) -> Option<i64> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Parse an ISO 8601 date-time to Unix seconds:
/// `YYYY-MM-DD(T| )HH:MM:SS[.frac][Z|±HH:MM|±HHMM|±HH]`.
/// A time without a zone is taken as UTC.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.len() < 19 || !s.is_char_boundary(10) || !s.is_char_boundary(19) {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let sep = rest.as_bytes()[0];
    if sep != b'T' && sep != b't' && sep != b' ' {
        return None;
    }
    let (time, tail) = rest[1..].split_at(8);
    let year = digits(&date[0..4], 4)?;
    let month = digits(&date[5..7], 2)?;
    let day = digits(&date[8..10], 2)?;
    if &date[4..5] != "-" || &date[7..8] != "-" {
        return None;
    }
    let hour = digits(&time[0..2], 2)?;
    let min = digits(&time[3..5], 2)?;
    let sec = digits(&time[6..8], 2)?;
    if &time[2..3] != ":" || &time[5..6] != ":" {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Fraction.
    let mut tail = tail;
    let mut frac = 0.0;
    if let Some(t) = tail.strip_prefix('.').or_else(|| tail.strip_prefix(',')) {
        let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if n == 0 {
            return None;
        }
        frac = format!("0.{}", &t[..n]).parse().ok()?;
        tail = &t[n..];
    }
    // Zone.
    let offset_s: i64 = match tail {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match tail.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = &tail[1..];
            let (h, m) = match z.len() {
                2 => (digits(z, 2)?, 0),
                4 => (digits(&z[0..2], 2)?, digits(&z[2..4], 2)?),
                5 if &z[2..3] == ":" => (digits(&z[0..2], 2)?, digits(&z[3..5], 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    Some(secs as f64 + frac)
}

/// Parse the text of a resources.json. Returns the usable samples (with `t`
/// relative to the first usable one), the number of sample entries in the
/// file and the number skipped. Errors only when the document itself is
/// unusable (not JSON, no `samples` array).
pub fn parse_resources(text: &str, w: &mut Warner) -> Result<(Vec<Sample>, usize), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let arr = match &doc {
        Value::Object(o) => match o.get("samples") {
            Some(Value::Array(a)) => a,
            _ => return Err("no \"samples\" array".into()),
        },
        // Tolerate a bare array of samples.
        Value::Array(a) => a,
        _ => return Err("no \"samples\" array".into()),
    };
    let mut out: Vec<Sample> = Vec::with_capacity(arr.len());
    for (i, v) in arr.iter().enumerate() {
        match parse_sample(v) {
            Err(why) => w.warn(format!("sample {i} skipped: {why}")),
            Ok((epoch, mem_bytes, cpu_pct)) => {
                if let Some(prev) = out.last() {
                    if epoch <= prev.epoch {
                        w.warn(format!(
                            "sample {i} skipped: epoch {epoch} is not after the previous sample's {}",
                            prev.epoch
                        ));
                        continue;
                    }
                }
                let t = out.first().map_or(0.0, |f| epoch - f.epoch);
                out.push(Sample {
                    epoch,
                    t,
                    mem_bytes,
                    cpu_pct,
                });
            }
        }
    }
    Ok((out, arr.len()))
}

fn parse_sample(v: &Value) -> Result<(f64, u64, f64), String> {
    let o = v.as_object().ok_or("not an object")?;
    let epoch = match o.get("epoch") {
        None => return Err("no epoch".into()),
        Some(Value::Number(n)) => n.as_f64().ok_or("bad epoch")?,
        Some(other) => return Err(format!("epoch is not a number: {}", short(other))),
    };
    if !epoch.is_finite() || epoch <= 0.0 {
        return Err(format!("bad epoch {epoch}"));
    }
    let mem = match o.get("mem_usage") {
        None => return Err("no mem_usage".into()),
        Some(Value::String(s)) => parse_mem(s).ok_or_else(|| format!("bad mem_usage {s:?}"))?,
        Some(other) => return Err(format!("mem_usage is not a string: {}", short(other))),
    };
    let cpu = match o.get("cpu_percent") {
        None => return Err("no cpu_percent".into()),
        Some(v) => parse_cpu(v).ok_or_else(|| format!("bad cpu_percent {}", short(v)))?,
    };
    Ok((epoch, mem, cpu))
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 40 {
        let mut cut = 40;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Parse the text of a tool_calls.json. Entries without a usable start
/// timestamp are skipped (and counted); an unusable or earlier-than-start
/// `end_timestamp` is dropped with a warning. The result is sorted by start
/// and numbered from 1 in that order. Also returns how many entries were
/// skipped entirely.
pub fn parse_tool_calls(text: &str, w: &mut Warner) -> Result<(Vec<ToolCall>, usize), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let arr = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("tool_calls") {
            Some(Value::Array(a)) => a,
            _ => return Err("not an array of tool calls".into()),
        },
        _ => return Err("not an array of tool calls".into()),
    };
    let mut calls = Vec::with_capacity(arr.len());
    let mut skipped = 0;
    for (i, v) in arr.iter().enumerate() {
        let Some(o) = v.as_object() else {
            w.warn(format!("tool call {i} skipped: not an object"));
            skipped += 1;
            continue;
        };
        let start = match o.get("timestamp") {
            Some(Value::String(s)) => parse_iso8601(s),
            Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite() && *x > 0.0),
            _ => None,
        };
        let Some(start) = start else {
            w.warn(format!("tool call {i} skipped: no usable timestamp"));
            skipped += 1;
            continue;
        };
        let tool = o
            .get("tool")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let end = match o.get("end_timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match parse_iso8601(s) {
                Some(e) if e >= start => Some(e),
                _ => {
                    w.warn(format!("tool call {i}: end_timestamp {s:?} ignored"));
                    None
                }
            },
            Some(other) => {
                w.warn(format!(
                    "tool call {i}: end_timestamp {} ignored",
                    short(other)
                ));
                None
            }
        };
        calls.push(ToolCall {
            seq: 0,
            tool,
            start,
            end,
        });
    }
    calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    for (i, c) in calls.iter_mut().enumerate() {
        c.seq = i + 1;
    }
    Ok((calls, skipped))
}

fn trace_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let task = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match dir.parent().and_then(Path::file_name) {
        Some(p) => format!("{}/{}", p.to_string_lossy(), task),
        None => task,
    }
}

/// Load a trace folder. Fails when resources.json is missing or unusable or
/// has no usable sample; a missing tool_calls.json is not an error, an
/// unreadable one is a warning (the trace then has no steps).
pub fn load(dir: &Path) -> Result<Trace, String> {
    let res = dir.join("resources.json");
    let text = fs::read_to_string(&res).map_err(|e| format!("{}: {e}", res.display()))?;
    let mut w = Warner::new(res.display().to_string());
    let (samples, samples_in_file) =
        parse_resources(&text, &mut w).map_err(|e| format!("{}: {e}", res.display()))?;
    w.finish();
    if samples.is_empty() {
        return Err(format!("{}: no usable sample", res.display()));
    }
    let malformed = w.total();

    let tc = dir.join("tool_calls.json");
    let mut tw = Warner::new(tc.display().to_string());
    let tool_calls = match fs::read_to_string(&tc) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!(
                "agentcg-replay: warning: {}: {e}; replaying without steps",
                tc.display()
            );
            None
        }
        Ok(text) => match parse_tool_calls(&text, &mut tw) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "agentcg-replay: warning: {}: {e}; replaying without steps",
                    tc.display()
                );
                None
            }
        },
    };
    tw.finish();
    let (tool_calls, tool_calls_skipped) = match tool_calls {
        Some((c, skipped)) => (Some(c), skipped),
        None => (None, 0),
    };
    Ok(Trace {
        name: trace_name(dir),
        dir: dir.to_path_buf(),
        samples,
        samples_in_file,
        malformed,
        tool_calls,
        tool_calls_skipped,
    })
}

/// A step event on the replay timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Enter the step of tool call `seq` (cgroup `step_<seq>_<tool>`).
    Enter { seq: usize, tool: String },
    /// Leave the step of tool call `seq` (if still in it) for `step_idle`.
    Leave { seq: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// Trace seconds since the first sample (unscaled).
    pub t: f64,
    pub kind: StepKind,
}

/// Turn tool calls into enter/leave events on the trace timeline (seconds
/// since `first_epoch`, not yet divided by the speed). A call without an end
/// lasts until the next call starts (or the trace ends). Calls that start
/// before the first sample are clamped to 0. Leave events sort before enter
/// events at the same time.
pub fn step_events(calls: &[ToolCall], first_epoch: f64) -> Vec<StepEvent> {
    let mut ev = Vec::with_capacity(calls.len() * 2);
    for c in calls {
        let t = (c.start - first_epoch).max(0.0);
        ev.push(StepEvent {
            t,
            kind: StepKind::Enter {
                seq: c.seq,
                tool: c.tool.clone(),
            },
        });
        if let Some(e) = c.end {
            ev.push(StepEvent {
                t: (e - first_epoch).max(t),
                kind: StepKind::Leave { seq: c.seq },
            });
        }
    }
    ev.sort_by(|a, b| {
        let rank = |k: &StepKind| match k {
            StepKind::Leave { .. } => 0,
            StepKind::Enter { .. } => 1,
        };
        a.t.total_cmp(&b.t).then(rank(&a.kind).cmp(&rank(&b.kind)))
    });
    ev
}

/// Where a window of `len` trace seconds starts so that it holds the peak:
/// the peak at three quarters of the window (memory builds up before it and
/// the trace goes on after), clamped to the trace. 0 when the whole trace
/// fits.
pub fn peak_window_start(duration: f64, peak_t: f64, len: f64) -> f64 {
    if len >= duration {
        return 0.0;
    }
    (peak_t - 0.75 * len).clamp(0.0, duration - len)
}

/// Wall-clock offset (seconds since replay start, on schedule) of a trace
/// time at the given speed.
pub fn scaled(t: f64, speed: f64) -> f64 {
    t / speed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peak_window() {
        // the whole trace fits: start at 0
        assert_eq!(peak_window_start(70.0, 61.0, 80.0), 0.0);
        // the peak at three quarters of the window
        assert_eq!(peak_window_start(360.0, 219.0, 80.0), 159.0);
        // clamped at both ends
        assert_eq!(peak_window_start(360.0, 20.0, 80.0), 0.0);
        assert_eq!(peak_window_start(360.0, 355.0, 80.0), 280.0);
    }

    #[test]
    fn trace_from_rebases() {
        let mk = |t: f64, m: u64| Sample {
            epoch: 500.0 + t,
            t,
            mem_bytes: m,
            cpu_pct: 10.0,
        };
        let tr = Trace {
            name: "x/y".into(),
            dir: PathBuf::from("/x"),
            samples: vec![mk(0.0, 1), mk(1.0, 5), mk(2.0, 9), mk(3.0, 2)],
            samples_in_file: 4,
            malformed: 0,
            tool_calls: None,
            tool_calls_skipped: 0,
        };
        assert_eq!(tr.peak_t(), 2.0);
        let w = tr.from(0.5);
        assert_eq!(w.samples.len(), 3);
        assert_eq!((w.samples[0].t, w.samples[0].epoch), (0.0, 501.0));
        assert_eq!(w.peak_t(), 1.0);
    }

    #[test]
    fn mem_units() {
        assert_eq!(parse_mem("184.7MB / 16.19GB"), Some(184_700_000));
        assert_eq!(
            parse_mem("1.2GiB / 31.2GiB"),
            Some((1.2f64 * 1073741824.0).round() as u64)
        );
        assert_eq!(parse_mem("512kB / 2GB"), Some(512_000));
        assert_eq!(parse_mem("512KiB / 2GB"), Some(524_288));
        assert_eq!(parse_mem("3.5MiB/1GiB"), Some(3_670_016));
        assert_eq!(parse_mem("2GB / 16GB"), Some(2_000_000_000));
        assert_eq!(parse_mem("0B / 16GB"), Some(0));
        assert_eq!(parse_mem("920B / 134.5GB"), Some(920));
        assert_eq!(parse_mem("11.71MB"), Some(11_710_000));
        for bad in [
            "",
            "garbage",
            "MB / 1GB",
            "12 / 16GB",
            "-5MB / 1GB",
            "NaNMB / 1GB",
            "infGB / 1GB",
            "1.2.3MB / 1GB",
            "12XB / 1GB",
            "--",
            " / 16GB",
        ] {
            assert_eq!(parse_mem(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpu_values() {
        assert_eq!(parse_cpu(&json!("115.74%")), Some(115.74));
        assert_eq!(parse_cpu(&json!(" 0.00% ")), Some(0.0));
        assert_eq!(parse_cpu(&json!("42")), Some(42.0));
        assert_eq!(parse_cpu(&json!(12.5)), Some(12.5));
        for bad in [
            json!("-3%"),
            json!("NaN%"),
            json!("inf%"),
            json!("--"),
            json!("%"),
            json!(""),
            json!(true),
            json!(null),
            json!([1]),
            json!(-1.0),
            json!("999999%"),
        ] {
            assert_eq!(parse_cpu(&bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_times() {
        // 2026-02-07T02:22:06Z, checked against the trace's own epoch field.
        let t = parse_iso8601("2026-02-07T02:22:12.916Z").unwrap();
        assert!((t - 1_770_430_932.916).abs() < 1e-6, "{t}");
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_iso8601("2000-03-01T00:00:00"), Some(951_868_800.0));
        assert_eq!(
            parse_iso8601("2000-03-01T01:30:00+01:30"),
            Some(951_868_800.0)
        );
        assert_eq!(
            parse_iso8601("2000-03-01 00:00:00-0100"),
            Some(951_872_400.0)
        );
        for bad in [
            "",
            "2026-02-07",
            "2026-13-07T00:00:00Z",
            "2026-02-07T00:00:00Q",
            "x026-02-07T00:00:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_samples_are_skipped_and_counted() {
        let dir = std::env::temp_dir().join(format!("agentcg-replay-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let doc = json!({"samples": [
            {"timestamp": "a", "epoch": 1000.0, "mem_usage": "100MB / 16GB", "mem_percent": "1%", "cpu_percent": "10%"},
            {"epoch": 1001.0, "cpu_percent": "10%"},                                  // no mem
            {"epoch": "1002", "mem_usage": "100MB / 16GB", "cpu_percent": "10%"},     // epoch wrong type
            {"epoch": 1003.0, "mem_usage": 100, "cpu_percent": "10%"},               // mem wrong type
            {"epoch": 1004.0, "mem_usage": "-100MB / 16GB", "cpu_percent": "10%"},   // negative mem
            {"epoch": 1005.0, "mem_usage": "100MB / 16GB", "cpu_percent": "NaN%"},   // NaN cpu
            {"epoch": 1006.0, "mem_usage": "100MB / 16GB", "cpu_percent": "-5%"},    // negative cpu
            {"epoch": -1.0, "mem_usage": "100MB / 16GB", "cpu_percent": "5%"},       // negative epoch
            "not an object",
            null,
            {"epoch": 1007.0, "mem_usage": "garbage", "cpu_percent": "5%"},          // bad unit
            {"epoch": 1008.0, "mem_usage": "200MB / 16GB", "cpu_percent": "150.5%"}, // good
            {"epoch": 1007.5, "mem_usage": "200MB / 16GB", "cpu_percent": "5%"},     // goes back in time
            {"epoch": 1009.0, "mem_usage": "1.5GiB / 16GB", "cpu_percent": 20},      // good
            {"epoch": 1010.0, "mem_usage": "100MB / 16GB"}                           // no cpu
        ], "summary": {}});
        fs::write(dir.join("resources.json"), doc.to_string()).unwrap();
        fs::write(
            dir.join("tool_calls.json"),
            r#"[{"timestamp":"1970-01-01T00:16:42Z","tool":"Bash","id":"a"},{"tool":"Read"},7]"#,
        )
        .unwrap();
        let tr = load(&dir).unwrap();
        assert_eq!(tr.samples_in_file, 15);
        assert_eq!(tr.malformed, 12);
        assert_eq!(tr.samples.len(), 3);
        assert_eq!(tr.samples[1].t, 8.0);
        assert_eq!(tr.samples[1].mem_bytes, 200_000_000);
        assert_eq!(tr.samples[1].cpu_pct, 150.5);
        assert_eq!(tr.samples[2].mem_bytes, 1_610_612_736);
        assert_eq!(tr.duration(), 9.0);
        let calls = tr.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(tr.tool_calls_skipped, 2);
        assert_eq!(calls[0].start, 1002.0);
        fs::remove_dir_all(&dir).unwrap();

        // Unusable documents are errors, not panics.
        let mut w = Warner::quiet();
        assert!(parse_resources("{", &mut w).is_err());
        assert!(parse_resources("{\"samples\": 3}", &mut w).is_err());
        assert!(parse_resources("[]", &mut w).unwrap().0.is_empty());
    }

    #[test]
    fn tool_call_mapping_with_speed() {
        let text = r#"[
            {"timestamp":"1970-01-01T00:00:30.000Z","tool":"Read","id":"2","end_timestamp":"1970-01-01T00:00:32.000Z"},
            {"timestamp":"1970-01-01T00:00:10.500Z","tool":"Bash","id":"1"},
            {"timestamp":"1970-01-01T00:00:05.000Z","tool":"Edit","id":"0","end_timestamp":"1970-01-01T00:00:04.000Z"}
        ]"#;
        let mut w = Warner::quiet();
        let (calls, skipped) = parse_tool_calls(text, &mut w).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(w.total(), 1); // the end before the start
        assert_eq!(
            calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(calls[0].tool, "Edit");
        assert_eq!(calls[0].end, None);
        let ev = step_events(&calls, 8.0);
        let speed = 10.0;
        let got: Vec<(f64, StepKind)> = ev
            .iter()
            .map(|e| (scaled(e.t, speed), e.kind.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    0.0,
                    StepKind::Enter {
                        seq: 1,
                        tool: "Edit".into()
                    }
                ), // before the first sample
                (
                    0.25,
                    StepKind::Enter {
                        seq: 2,
                        tool: "Bash".into()
                    }
                ),
                (
                    2.2,
                    StepKind::Enter {
                        seq: 3,
                        tool: "Read".into()
                    }
                ),
                (2.4, StepKind::Leave { seq: 3 }),
            ]
        );
    }
}
