//! `infra audit`: read, follow and verify the audit log.

use clap::Subcommand;
use infra_api::{AuditEvent, AuditVerifyLine, AuditVerifyResponse};

use super::query;
use crate::client::Api;
use crate::output::{OutputArg, print};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    List {
        /// RFC 3339 time or a duration ago, such as 1h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// Only events with this result.
        #[arg(long, value_parser = ["success", "denied", "failure"])]
        result: Option<String>,
        /// Only events before this: RFC 3339 time or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Only the events of this access request: its whole story.
        #[arg(long)]
        request: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Follow new events as they are written.
    Tail {
        /// Show this many recent events first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
    },
    /// Check the hash chain: fails, naming the event, if any was edited or deleted.
    ///
    /// By default only what is new since the last verification (it resumes
    /// from a signed checkpoint); --full walks every archive file and the
    /// whole database, showing progress.
    Verify {
        /// Check everything: the archived events and the whole database.
        #[arg(long)]
        full: bool,
    },
}

fn event_row(e: &AuditEvent) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.time.get(..19).unwrap_or(&e.time).replace('T', " "),
        e.actor.clone(),
        e.action.clone(),
        e.target.clone(),
        e.result.clone(),
        e.source.clone(),
        e.detail.clone(),
    ]
}

const EVENT_HEADERS: [&str; 8] = ["seq", "time", "actor", "action", "target", "result", "source", "detail"];

pub(super) async fn run(c: AuditCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        AuditCmd::List {
            since,
            user,
            destination,
            action,
            result,
            until,
            request,
            out,
        } => {
            let q = query(&[
                ("since", &since),
                ("until", &until),
                ("user", &user),
                ("destination", &destination),
                ("action", &action),
                ("result", &result),
                ("request", &request),
            ]);
            let items: Vec<AuditEvent> = api.list_all("/api/audit", &q).await?;
            print(out.output, &items, &EVENT_HEADERS, event_row)?;
        }
        AuditCmd::Tail { lines } => {
            let first: infra_api::Page<AuditEvent> = api.get("/api/audit?limit=1").await?;
            // The newest event's number (not the count: retention may have
            // archived the oldest).
            let total = first.total_count;
            let newest = if total == 0 {
                0
            } else {
                let last: infra_api::Page<AuditEvent> = api.get(&format!("/api/audit?limit=1&page={total}")).await?;
                last.items.first().map_or(0, |e| e.seq)
            };
            let mut after = newest.saturating_sub(i64::from(lines));
            loop {
                let p: infra_api::Page<AuditEvent> = api.get(&format!("/api/audit?after={after}&limit=1000")).await?;
                for e in &p.items {
                    println!("{}", event_row(e).join("  "));
                    after = e.seq;
                }
                if p.items.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        AuditCmd::Verify { full } => {
            let path = if full {
                "/api/audit/verify?full=true"
            } else {
                "/api/audit/verify"
            };
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut result = None;
            api.get_lines(path, |l| {
                if l.is_empty() {
                    return Ok(());
                }
                match serde_json::from_str::<AuditVerifyLine>(l)? {
                    AuditVerifyLine::Progress { checked } => {
                        if show {
                            eprint!("\rverifying: {checked} events checked");
                        }
                    }
                    AuditVerifyLine::Result(r) => result = Some(r),
                }
                Ok(())
            })
            .await?;
            if show {
                eprint!("\r\x1b[K");
            }
            let r: AuditVerifyResponse = result
                .ok_or_else(|| anyhow::anyhow!("the server ended the verification without a result; try again"))?;
            if r.ok {
                println!("{}", r.message);
            } else {
                anyhow::bail!(
                    "audit log verification FAILED at event {}: {}",
                    r.bad_seq.unwrap_or(0),
                    r.message
                );
            }
        }
    }
    Ok(())
}
