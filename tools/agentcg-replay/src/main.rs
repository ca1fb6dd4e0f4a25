// SPDX-License-Identifier: GPL-2.0-only
//! agentcg-replay: replay recorded AI-agent resource traces (memory, CPU,
//! tool-call steps) and plot experiment results. See README.md.

mod anon;
mod plot;
mod react;
mod replay;
mod report;
mod stats;
mod steps;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agentcg-replay",
    version,
    about = "Replay AI-agent resource traces and plot results"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Replay a trace: memory footprint, CPU use and (optionally) step cgroups.
    Run {
        /// Trace folder holding resources.json (and tool_calls.json).
        #[arg(long)]
        trace: PathBuf,
        /// Time compression: 10 replays ten times faster.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Multiply the recorded memory usage by this.
        #[arg(long, default_value_t = 1.0)]
        mem_scale: f64,
        /// Replay only the part of the trace that takes at most SECS at this
        /// speed (the replayed work is fixed, so completion times compare).
        #[arg(long, value_name = "SECS")]
        max_duration: Option<f64>,
        /// Place the --max-duration window so that it holds the trace's memory
        /// peak (at three quarters of the window) instead of at the start.
        #[arg(long, requires = "max_duration")]
        window_at_peak: bool,
        /// Cgroup v2 directory (absolute, or relative to /sys/fs/cgroup) under
        /// which step_<n>_<tool> and step_idle cgroups are created.
        #[arg(long, value_name = "CGROUP_DIR")]
        step_parent: Option<PathBuf>,
        /// Allocation chunk size in KiB (each chunk is timed).
        #[arg(long, default_value_t = 1024)]
        chunk_kb: u64,
        /// Also write the report as one JSON object to this file.
        #[arg(long, value_name = "OUT")]
        json: Option<PathBuf>,
    },
    /// Describe traces: duration, peak memory, CPU, tool calls, malformed samples.
    Info {
        /// Trace folder(s).
        #[arg(long, required = true, num_args = 1..)]
        trace: Vec<PathBuf>,
    },
    /// Draw figures from result records (JSON lines) and print a markdown table.
    Plot {
        /// Output folder for the PNG files.
        #[arg(long)]
        out: PathBuf,
        /// TrueType font for the text; without a usable one the figures have no text.
        #[arg(long, default_value = plot::DEFAULT_FONT)]
        font: PathBuf,
        /// Result files, one JSON object per line.
        #[arg(required = true)]
        results: Vec<PathBuf>,
    },
    /// Measure how fast a session growing past its parent's guard line is
    /// stopped: by scx_agentcg (bpf) or a userspace watcher (poll, events,
    /// psi, avg10). Prints one JSON line per repetition and a summary.
    React(react::ReactOpts),
    /// The markdown table of `react` repetitions (JSON lines).
    ReactTable {
        reps: PathBuf,
        /// The scheduler's counters after each bpf repetition (REACT-SCHED
        /// lines: {"load", "rep", "arb"}), tabled next to the hog's figure.
        #[arg(long, value_name = "FILE")]
        sched: Option<PathBuf>,
    },
    /// The experiment's markdown report: goals, completion against solo,
    /// memory.events, latency, windows and scheduler counters.
    Report {
        /// Result records, one JSON object per line (tests/experiment.sh).
        results: PathBuf,
        /// The scheduler's stats replies after each run, one JSON object per
        /// line ({"arm", "rep", "reply"}).
        #[arg(long, value_name = "FILE")]
        sched: Option<PathBuf>,
        /// The sessions had swap (the goals differ).
        #[arg(long)]
        swap: bool,
    },
}

fn info(dirs: &[PathBuf]) -> Result<(), String> {
    let mut failed = 0;
    for (i, d) in dirs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let tr = match trace::load(d) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("agentcg-replay: {e}");
                failed += 1;
                continue;
            }
        };
        let (mean, max) = tr.cpu_mean_max();
        let cpu_s: f64 = tr
            .samples
            .windows(2)
            .map(|w| w[1].cpu_pct / 100.0 * (w[1].t - w[0].t))
            .sum();
        println!("trace          {}", tr.name);
        println!("duration       {:.1} s", tr.duration());
        println!(
            "samples        {} usable of {}, {} malformed",
            tr.samples.len(),
            tr.samples_in_file,
            tr.malformed
        );
        println!(
            "peak memory    {:.1} MB at {:.1} s",
            tr.peak_mem() as f64 / 1e6,
            tr.peak_t()
        );
        println!("cpu            mean {mean:.1} %, max {max:.1} %, {cpu_s:.1} cpu-seconds");
        match &tr.tool_calls {
            None => println!("tool calls     none (no tool_calls.json)"),
            Some(c) => {
                let ended = c.iter().filter(|c| c.end.is_some()).count();
                println!(
                    "tool calls     {} ({} with end time, {} skipped)",
                    c.len(),
                    ended,
                    tr.tool_calls_skipped
                );
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} traces could not be loaded",
            dirs.len()
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run {
            trace,
            speed,
            mem_scale,
            max_duration,
            window_at_peak,
            step_parent,
            chunk_kb,
            json,
        } => {
            let o = replay::RunOpts {
                trace,
                speed,
                mem_scale,
                max_duration,
                window_at_peak,
                step_parent,
                chunk_kb,
                json,
            };
            replay::run(&o).map(|_| ())
        }
        Cmd::Info { trace } => info(&trace),
        Cmd::Plot { out, font, results } => plot::plot(&out, &results, &font),
        Cmd::React(opts) => react::react(&opts),
        Cmd::ReactTable { reps, sched } => react::react_table(&reps, sched.as_deref()),
        Cmd::Report {
            results,
            sched,
            swap,
        } => report::report(&results, sched.as_deref(), report::Setup { swap }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentcg-replay: {e}");
            ExitCode::FAILURE
        }
    }
}
