//! `scx_agentcg registry`: talk to a running scheduler's session registry
//! (`--registry-socket`) by hand or from a script: list, register,
//! unregister, or send JSON request lines from stdin over one connection.
//! Each reply is printed as the JSON line the registry sent; a refused
//! request also prints its error on stderr and makes the exit status 1.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::registry_client::Client;
use crate::registry_proto::{self, Request};

/// The bound of the connect and of each request.
const TIMEOUT: Duration = Duration::from_secs(10);

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

/// Run the subcommand; the exit status.
pub fn run(args: &RegistryArgs) -> Result<i32> {
    let mut client = Client::connect(&args.socket, TIMEOUT)?;
    let mut status = 0;
    let mut one = |line: &str| -> Result<()> {
        let (text, reply) = client.exchange(line)?;
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
                    one(&line)?;
                }
            }
            return Ok(status);
        }
    };
    one(&serde_json::to_string(&req)?)?;
    Ok(status)
}
