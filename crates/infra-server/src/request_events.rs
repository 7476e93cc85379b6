//! Access requests over time: the sweep that expires unreviewed requests
//! and ends approved ones, and the delivery of request events to the
//! receivers teams configured.
//!
//! A receiver reads the audit log: every `request.*` event after the last
//! one it acknowledged (2xx), one POST each, in order. Nothing is queued
//! anywhere else, so nothing is lost while a receiver is down or the
//! server restarts; a failure is retried with a growing pause (at most
//! five minutes). Each POST carries `X-Infra-Signature: t=UNIX,v1=HEX`,
//! the HMAC-SHA256 of `UNIX.BODY` with the receiver's secret. One replica
//! at a time delivers to a receiver (a lease in the store).

use std::time::Duration;

use infra_store::{AuditRow, now_ms, requests};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The audit actions a receiver is sent: `request.create`, `.approve`, ...
const PREFIX: &str = "request.";
/// Events per delivery round.
const BATCH: i64 = 50;
/// How long a replica holds a receiver while it delivers: longer than a
/// round can take (`BATCH` posts of at most `TIMEOUT` each).
const LEASE_MS: i64 = 11 * 60_000;
/// The longest one POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The context the secrets of receivers are sealed under.
pub(crate) fn secret_context(name: &str) -> String {
    format!("infra request webhook v1:{name}")
}

/// Runs until `shutdown`: sweeps, then delivers, every second.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let http = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "request events: cannot make an HTTP client; webhooks will not be delivered");
            return;
        }
    };
    loop {
        if let Err(e) = crate::api::request_grants::sweep(&state).await {
            tracing::warn!(error = %e.message, "access requests: the sweep failed; trying again");
        }
        if let Err(e) = deliver(&state, &http).await {
            tracing::warn!(error = %e, "request webhooks: delivery round failed");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn deliver(state: &AppState, http: &reqwest::Client) -> Result<(), infra_store::StoreError> {
    let hooks = {
        let mut c = state.store.conn().await?;
        requests::webhooks(&mut c).await?
    };
    let now = now_ms();
    for due in hooks.into_iter().filter(|w| w.next_at <= now) {
        let (w, events) = {
            let mut c = state.store.conn().await?;
            if !requests::lease_webhook(&mut c, &due.name, now, now + LEASE_MS).await? {
                continue;
            }
            // Read again under the lease: another replica may have
            // delivered since the list was read.
            let Some(w) = requests::webhook(&mut c, &due.name).await? else {
                continue;
            };
            let events = infra_store::audit::actions_after(&mut c, w.last_seq, PREFIX, BATCH).await?;
            (w, events)
        };
        let mut last = w.last_seq;
        let mut failed = None;
        let secret = infra_auth::envelope::open(&state.root_key, &secret_context(&w.name), &w.secret_sealed);
        let Ok(secret) = secret else {
            failed = Some((
                "the secret cannot be opened with this root key".to_owned(),
                now + 300_000,
            ));
            let mut c = state.store.conn().await?;
            let f = failed.as_ref().map(|(e, at)| (e.as_str(), *at));
            requests::webhook_done(&mut c, &w.name, last, f, now_ms()).await?;
            continue;
        };
        for ev in &events {
            let body = payload(state, &w.format, ev);
            match post(http, &w.url, secret.expose(), ev, body).await {
                Ok(()) => last = ev.seq,
                Err(e) => {
                    let pause = (1_000_i64 << w.failures.clamp(0, 8)).min(300_000);
                    tracing::warn!(webhook = %w.name, error = %e, retry_in_ms = pause, "request webhook failed");
                    failed = Some((e, now_ms() + pause));
                    break;
                }
            }
        }
        let mut c = state.store.conn().await?;
        let f = failed.as_ref().map(|(e, at)| (e.as_str(), *at));
        requests::webhook_done(&mut c, &w.name, last, f, now_ms()).await?;
    }
    Ok(())
}

/// The request id an event's detail starts with (`request=ID ...`).
fn request_of(ev: &AuditRow) -> Option<&str> {
    ev.detail.strip_prefix("request=")?.split_whitespace().next()
}

/// The body for a receiver of `format`: the event as JSON, or for Slack a
/// message with what to run.
fn payload(state: &AppState, format: &str, ev: &AuditRow) -> String {
    let request = request_of(ev).unwrap_or_default();
    let server = &state.settings.public_url;
    let doc = if format == "slack" {
        let what = match ev.action.as_str() {
            "request.create" => "asks for access",
            "request.approve" => "approved",
            "request.deny" => "denied",
            "request.grant" => "granted",
            "request.break-glass" => ":rotating_light: BREAK-GLASS access, without review:",
            "request.cancel" => "cancelled",
            "request.expire" => "expired unreviewed:",
            "request.end" => "ended:",
            _ => "",
        };
        let review = if ev.action == "request.create" && ev.result == "success" {
            format!("\n<{server}/console/requests/{request}|Review it in Infra>, or `infra request approve {request}`")
        } else {
            String::new()
        };
        serde_json::json!({ "text": format!("*{}* {what} {}{review}", slack_text(&ev.actor), slack_text(&ev.detail)) })
    } else {
        serde_json::json!({
            "event": ev.action,
            "request": request,
            "seq": ev.seq,
            "timeMs": ev.time_ms,
            "actor": ev.actor,
            "target": ev.target,
            "result": ev.result,
            "detail": ev.detail,
            "server": server,
            "url": if request.is_empty() { String::new() } else { format!("{server}/console/requests/{request}") },
        })
    };
    doc.to_string()
}

/// Text a requester wrote, as Slack shows it and never as markup: `&`,
/// `<`, `>` escaped (no links, mentions or `<!channel>`), one line.
fn slack_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c if c.is_control() => " ".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Where a URL points, without its path or query (a Slack webhook's path
/// is its secret): for messages and errors.
pub(crate) fn url_host(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or_default()),
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// `X-Infra-Signature` for `body` at `t` (unix seconds).
pub(crate) fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

async fn post(http: &reqwest::Client, url: &str, secret: &[u8], ev: &AuditRow, body: String) -> Result<(), String> {
    let t = now_ms() / 1000;
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-infra-event", &ev.action)
        .header("x-infra-delivery", ev.seq.to_string())
        .header("x-infra-signature", signature(secret, t, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{}: {}", url_host(url), e.without_url()))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {}", url_host(url), resp.status()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_a_requester_wrote_is_never_slack_markup_and_urls_keep_their_secret() {
        assert_eq!(
            super::slack_text("<!channel> <https://evil|Review>\n*x* & y"),
            "&lt;!channel&gt; &lt;https://evil|Review&gt; *x* &amp; y"
        );
        assert_eq!(
            super::url_host("https://hooks.slack.com/services/T/B/SECRET"),
            "https://hooks.slack.com/…"
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // RFC 4231 test case 2 shape: key "Jefe".
        let s = super::signature(b"Jefe", 1, "what do ya want for nothing?");
        assert!(s.starts_with("t=1,v1="), "{s}");
        assert_eq!(s.len(), "t=1,v1=".len() + 64);
        assert_ne!(super::signature(b"Jefe", 2, "x"), super::signature(b"Jefe", 1, "x"));
    }
}
