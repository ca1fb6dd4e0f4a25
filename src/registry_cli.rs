//! `scx_agentcg registry`: talk to a running scheduler's session registry
//! (`--registry-socket`) by hand or from a script: list, register,
//! unregister, or send JSON request lines from stdin over one connection.
//! Each reply is printed as the JSON line the registry sent; a refused
//! request also prints its error on stderr and makes the exit status 1.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::registry_proto::{self, Reply, Request};

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// The registry's socket (the scheduler's --registry-socket).
    #[clap(long, default_value = registry_proto::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub op: RegistryOp,
}

#[derive(Debug, clap::Subcommand)]
pub enum RegistryOp {
    /// Print every registration.
    List,
    /// Make a cgroup a session with a profile of the policy.
    Register {
        /// The registration's id (a container id: unregister uses it).
        #[clap(long)]
        id: String,
        /// The cgroup as /proc/PID/cgroup shows it, e.g. /system.slice/docker-ID.scope.
        #[clap(long)]
        cgroup: String,
        /// A profile of the scheduler's policy.
        #[clap(long)]
        profile: String,
        /// The session's name in stats and metrics (default: the id).
        #[clap(long)]
        session: Option<String>,
        /// KEY=VALUE, repeatable.
        #[clap(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Forget a registration (the cgroup is left alone).
    Unregister {
        #[clap(long)]
        id: String,
    },
    /// Send the JSON request lines of stdin over one connection.
    Send,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn connect(args: &RegistryArgs) -> Result<UnixStream> {
    let s = UnixStream::connect(&args.socket).with_context(|| {
        format!(
            "cannot reach the registry at {}: is scx_agentcg running with --registry-socket {}?",
            args.socket.display(),
            args.socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Send one line, read the reply line.
fn exchange(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &str) -> Result<(String, Reply)> {
    stream.write_all(line.trim_end().as_bytes())?;
    stream.write_all(b"\n")?;
    let mut back = String::new();
    if reader.read_line(&mut back)? == 0 {
        bail!("the registry closed the connection without a reply");
    }
    let reply: Reply = serde_json::from_str(back.trim()).with_context(|| format!("a reply that is not JSON: {back:?}"))?;
    Ok((back.trim().to_string(), reply))
}

/// Run the subcommand; the exit status.
pub fn run(args: &RegistryArgs) -> Result<i32> {
    let mut stream = connect(args)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = 0;
    let mut one = |line: &str, stream: &mut UnixStream| -> Result<()> {
        let (text, reply) = exchange(stream, &mut reader, line)?;
        println!("{text}");
        if !reply.ok {
            eprintln!("scx_agentcg registry: refused: {}", reply.error.unwrap_or_default());
            status = 1;
        }
        Ok(())
    };
    let req = match &args.op {
        RegistryOp::List => Request::List,
        RegistryOp::Register { id, cgroup, profile, session, labels } => Request::Register {
            id: id.clone(),
            cgroup: cgroup.clone(),
            profile: profile.clone(),
            session: session.clone(),
            labels: labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        },
        RegistryOp::Unregister { id } => Request::Unregister { id: id.clone() },
        RegistryOp::Send => {
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    one(&line, &mut stream)?;
                }
            }
            return Ok(status);
        }
    };
    one(&serde_json::to_string(&req)?, &mut stream)?;
    Ok(status)
}
