//! Command-line parsing (std only).
//!
//! Grammar: `agentcg-load SUBCOMMAND [--opt VALUE | --opt=VALUE | --flag]... [POSITIONAL]...`

use std::time::Duration;

pub const USAGE: &str = "\
usage: agentcg-load SUBCOMMAND [OPTIONS]

Workload generator for scx_agentcg tests. Prints exactly one result line of
space-separated key=value pairs to stdout (after the subcommand name).

Common options (all workload subcommands):
  --cgroup PATH       move this process into PATH (relative to /sys/fs/cgroup,
                      or absolute) before starting any thread or child
  --duration SECS     run time, float seconds (default 5)

Subcommands:
  spin      [--threads N]                          N busy threads
  wakeup    [--interval-us U] [--threads N]        sleep U us repeatedly, measure lateness
  pingpong  [--pairs N]                            N thread pairs bouncing 1 byte over pipes
  forkstorm [--procs N] [--exec] [--exec-path P]   N workers spawning short children
                                                   (default: fork+_exit; --exec: spawn
                                                   P, default this tool's hidden no-op)
  burst     [--on-ms A] [--off-ms B] [--threads N] use A ms of CPU, sleep B ms, repeat
  memhog    [--mb M] [--threads N] [--rate-mb-s R] N threads sweep over M MiB of memory,
                                                   writing every page, over and over; with
                                                   R, the first sweep grows the memory at
                                                   R MiB/s in all (paced per MiB)
  cpustat   PATH...                                print usage_usec of cgroups as PATH=usec
  cgchurn   [--cycles N] PREFIX...                 for i in 0..N, for each PREFIX: create the
                                                   cgroup PREFIXi and remove it again (no
                                                   process per step, unlike mkdir/rmdir in sh)
  rawreq    SOCKET JSON                            send one JSON line to a unix socket,
                                                   print the one-line reply as is
  help                                             this text

Defaults: --threads 1, --interval-us 1000, --pairs 1, --procs 1,
          --on-ms 10, --off-ms 10.
Exit status: 0 ok, 1 runtime error, 2 bad arguments.
";

/// Options shared by all workload subcommands.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub cgroup: Option<String>,
    pub duration: Duration,
}

impl Default for Common {
    fn default() -> Self {
        Common { cgroup: None, duration: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Spin { threads: usize },
    Wakeup { interval_us: u64, threads: usize },
    Pingpong { pairs: usize },
    Forkstorm { procs: usize, exec: bool, exec_path: Option<String> },
    Burst { on_ms: f64, off_ms: f64, threads: usize },
    Memhog { mb: usize, threads: usize, rate_mb_s: Option<f64> },
    Cpustat { paths: Vec<String> },
    Cgchurn { cycles: usize, prefixes: Vec<String> },
    RawReq { socket: String, request: String },
    /// Hidden: exit 0 at once (the child that forkstorm --exec spawns).
    Child,
    Help,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Opts {
    pub common: Common,
    pub cmd: Cmd,
}

/// Name of the hidden no-op subcommand.
pub const CHILD_CMD: &str = "__child";

fn parse_count(opt: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("{opt}: expected an integer from 1 to 100000, got '{v}'")),
    }
}

fn parse_float(opt: &str, v: &str, min: f64) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= min => Ok(x),
        _ => Err(format!("{opt}: expected a number >= {min}, got '{v}'")),
    }
}

/// Parse arguments (without argv[0]).
pub fn parse(args: &[String]) -> Result<Opts, String> {
    let Some(sub) = args.first() else {
        return Err("missing subcommand".into());
    };
    let sub = sub.as_str();
    if sub == CHILD_CMD {
        return Ok(Opts { common: Common::default(), cmd: Cmd::Child });
    }
    if matches!(sub, "help" | "-h" | "--help") {
        return Ok(Opts { common: Common::default(), cmd: Cmd::Help });
    }

    // Which options (taking a value) and flags each subcommand accepts.
    let (opts, flags): (&[&str], &[&str]) = match sub {
        "spin" => (&["threads"], &[]),
        "wakeup" => (&["interval-us", "threads"], &[]),
        "pingpong" => (&["pairs"], &[]),
        "forkstorm" => (&["procs", "exec-path"], &["exec"]),
        "burst" => (&["on-ms", "off-ms", "threads"], &[]),
        "memhog" => (&["mb", "threads", "rate-mb-s"], &[]),
        "cpustat" | "rawreq" => (&[], &[]),
        "cgchurn" => (&["cycles"], &[]),
        _ => return Err(format!("unknown subcommand '{sub}'")),
    };
    let workload = !matches!(sub, "cpustat" | "rawreq" | "cgchurn");

    let mut common = Common::default();
    let mut vals: Vec<(String, String)> = Vec::new();
    let mut set_flags: Vec<String> = Vec::new();
    let mut positional: Vec<String> = Vec::new();

    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "-h" || a == "--help" {
            return Ok(Opts { common, cmd: Cmd::Help });
        }
        let Some(body) = a.strip_prefix("--") else {
            positional.push(a.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if flags.contains(&name) {
            if inline.is_some() {
                return Err(format!("--{name} takes no value"));
            }
            set_flags.push(name.to_string());
            continue;
        }
        let takes_value =
            opts.contains(&name) || (workload && (name == "cgroup" || name == "duration"));
        if !takes_value {
            return Err(format!("{sub}: unknown option '--{name}'"));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let Some(v) = args.get(i) else {
                    return Err(format!("--{name} needs a value"));
                };
                i += 1;
                v.clone()
            }
        };
        match name {
            "cgroup" => {
                if value.is_empty() {
                    return Err("--cgroup: empty path".into());
                }
                common.cgroup = Some(value)
            }
            "duration" => {
                let s = parse_float("--duration", &value, 0.0)?;
                if s <= 0.0 || s > 86_400.0 {
                    return Err(format!("--duration: expected seconds in (0, 86400], got '{value}'"));
                }
                common.duration = Duration::from_secs_f64(s);
            }
            _ => vals.push((name.to_string(), value)),
        }
    }

    if workload && !positional.is_empty() {
        return Err(format!("{sub}: unexpected argument '{}'", positional[0]));
    }
    let get = |k: &str| vals.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let count = |k: &str| -> Result<usize, String> {
        get(k).map(|v| parse_count(&format!("--{k}"), v)).unwrap_or(Ok(1))
    };

    let cmd = match sub {
        "spin" => Cmd::Spin { threads: count("threads")? },
        "wakeup" => Cmd::Wakeup {
            interval_us: match get("interval-us") {
                None => 1000,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|&u| u <= 10_000_000)
                    .ok_or_else(|| format!("--interval-us: expected 0..=10000000, got '{v}'"))?,
            },
            threads: count("threads")?,
        },
        "pingpong" => Cmd::Pingpong { pairs: count("pairs")? },
        "forkstorm" => {
            let exec_path = get("exec-path").map(str::to_string);
            Cmd::Forkstorm {
                procs: count("procs")?,
                exec: set_flags.iter().any(|f| f == "exec") || exec_path.is_some(),
                exec_path,
            }
        }
        "burst" => {
            let on_ms = get("on-ms").map(|v| parse_float("--on-ms", v, 0.0)).unwrap_or(Ok(10.0))?;
            let off_ms =
                get("off-ms").map(|v| parse_float("--off-ms", v, 0.0)).unwrap_or(Ok(10.0))?;
            if on_ms + off_ms <= 0.0 {
                return Err("burst: --on-ms and --off-ms cannot both be 0".into());
            }
            Cmd::Burst { on_ms, off_ms, threads: count("threads")? }
        }
        "memhog" => Cmd::Memhog {
            mb: get("mb").map(|v| parse_count("--mb", v)).unwrap_or(Ok(64))?,
            threads: count("threads")?,
            rate_mb_s: match get("rate-mb-s") {
                None => None,
                Some(v) => {
                    let r = parse_float("--rate-mb-s", v, 0.0)?;
                    if r <= 0.0 {
                        return Err(format!("--rate-mb-s: expected MiB per second above 0, got '{v}'"));
                    }
                    Some(r)
                }
            },
        },
        "cpustat" => {
            if positional.is_empty() {
                return Err("cpustat: need at least one cgroup PATH".into());
            }
            Cmd::Cpustat { paths: positional }
        }
        "cgchurn" => {
            if positional.is_empty() {
                return Err("cgchurn: need at least one cgroup PREFIX".into());
            }
            Cmd::Cgchurn { cycles: count("cycles")?, prefixes: positional }
        }
        "rawreq" => match <[String; 2]>::try_from(positional) {
            Ok([socket, request]) => Cmd::RawReq { socket, request },
            Err(_) => return Err("rawreq: need exactly SOCKET and JSON".into()),
        },
        _ => unreachable!(),
    };
    Ok(Opts { common, cmd })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Opts, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn spin_defaults_and_values() {
        let o = p("spin").unwrap();
        assert_eq!(o.cmd, Cmd::Spin { threads: 1 });
        assert_eq!(o.common, Common::default());
        let o = p("spin --threads 4 --duration 1.5 --cgroup a/b").unwrap();
        assert_eq!(o.cmd, Cmd::Spin { threads: 4 });
        assert_eq!(o.common.duration, Duration::from_millis(1500));
        assert_eq!(o.common.cgroup.as_deref(), Some("a/b"));
    }

    #[test]
    fn inline_values_and_last_wins() {
        let o = p("spin --threads=2 --threads 3 --duration=0.25").unwrap();
        assert_eq!(o.cmd, Cmd::Spin { threads: 3 });
        assert_eq!(o.common.duration, Duration::from_millis(250));
    }

    #[test]
    fn wakeup_pingpong_burst() {
        assert_eq!(
            p("wakeup --interval-us 500 --threads 2").unwrap().cmd,
            Cmd::Wakeup { interval_us: 500, threads: 2 }
        );
        assert_eq!(p("wakeup").unwrap().cmd, Cmd::Wakeup { interval_us: 1000, threads: 1 });
        assert_eq!(p("pingpong --pairs 3").unwrap().cmd, Cmd::Pingpong { pairs: 3 });
        assert_eq!(
            p("burst --on-ms 5 --off-ms 0.5").unwrap().cmd,
            Cmd::Burst { on_ms: 5.0, off_ms: 0.5, threads: 1 }
        );
    }

    #[test]
    fn forkstorm_modes() {
        assert_eq!(
            p("forkstorm").unwrap().cmd,
            Cmd::Forkstorm { procs: 1, exec: false, exec_path: None }
        );
        assert_eq!(
            p("forkstorm --exec --procs 2").unwrap().cmd,
            Cmd::Forkstorm { procs: 2, exec: true, exec_path: None }
        );
        assert_eq!(
            p("forkstorm --exec-path /bin/true").unwrap().cmd,
            Cmd::Forkstorm { procs: 1, exec: true, exec_path: Some("/bin/true".into()) }
        );
    }

    #[test]
    fn rawreq_takes_socket_and_json() {
        assert_eq!(
            p("rawreq /run/s {}").unwrap().cmd,
            Cmd::RawReq { socket: "/run/s".into(), request: "{}".into() }
        );
        assert!(p("rawreq /run/s").is_err());
        assert!(p("rawreq /run/s {} x").is_err());
    }

    #[test]
    fn cpustat_and_hidden() {
        assert_eq!(
            p("cpustat a /sys/fs/cgroup/b").unwrap().cmd,
            Cmd::Cpustat { paths: vec!["a".into(), "/sys/fs/cgroup/b".into()] }
        );
        assert!(p("cpustat").is_err());
        assert_eq!(
            p("cgchurn --cycles 5000 a/s a/b/bg").unwrap().cmd,
            Cmd::Cgchurn { cycles: 5000, prefixes: vec!["a/s".into(), "a/b/bg".into()] }
        );
        assert!(p("cgchurn --cycles 5").is_err());
        assert!(p("cgchurn --duration 1 a").is_err());
        assert!(p("cpustat --duration 1 a").is_err());
        assert_eq!(p(CHILD_CMD).unwrap().cmd, Cmd::Child);
        assert_eq!(p("help").unwrap().cmd, Cmd::Help);
        assert_eq!(p("spin --help").unwrap().cmd, Cmd::Help);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "bogus",
            "spin --threads",
            "spin --threads 0",
            "spin --threads x",
            "spin --duration 0",
            "spin --duration -1",
            "spin --duration nan",
            "spin --pairs 2",
            "spin extra",
            "spin --cgroup=",
            "wakeup --interval-us -5",
            "forkstorm --exec=1",
            "burst --on-ms 0 --off-ms 0",
            "burst --on-ms -1",
        ] {
            assert!(p(bad).is_err(), "should fail: {bad:?}");
        }
    }
}
