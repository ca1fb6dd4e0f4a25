// SPDX-License-Identifier: GPL-2.0-only
//! The `plot` subcommand: figures and a markdown table from result records
//! (JSON lines: a `run` report plus the harness's `arm`, `role`, `rep`,
//! `oom_kills`).
//!
//! Text needs a TrueType font, loaded at run time (`--font`, default DejaVu
//! Sans, which Debian's fonts-dejavu-core installs). Without one the figures
//! are drawn without any text (no titles, tick labels or legends).

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::stats;

pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";
/// The arms in the order of the experiment design; others follow in the
/// order they first appear.
const ARM_ORDER: [&str; 5] = ["NoLimit", "Static", "HighOnly", "AgentCG-CPU", "AgentCG"];

type Res<T> = Result<T, Box<dyn Error>>;

/// One result record, as far as plotting needs it.
#[derive(Debug, Clone, Default)]
pub struct Rec {
    pub arm: String,
    pub role: String,
    pub rep: i64,
    /// None when the run did not complete (OOM-killed, no value).
    pub completion_s: Option<f64>,
    pub oom_kills: u64,
    pub lat_quantiles: Vec<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub timeline: Vec<(f64, f64)>,
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// Interpret one JSON record leniently; None if it is not an object.
pub fn parse_record(v: &Value) -> Option<Rec> {
    v.as_object()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let oom_killed = v
        .get("oom_killed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let oom_kills = match v.get("oom_kills").and_then(Value::as_u64) {
        Some(k) => k,
        None => u64::from(oom_killed),
    };
    let completion_s = if oom_killed {
        None
    } else {
        num(v, "completion_s").filter(|x| *x >= 0.0)
    };
    let lat_quantiles = v
        .get("alloc_lat_quantiles_us")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .filter(|x| x.is_finite())
                .collect()
        })
        .unwrap_or_default();
    let timeline = v
        .get("mem_timeline")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let p = p.as_array()?;
                    Some((p.first()?.as_f64()?, p.get(1)?.as_f64()?))
                })
                .filter(|(t, b)| t.is_finite() && b.is_finite())
                .collect()
        })
        .unwrap_or_default();
    Some(Rec {
        arm: s("arm").unwrap_or_else(|| "?".into()),
        role: s("role")
            .map(|r| r.to_ascii_uppercase())
            .unwrap_or_else(|| "?".into()),
        rep: v.get("rep").and_then(Value::as_i64).unwrap_or(0),
        completion_s,
        oom_kills,
        lat_quantiles,
        p50: num(v, "alloc_lat_p50_us"),
        p95: num(v, "alloc_lat_p95_us"),
        p99: num(v, "alloc_lat_p99_us"),
        timeline,
    })
}

/// Read JSON-lines files; unusable lines are skipped with a warning.
pub fn read_records(files: &[PathBuf]) -> Result<Vec<Rec>, String> {
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line)
                .ok()
                .as_ref()
                .and_then(parse_record)
            {
                Some(r) => out.push(r),
                None => eprintln!(
                    "agentcg-replay: warning: {}:{}: not a JSON object, skipped",
                    f.display(),
                    i + 1
                ),
            }
        }
    }
    Ok(out)
}

/// Arms present, in design order.
pub fn arms(recs: &[Rec]) -> Vec<String> {
    let mut v: Vec<String> = ARM_ORDER
        .iter()
        .filter(|a| recs.iter().any(|r| r.arm == **a))
        .map(|a| a.to_string())
        .collect();
    for r in recs {
        if !v.contains(&r.arm) {
            v.push(r.arm.clone());
        }
    }
    v
}

fn of<'a>(recs: &'a [Rec], arm: &'a str, role: &'a str) -> impl Iterator<Item = &'a Rec> + 'a {
    recs.iter().filter(move |r| r.arm == arm && r.role == role)
}

fn completions(recs: &[Rec], arm: &str, role: &str) -> Vec<f64> {
    of(recs, arm, role).filter_map(|r| r.completion_s).collect()
}

fn oom_total(recs: &[Rec], arm: &str, role: &str) -> u64 {
    of(recs, arm, role).map(|r| r.oom_kills).sum()
}

/// Mixture CDF of the runs' latency distributions (each run given by its
/// percentile list, weighted equally), evaluated at every pooled point.
pub fn mixture_cdf(runs: &[&[f64]]) -> Vec<(f64, f64)> {
    let runs: Vec<Vec<f64>> = runs
        .iter()
        .map(|q| stats::sorted(q))
        .filter(|q| q.len() >= 2)
        .collect();
    if runs.is_empty() {
        return Vec::new();
    }
    let cdf_one = |q: &[f64], x: f64| -> f64 {
        let last = q.len() - 1;
        if x < q[0] {
            return 0.0;
        }
        if x >= q[last] {
            return 1.0;
        }
        // Largest j with q[j] <= x (j < last here).
        let j = q.partition_point(|v| *v <= x) - 1;
        let span = q[j + 1] - q[j];
        let frac = if span > 0.0 { (x - q[j]) / span } else { 0.0 };
        (j as f64 + frac) / last as f64
    };
    let mut xs: Vec<f64> = runs.iter().flatten().copied().collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .map(|x| {
            (
                x,
                runs.iter().map(|q| cdf_one(q, x)).sum::<f64>() / runs.len() as f64,
            )
        })
        .collect()
}

/// Register the font for text under `family`; false (and a warning) if it
/// cannot be used.
pub fn load_font(path: &Path, family: &str) -> bool {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "agentcg-replay: warning: font {}: {e}; figures will have no text",
                path.display()
            );
            return false;
        }
    };
    // The registry keeps the bytes for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    match plotters::style::register_font(family, FontStyle::Normal, bytes) {
        Ok(()) => true,
        Err(_) => {
            eprintln!(
                "agentcg-replay: warning: {} is not a usable TrueType font; figures will have no text",
                path.display()
            );
            false
        }
    }
}

fn arm_color(arm: &str, idx: usize) -> RGBColor {
    match arm {
        "NoLimit" => RGBColor(120, 120, 120),
        "Static" => RGBColor(31, 119, 180),
        "HighOnly" => RGBColor(255, 127, 14),
        "AgentCG" => RGBColor(44, 160, 44),
        _ => {
            let extra = [
                RGBColor(214, 39, 40),
                RGBColor(148, 103, 189),
                RGBColor(140, 86, 75),
                RGBColor(227, 119, 194),
            ];
            extra[idx % extra.len()]
        }
    }
}

const HIGH_COLOR: RGBColor = RGBColor(31, 78, 140);
const LOW_COLOR: RGBColor = RGBColor(240, 160, 60);

/// One bar of a grouped bar chart: value and optional whisker (lo, hi).
type Bar = (f64, Option<(f64, f64)>);

/// Grouped bars: for every arm a HIGH and a LOW bar.
/// `int_y`: label only whole numbers on the y axis (counts).
fn bar_chart(
    path: &Path,
    font: Option<&str>,
    title: &str,
    ylabel: &str,
    int_y: bool,
    arms: &[String],
    bars: &[(Bar, Bar)],
) -> Res<()> {
    let (text, fam) = (font.is_some(), font.unwrap_or(""));
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = bars
        .iter()
        .flat_map(|(h, l)| [h, l])
        .map(|(v, w)| w.map_or(*v, |(_, hi)| hi.max(*v)))
        .fold(0.0, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
    let n = arms.len().max(1);
    let mut b = ChartBuilder::on(&root);
    b.margin(20);
    if text {
        b.caption(title, (fam, 24))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = b.build_cartesian_2d(0f64..n as f64, 0f64..ymax)?;
    {
        let whole = |v: &f64| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh().x_labels(0);
        if text {
            mesh.y_desc(ylabel)
                .label_style((fam, 16))
                .axis_desc_style((fam, 16));
            if int_y {
                mesh.y_label_formatter(&whole);
            }
        } else {
            mesh.y_labels(0);
        }
        mesh.draw()?;
    }
    if !text {
        chart.draw_series([PathElement::new(
            vec![(0.0, ymax), (0.0, 0.0), (n as f64, 0.0)],
            BLACK,
        )])?;
    }
    if text {
        // Arm names under the bar groups (the x axis has no numeric ticks).
        let style = TextStyle::from((fam, 18).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (k, arm) in arms.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(k as f64 + 0.5, 0.0));
            root.draw(&Text::new(arm.clone(), (px, py + 10), style.clone()))?;
        }
    }
    for (role, color, lo, hi) in [
        ("HIGH", HIGH_COLOR, 0.12, 0.48),
        ("LOW", LOW_COLOR, 0.52, 0.88),
    ] {
        let pick = |hl: &(Bar, Bar)| if role == "HIGH" { hl.0 } else { hl.1 };
        let ann = chart.draw_series(bars.iter().enumerate().map(|(k, hl)| {
            let (v, _) = pick(hl);
            Rectangle::new([(k as f64 + lo, 0.0), (k as f64 + hi, v)], color.filled())
        }))?;
        if text {
            ann.label(role).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
            });
        }
        for (k, hl) in bars.iter().enumerate() {
            if let (_, Some((wlo, whi))) = pick(hl) {
                let xc = k as f64 + (lo + hi) / 2.0;
                let cap = (hi - lo) / 4.0;
                let style = BLACK.stroke_width(2);
                chart.draw_series([
                    PathElement::new(vec![(xc, wlo), (xc, whi)], style),
                    PathElement::new(vec![(xc - cap, wlo), (xc + cap, wlo)], style),
                    PathElement::new(vec![(xc - cap, whi), (xc + cap, whi)], style),
                ])?;
            }
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((fam, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn latency_cdf(path: &Path, font: Option<&str>, recs: &[Rec], arms: &[String]) -> Res<()> {
    let (text, fam) = (font.is_some(), font.unwrap_or(""));
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    // (arm index, arm, CDF points)
    type Curve<'a> = (usize, &'a String, Vec<(f64, f64)>);
    let curves: Vec<Curve> = arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let runs: Vec<&[f64]> = of(recs, a, "HIGH")
                .map(|r| r.lat_quantiles.as_slice())
                .filter(|q| !q.is_empty())
                .collect();
            (i, a, mixture_cdf(&runs))
        })
        .filter(|c| !c.2.is_empty())
        .collect();
    let all = curves.iter().flat_map(|c| c.2.iter().map(|p| p.0));
    let (mut lo, mut hi) = all.fold((f64::INFINITY, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    lo = lo.max(0.1);
    if !lo.is_finite() || hi <= lo {
        lo = 1.0;
        hi = hi.max(10.0);
    }
    let mut b = ChartBuilder::on(&root);
    b.margin(20);
    if text {
        b.caption("Chunk allocation latency, HIGH sessions (CDF)", (fam, 24))
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let (x0, x1) = (lo * 0.9, hi * 1.1);
    let mut chart = b.build_cartesian_2d((x0..x1).log_scale(), 0f64..1.0)?;
    {
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("latency (us, log scale)")
                .y_desc("fraction of allocations")
                .label_style((fam, 16))
                .axis_desc_style((fam, 16));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;
    }
    if !text {
        chart.draw_series([PathElement::new(
            vec![(x0, 1.0), (x0, 0.0), (x1, 0.0)],
            BLACK,
        )])?;
    }
    for (i, arm, pts) in &curves {
        let color = arm_color(arm, *i);
        let pts: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (x.max(lo * 0.9), *y)).collect();
        let ann = chart.draw_series(LineSeries::new(pts, color.stroke_width(3)))?;
        if text {
            ann.label(arm.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    if text && !curves.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((fam, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn memory_timeline(path: &Path, font: Option<&str>, recs: &[Rec], arms: &[String]) -> Res<()> {
    let (text, fam) = (font.is_some(), font.unwrap_or(""));
    let root = BitMapBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 1));
    for (panel, role) in panels.iter().zip(["HIGH", "LOW"]) {
        // One run per arm: the lowest rep that has a timeline.
        let lines: Vec<(usize, &String, &Rec)> = arms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                of(recs, a, role)
                    .filter(|r| !r.timeline.is_empty())
                    .min_by_key(|r| r.rep)
                    .map(|r| (i, a, r))
            })
            .collect();
        let tmax = lines
            .iter()
            .flat_map(|l| l.2.timeline.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        let mmax = lines
            .iter()
            .flat_map(|l| l.2.timeline.iter().map(|p| p.1 / 1e6))
            .fold(0.0, f64::max);
        let mut b = ChartBuilder::on(panel);
        b.margin(15);
        if text {
            b.caption(
                format!("{role} session: replayed memory (one run per arm)"),
                (fam, 20),
            )
            .x_label_area_size(40)
            .y_label_area_size(70);
        }
        let xmax = if tmax > 0.0 { tmax * 1.02 } else { 1.0 };
        let ymax = if mmax > 0.0 { mmax * 1.1 } else { 1.0 };
        let mut chart = b.build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        {
            let mut mesh = chart.configure_mesh();
            if text {
                mesh.x_desc("seconds since start")
                    .y_desc("MB")
                    .label_style((fam, 14))
                    .axis_desc_style((fam, 14));
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw()?;
        }
        if !text {
            chart.draw_series([PathElement::new(
                vec![(0.0, ymax), (0.0, 0.0), (xmax, 0.0)],
                BLACK,
            )])?;
        }
        for (i, arm, r) in &lines {
            let color = arm_color(arm, *i);
            let ann = chart.draw_series(LineSeries::new(
                r.timeline.iter().map(|(t, b)| (*t, b / 1e6)),
                color.stroke_width(2),
            ))?;
            if text {
                ann.label(format!("{arm} (rep {})", r.rep))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
        }
        if text && !lines.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((fam, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn median_bar(v: &[f64]) -> Bar {
    match stats::median_iqr(v) {
        Some((m, q1, q3)) => (m, Some((q1, q3))),
        None => (0.0, None),
    }
}

/// Draw the four figures into `out`. `font`: the family registered with
/// [`load_font`], None to draw no text at all.
pub fn draw_all(recs: &[Rec], out: &Path, font: Option<&str>) -> Res<Vec<PathBuf>> {
    fs::create_dir_all(out)?;
    let arms = arms(recs);
    let mut written = Vec::new();

    let p = out.join("completion.png");
    let bars: Vec<(Bar, Bar)> = arms
        .iter()
        .map(|a| {
            (
                median_bar(&completions(recs, a, "HIGH")),
                median_bar(&completions(recs, a, "LOW")),
            )
        })
        .collect();
    bar_chart(
        &p,
        font,
        "Completion time (median, IQR whiskers)",
        "seconds",
        false,
        &arms,
        &bars,
    )?;
    written.push(p);

    let p = out.join("oom.png");
    let bars: Vec<(Bar, Bar)> = arms
        .iter()
        .map(|a| {
            (
                (oom_total(recs, a, "HIGH") as f64, None),
                (oom_total(recs, a, "LOW") as f64, None),
            )
        })
        .collect();
    bar_chart(
        &p,
        font,
        "OOM kills",
        "kills (all reps)",
        true,
        &arms,
        &bars,
    )?;
    written.push(p);

    let p = out.join("latency_cdf.png");
    latency_cdf(&p, font, recs, &arms)?;
    written.push(p);

    let p = out.join("memory_timeline.png");
    memory_timeline(&p, font, recs, &arms)?;
    written.push(p);
    Ok(written)
}

fn fmt_med_iqr(v: &[f64]) -> String {
    match stats::median_iqr(v) {
        Some((m, q1, q3)) => format!("{m:.1} [{q1:.1}-{q3:.1}]"),
        None => "-".into(),
    }
}

fn fmt_lat(v: &[f64]) -> String {
    match stats::quantile(v, 0.5) {
        Some(m) => format!("{m:.0}"),
        None => "-".into(),
    }
}

/// The markdown table of `plot`.
pub fn table(recs: &[Rec]) -> String {
    let mut s = String::new();
    s.push_str(
        "| arm | HIGH completion s, median [IQR] | LOW completion s, median [IQR] \
         | OOM kills HIGH | OOM kills LOW | HIGH alloc p50 / p95 / p99 us | runs HIGH/LOW |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|\n");
    for a in arms(recs) {
        let high: Vec<&Rec> = of(recs, &a, "HIGH").collect();
        let low_n = of(recs, &a, "LOW").count();
        let lat = |f: fn(&Rec) -> Option<f64>| -> String {
            let v: Vec<f64> = high.iter().filter_map(|r| f(r)).collect();
            fmt_lat(&v)
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} / {} | {}/{} |\n",
            a,
            fmt_med_iqr(&completions(recs, &a, "HIGH")),
            fmt_med_iqr(&completions(recs, &a, "LOW")),
            oom_total(recs, &a, "HIGH"),
            oom_total(recs, &a, "LOW"),
            lat(|r| r.p50),
            lat(|r| r.p95),
            lat(|r| r.p99),
            high.len(),
            low_n
        ));
    }
    s.push_str(
        "\nCompletion: wall seconds of completed runs (OOM-killed runs excluded), \
         median and interquartile range over reps. OOM kills: sum over reps. Latency: \
         median over HIGH runs of each run's chunk allocation percentile.\n",
    );
    s
}

/// `plot`: read records, draw figures, print the table.
pub fn plot(out: &Path, files: &[PathBuf], font: &Path) -> Result<(), String> {
    let recs = read_records(files)?;
    if recs.is_empty() {
        return Err("no result records".into());
    }
    let family = load_font(font, FAMILY).then_some(FAMILY);
    let written = draw_all(&recs, out, family).map_err(|e| format!("drawing failed: {e}"))?;
    for p in &written {
        eprintln!("agentcg-replay: wrote {}", p.display());
    }
    print!("{}", table(&recs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn synthetic_lines() -> String {
        let mut lines = String::new();
        for (ai, arm) in ["AgentCG", "NoLimit", "Static", "HighOnly"]
            .iter()
            .enumerate()
        {
            for role in ["HIGH", "LOW"] {
                for rep in 0..3 {
                    let killed = *arm == "Static" && role == "LOW" && rep == 1;
                    let base = 50.0 + ai as f64 * 10.0 + rep as f64;
                    let q: Vec<f64> = (0..=100)
                        .map(|k| 20.0 + ai as f64 * 15.0 + (k * k) as f64 * 0.3)
                        .collect();
                    let tl: Vec<[f64; 2]> = (0..60)
                        .map(|t| [t as f64, 2e8 + (t as f64 * 0.3).sin().abs() * 3e8])
                        .collect();
                    let mut v = json!({
                        "arm": arm, "role": role, "rep": rep, "oom_kills": u64::from(killed),
                        "oom_killed": killed, "trace": "haiku/x",
                        "completion_s": if role == "HIGH" { base } else { base * 1.5 },
                        "alloc_lat_p50_us": q[50], "alloc_lat_p95_us": q[95], "alloc_lat_p99_us": q[99],
                        "alloc_lat_quantiles_us": q, "mem_timeline": tl,
                    });
                    if killed {
                        v.as_object_mut().unwrap().remove("completion_s");
                    }
                    lines.push_str(&v.to_string());
                    lines.push('\n');
                }
            }
        }
        lines.push_str("not json\n\n");
        lines
    }

    #[test]
    fn records_and_table() {
        let dir = std::env::temp_dir().join(format!("agentcg-replay-plot-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("results.jsonl");
        fs::write(&f, synthetic_lines()).unwrap();
        let recs = read_records(&[f]).unwrap();
        assert_eq!(recs.len(), 24);
        assert_eq!(
            arms(&recs),
            vec!["NoLimit", "Static", "HighOnly", "AgentCG"]
        );
        assert_eq!(oom_total(&recs, "Static", "LOW"), 1);
        assert_eq!(completions(&recs, "Static", "LOW").len(), 2);
        let t = table(&recs);
        assert!(t.contains("| AgentCG | 51.0 [50.5-51.5] |"), "{t}");
        assert!(
            t.contains("| Static | 71.0 [70.5-71.5] | 106.5 [105.8-107.2] | 0 | 1 |"),
            "{t}"
        );
        assert!(t.contains("| 3/3 |"), "{t}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cdf_mixture() {
        let a: Vec<f64> = (0..=100).map(f64::from).collect();
        let b: Vec<f64> = (0..=100).map(|k| 100.0 + k as f64).collect();
        let c = mixture_cdf(&[&a, &b]);
        let at = |x: f64| c.iter().find(|p| p.0 == x).unwrap().1;
        assert_eq!(at(0.0), 0.0);
        assert!((at(50.0) - 0.25).abs() < 1e-9);
        assert!((at(100.0) - 0.5).abs() < 1e-9);
        assert_eq!(at(200.0), 1.0);
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(mixture_cdf(&[]).is_empty());
    }

    fn check_pngs(dir: &Path, font: Option<&str>) {
        let f = dir.join("results.jsonl");
        fs::create_dir_all(dir).unwrap();
        fs::write(&f, synthetic_lines()).unwrap();
        let recs = read_records(&[f]).unwrap();
        let out = dir.join("figs");
        let written = draw_all(&recs, &out, font).unwrap();
        assert_eq!(written.len(), 4);
        for name in [
            "completion.png",
            "oom.png",
            "latency_cdf.png",
            "memory_timeline.png",
        ] {
            let bytes = fs::read(out.join(name)).unwrap();
            assert!(bytes.len() > 1000, "{name}: {} bytes", bytes.len());
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        }
    }

    #[test]
    fn plots_without_font() {
        let dir =
            std::env::temp_dir().join(format!("agentcg-replay-plot-nofont-{}", std::process::id()));
        check_pngs(&dir, None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plots_with_font() {
        // tests/vm/deps.sh installs fonts-dejavu-core, so this never skips
        assert!(
            Path::new(DEFAULT_FONT).exists(),
            "{DEFAULT_FONT} is missing: install fonts-dejavu-core (tests/vm/deps.sh does)"
        );
        // A family of its own: the no-font test in this process must not
        // find a registered "sans-serif".
        assert!(load_font(Path::new(DEFAULT_FONT), "test-font"));
        let dir =
            std::env::temp_dir().join(format!("agentcg-replay-plot-font-{}", std::process::id()));
        check_pngs(&dir, Some("test-font"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_font_is_not_fatal() {
        assert!(!load_font(Path::new("/nonexistent/font.ttf"), "bad-font"));
        let dir =
            std::env::temp_dir().join(format!("agentcg-replay-badfont-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("junk.ttf");
        fs::write(&f, b"not a font").unwrap();
        assert!(!load_font(&f, "bad-font"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
