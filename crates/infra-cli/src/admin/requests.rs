//! `infra request`, `infra access-policy` and `infra request-webhooks`:
//! just-in-time access (docs/access-requests.md).

use clap::{Args, Subcommand};
use infra_api::{
    AccessPolicy, AccessRequest, CreateAccessRequest, CreateRequestWebhook, RequestWebhook, ReviewRequest,
};

use crate::client::{Api, enc};
use crate::output::{Format, OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum RequestCmd {
    /// Ask for a role on one or more destinations, or for a group, for a while.
    #[command(
        after_help = "Examples:\n  infra request add prod --role view --for 2h --reason INC-1234\n  infra request add prod.payments staging.payments --role edit --for 1h --reason 'deploy fix'\n  infra request add --group oncall --for 8h --reason 'my shift'\n  infra request add prod --role edit --for 30m --reason 'outage' --break-glass\n\nThe answer says what the request would give, whether it waits for review\n(and by whom), or was granted at once. 'infra access-policy list' shows\nwhat you may ask for."
    )]
    Add(AddArgs),
    /// List requests: yours, those you may review (--to-review), or with view on Infra, all.
    List {
        /// Only the requests you may review.
        #[arg(long)]
        to_review: bool,
        /// Only your own.
        #[arg(long, conflicts_with = "to_review")]
        mine: bool,
        /// pending, approved, denied, expired, cancelled or ended.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show a request: what it gives, its reviews and, for reviewers, what the requester holds now.
    Show {
        id: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Approve a request (never your own). Once it has the approvals its policy needs, it is granted.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a request: final.
    Deny {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw your pending request.
    Cancel { id: String },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Destinations (or DEST.NAMESPACE) to ask a role on.
    resources: Vec<String>,
    #[arg(long)]
    role: Option<String>,
    /// Ask for this group's membership instead.
    #[arg(long, conflicts_with_all = ["resources", "role"])]
    group: Option<String>,
    /// How long, such as 2h.
    #[arg(long = "for")]
    duration: String,
    /// Why: a ticket, an incident.
    #[arg(long)]
    reason: String,
    /// Approve it yourself, where a policy allows break-glass: short, flagged and notified.
    #[arg(long)]
    break_glass: bool,
    #[command(flatten)]
    out: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum AccessPolicyCmd {
    /// Say who may request what, for how long, and who approves.
    #[command(
        after_help = "Examples:\n  infra access-policy add prod-access --requesters devs --resource 'prod' --resource 'prod.*' \\\n      --role view --role edit --max 4h --approvers sre --approvals-for edit=2\n  infra access-policy add oncall --requesters sre --group oncall --max 12h --approvers infra-admins\n  infra access-policy add peek --requesters devs --resource '*' --role view --max 1h --auto-approve view --auto-approve-members oncall\n  infra access-policy add emergency --requesters sre --resource 'prod' --role edit --max 1h \\\n      --approvers sre --break-glass 30m"
    )]
    Add(Box<PolicyArgs>),
    /// List access policies.
    List(OutputArg),
    /// Remove an access policy; its pending requests expire unreviewed.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    name: String,
    /// Groups whose members may request (repeat).
    #[arg(long = "requesters", required = true)]
    requesters: Vec<String>,
    /// Resources: DEST, DEST.NAMESPACE, DEST.* (any namespace) or * (any destination) (repeat).
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// Roles that may be requested on them (repeat).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Groups whose membership may be requested (repeat).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The longest a request may ask for.
    #[arg(long)]
    max: String,
    /// Groups whose members approve, or infra-admins (repeat).
    #[arg(long = "approvers")]
    approvers: Vec<String>,
    /// Approvals needed.
    #[arg(long, default_value_t = 1)]
    approvals: u32,
    /// More approvals for a role: ROLE=N (repeat).
    #[arg(long = "approvals-for", value_parser = parse_role_count)]
    approvals_for: Vec<(String, u32)>,
    /// Roles granted without review (repeat).
    #[arg(long = "auto-approve")]
    auto_approve: Vec<String>,
    /// Auto-approve only for members of this group, such as the on-call rota's (repeat).
    #[arg(long = "auto-approve-members")]
    auto_approve_members: Vec<String>,
    /// Allow break-glass for at most this long.
    #[arg(long)]
    break_glass: Option<String>,
    /// How long a request waits for review (default 24h).
    #[arg(long)]
    review_within: Option<String>,
}

fn parse_role_count(s: &str) -> Result<(String, u32), String> {
    let (r, n) = s.split_once('=').ok_or("use ROLE=N, such as edit=2")?;
    Ok((r.to_owned(), n.parse().map_err(|_| "N is a number, such as edit=2")?))
}

#[derive(Debug, Subcommand)]
pub enum RequestWebhooksCmd {
    /// Send every request event to URL, signed (X-Infra-Signature); prints the signing secret once.
    Add {
        name: String,
        #[arg(long)]
        url: String,
        /// json, or slack for a Slack incoming webhook.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// List receivers and how far each has got.
    List(OutputArg),
    /// Remove a receiver.
    Remove { name: String },
}

fn show(r: &AccessRequest) {
    eprintln!("Request {} by {} ({}): {}", r.id, r.requester, r.policy, r.state);
    for a in &r.asks {
        eprintln!("  gives: {}", a.means);
    }
    eprintln!("  for {}; reason: {}", r.duration, r.reason);
    if r.break_glass {
        eprintln!("  BREAK-GLASS: approved by the requester, without review");
    }
    match r.state.as_str() {
        "pending" => eprintln!(
            "  approvals {}/{}; expires unreviewed at {}",
            r.approvals,
            r.approvals_needed,
            when(&r.review_by)
        ),
        "approved" => eprintln!(
            "  granted until {}",
            r.grants_until.as_deref().map(when).unwrap_or_default()
        ),
        _ => {}
    }
    for v in &r.reviews {
        eprintln!("  {} by {} at {}: {}", v.decision, v.reviewer, when(&v.at), v.reason);
    }
    if let Some(now) = &r.current {
        eprintln!("  {} holds now:", r.requester);
        if now.is_empty() {
            eprintln!("    nothing");
        }
        for g in now {
            let via = g.group.as_ref().map(|g| format!(" (group {g})")).unwrap_or_default();
            eprintln!("    {} on {}{via}", g.role, g.resource);
        }
    }
}

fn one(out: Format, r: &AccessRequest) -> anyhow::Result<()> {
    match out {
        Format::Table => {
            show(r);
            Ok(())
        }
        f => print(f, std::slice::from_ref(r), &[], |_| vec![]),
    }
}

pub(super) async fn run(c: RequestCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        RequestCmd::Add(a) => {
            let req = CreateAccessRequest {
                resources: a.resources,
                role: a.role,
                group: a.group,
                duration: a.duration,
                reason: a.reason,
                break_glass: a.break_glass,
            };
            let r: AccessRequest = api.post("/api/requests", &req).await?;
            one(a.out.output, &r)?;
            if r.state == "pending" {
                eprintln!("Waiting for review. Reviewers see it with 'infra request list --to-review'.");
            } else if r.state == "approved" {
                eprintln!("Granted: 'infra list' shows it now.");
            }
        }
        RequestCmd::List {
            to_review,
            mine,
            state,
            out,
        } => {
            let mut q = Vec::new();
            if to_review {
                q.push("toReview=true".to_owned());
            }
            if mine {
                q.push("mine=true".to_owned());
            }
            if let Some(s) = state {
                q.push(format!("state={}", enc(&s)));
            }
            let items: Vec<AccessRequest> = api.list_all("/api/requests", &q.join("&")).await?;
            print(
                out.output,
                &items,
                &["id", "requester", "asks", "for", "state", "approvals", "created"],
                |r| {
                    vec![
                        r.id.clone(),
                        r.requester.clone(),
                        r.asks
                            .iter()
                            .map(|a| match (&a.role, &a.resource, &a.group) {
                                (Some(role), Some(res), _) => format!("{role} on {res}"),
                                (_, _, Some(g)) => format!("group {g}"),
                                _ => String::new(),
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.duration.clone(),
                        if r.break_glass {
                            format!("{} (break-glass)", r.state)
                        } else {
                            r.state.clone()
                        },
                        format!("{}/{}", r.approvals, r.approvals_needed),
                        when(&r.created),
                    ]
                },
            )?;
        }
        RequestCmd::Show { id, out } => {
            let r: AccessRequest = api.get(&format!("/api/requests/{}", enc(&id))).await?;
            one(out.output, &r)?;
        }
        RequestCmd::Approve { id, reason } => {
            let r: AccessRequest = api
                .post(
                    &format!("/api/requests/{}/approve", enc(&id)),
                    &ReviewRequest { reason },
                )
                .await?;
            show(&r);
        }
        RequestCmd::Deny { id, reason } => {
            let r: AccessRequest = api
                .post(&format!("/api/requests/{}/deny", enc(&id)), &ReviewRequest { reason })
                .await?;
            show(&r);
        }
        RequestCmd::Cancel { id } => {
            let r: AccessRequest = api
                .post(&format!("/api/requests/{}/cancel", enc(&id)), &serde_json::json!({}))
                .await?;
            show(&r);
        }
    }
    Ok(())
}

pub(super) async fn run_policy(c: AccessPolicyCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        AccessPolicyCmd::Add(a) => {
            let a = *a;
            let doc = AccessPolicy {
                name: a.name,
                requesters: a.requesters,
                roles: a.roles,
                resources: a.resources,
                groups: a.groups,
                max: a.max,
                approvers: a.approvers,
                approvals: a.approvals,
                approvals_for: a.approvals_for.into_iter().collect(),
                auto_approve: a.auto_approve,
                auto_approve_members: a.auto_approve_members,
                break_glass: a.break_glass,
                review_within: a.review_within,
                created: None,
                created_by: None,
            };
            let p: AccessPolicy = api.post("/api/access-policies", &doc).await?;
            eprintln!("Added access policy {}", p.name);
        }
        AccessPolicyCmd::List(o) => {
            let items: Vec<AccessPolicy> = api.get("/api/access-policies").await?;
            print(
                o.output,
                &items,
                &[
                    "name",
                    "requesters",
                    "may request",
                    "max",
                    "approved by",
                    "auto",
                    "break-glass",
                ],
                |p| {
                    let mut what: Vec<String> = p
                        .roles
                        .iter()
                        .map(|r| format!("{r} on {}", p.resources.join("|")))
                        .collect();
                    what.extend(p.groups.iter().map(|g| format!("group {g}")));
                    let more: Vec<String> = p.approvals_for.iter().map(|(r, n)| format!("{r}: {n}")).collect();
                    vec![
                        p.name.clone(),
                        p.requesters.join(","),
                        what.join(", "),
                        p.max.clone(),
                        format!(
                            "{} of {}{}",
                            p.approvals,
                            p.approvers.join("|"),
                            if more.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", more.join(", "))
                            }
                        ),
                        p.auto_approve.join(","),
                        p.break_glass.clone().unwrap_or_default(),
                    ]
                },
            )?;
        }
        AccessPolicyCmd::Remove { name } => {
            api.delete(&format!("/api/access-policies/{}", enc(&name))).await?;
            eprintln!("Removed access policy {name}");
        }
    }
    Ok(())
}

pub(super) async fn run_webhooks(c: RequestWebhooksCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        RequestWebhooksCmd::Add { name, url, format } => {
            let w: RequestWebhook = api
                .post(
                    "/api/request-webhooks",
                    &CreateRequestWebhook {
                        name,
                        url,
                        format: Some(format),
                    },
                )
                .await?;
            eprintln!("Added request webhook {}. Its signing secret, shown only now:", w.name);
            println!("{}", w.secret.unwrap_or_default());
            eprintln!(
                "Check each POST: X-Infra-Signature is t=UNIX,v1=HEX, HEX = HMAC-SHA256(secret, \"UNIX.\" + body)."
            );
        }
        RequestWebhooksCmd::List(o) => {
            let items: Vec<RequestWebhook> = api.get("/api/request-webhooks").await?;
            print(
                o.output,
                &items,
                &["name", "url", "format", "delivered up to", "failures", "last error"],
                |w| {
                    vec![
                        w.name.clone(),
                        w.url.clone(),
                        w.format.clone(),
                        w.delivered_up_to.to_string(),
                        w.failures.to_string(),
                        w.last_error.clone().unwrap_or_default(),
                    ]
                },
            )?;
        }
        RequestWebhooksCmd::Remove { name } => {
            api.delete(&format!("/api/request-webhooks/{}", enc(&name))).await?;
            eprintln!("Removed request webhook {name}");
        }
    }
    Ok(())
}
