//! An HTTP webhook: batches of events as JSON, retried until the receiver
//! answers 2xx.

use infra_store::AuditRow;

pub(crate) struct WebhookSink {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl WebhookSink {
    /// `https://…` (or `http://…` on a trusted network); `token` is sent as
    /// `Authorization: Bearer`.
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("webhook '{url}': use an https:// (or http://) URL"));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            token,
            http,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `POST {"events": [...]}`, with the batch's first and last `seq` in
    /// headers too; 2xx is the receiver's acknowledgement.
    pub(crate) async fn post(&mut self, rows: &[AuditRow]) -> Result<(), String> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        let body = serde_json::json!({ "events": rows });
        let mut req = self
            .http
            .post(&self.url)
            .header("x-infra-audit-first-seq", first.seq.to_string())
            .header("x-infra-audit-last-seq", last.seq.to_string())
            .json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{}: {e}", self.url))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {}", self.url, resp.status()))
        }
    }
}
