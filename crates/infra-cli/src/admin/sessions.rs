//! `infra sessions`: recorded interactive sessions (kubectl exec and
//! attach, SSH in recording mode): list them, play one in the terminal,
//! export one as an asciicast file for any player.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use infra_api::Recording;

use super::query;
use crate::client::{Api, enc};
use crate::output::{OutputArg, print};

#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    /// List recorded sessions, newest first.
    List {
        /// Sessions of this user (email).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        /// kube-exec (kubectl exec, attach, debug) or ssh.
        #[arg(long, value_parser = ["kube-exec", "ssh"])]
        kind: Option<String>,
        /// Started at or after: RFC 3339 time or a duration ago, such as 1h.
        #[arg(long)]
        since: Option<String>,
        /// Started before: RFC 3339 time or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Only sessions still running.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Play a recorded session in this terminal, as it happened.
    ///
    /// Shows what the session's terminal showed (typed commands appear as
    /// the terminal echoed them) at real speed or faster. Each playback is
    /// recorded in the audit log.
    Play {
        /// The recording's id (from 'infra sessions list').
        id: String,
        /// Play this many times faster, such as 2 or 10.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Shorten pauses longer than this many seconds.
        #[arg(long, default_value_t = 2.0)]
        idle_limit: f64,
    },
    /// Save a recorded session as an asciicast v2 file (plays in asciinema
    /// and other standard players). Audited like a playback.
    Export {
        /// The recording's id (from 'infra sessions list').
        id: String,
        /// Where to write it [default: ID.cast]; - for stdout.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
}

const HEADERS: [&str; 9] = [
    "id",
    "started",
    "user",
    "destination",
    "target",
    "command",
    "duration",
    "exit",
    "state",
];

fn row(r: &Recording) -> Vec<String> {
    let started = r.started.get(..19).unwrap_or(&r.started).replace('T', " ");
    let duration = match (parse_time(&r.started), parse_time(&r.ended)) {
        (Some(a), Some(b)) => took((b - a).max(0)),
        _ => "running".into(),
    };
    let mut state = r.state.clone();
    if r.truncated {
        state.push_str(" (truncated)");
    }
    vec![
        r.id.clone(),
        started,
        r.user.clone(),
        r.destination.clone(),
        r.target.clone(),
        r.command.clone(),
        duration,
        r.exit.clone(),
        state,
    ]
}

/// `42s`, `3m05s`, `1h02m`.
fn took(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The recording's text, checked as asciicast.
async fn fetch(api: &Api, id: &str) -> anyhow::Result<String> {
    let text = api.get_text(&format!("/api/recordings/{}/cast", enc(id))).await?;
    infra_record::asciicast::parse(&text).map_err(|e| anyhow::anyhow!("recording {id} is not valid asciicast: {e}"))?;
    Ok(text)
}

pub(super) async fn run(c: SessionsCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        SessionsCmd::List {
            user,
            destination,
            kind,
            since,
            until,
            live,
            out,
        } => {
            let live = live.then(|| "true".to_owned());
            let q = query(&[
                ("user", &user),
                ("destination", &destination),
                ("kind", &kind),
                ("since", &since),
                ("until", &until),
                ("live", &live),
            ]);
            let items: Vec<Recording> = api.list_all("/api/recordings", &q).await?;
            print(out.output, &items, &HEADERS, row)?;
        }
        SessionsCmd::Play { id, speed, idle_limit } => {
            anyhow::ensure!(speed.is_finite() && speed > 0.0, "--speed must be above 0, such as 2");
            let text = fetch(&api, &id).await?;
            let (_, events) = infra_record::asciicast::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = std::io::stdout().lock();
            for (pause, data) in infra_record::asciicast::schedule(&events, speed, Some(idle_limit)) {
                if !pause.is_zero() {
                    out.flush()?;
                    std::thread::sleep(pause);
                }
                out.write_all(data.as_bytes())?;
            }
            out.flush()?;
        }
        SessionsCmd::Export { id, file } => {
            let text = fetch(&api, &id).await?;
            let path = file.unwrap_or_else(|| PathBuf::from(format!("{id}.cast")));
            if path.as_os_str() == "-" {
                std::io::stdout().write_all(text.as_bytes())?;
            } else {
                std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
                eprintln!("wrote {} ({} bytes)", path.display(), text.len());
            }
        }
    }
    Ok(())
}
