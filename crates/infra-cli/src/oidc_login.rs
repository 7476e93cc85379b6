//! `infra login --provider NAME`: through an OpenID Connect provider, by
//! authorization code with PKCE and a loopback redirect (a browser on this
//! machine), or by the device grant (`--device`, for machines without one).
//!
//! The server is the OAuth client: it holds the client secret, the PKCE
//! verifier and the nonce. This side only carries the browser's redirect
//! back to it, after checking that the state is the one it was given.

use std::time::Duration;

use anyhow::Context;
use infra_api::{AuthorizeRequest, AuthorizeResponse, DeviceStart, LoginRequest, LoginResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Api, enc};

/// How long the loopback listener waits for the browser.
const WAIT: Duration = Duration::from_secs(300);

pub(crate) async fn code(api: &Api, provider: &str, port: u16) -> anyhow::Result<LoginResponse> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("listen on 127.0.0.1:{port} for the browser's redirect (choose another with --callback-port)")
        })?;
    let redirect_uri = format!("http://127.0.0.1:{}/callback", listener.local_addr()?.port());
    let start: AuthorizeResponse = api
        .post(
            &format!("/api/providers/{}/authorize", enc(provider)),
            &AuthorizeRequest {
                redirect_uri: redirect_uri.clone(),
            },
        )
        .await?;
    eprintln!(
        "Log in through {provider} in your browser. If it does not open, open this URL:\n\n  {}\n",
        start.url
    );
    open_browser(&start.url);
    let (code, state) = tokio::time::timeout(WAIT, callback(&listener, &start.state))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from the browser within {} s; run 'infra login' again",
                WAIT.as_secs()
            )
        })??;
    api.post(
        "/api/login",
        &LoginRequest {
            provider: Some(provider.to_owned()),
            code: Some(code),
            state: Some(state),
            redirect_uri: Some(redirect_uri),
            ..Default::default()
        },
    )
    .await
}

/// Waits for the provider's redirect; answers the browser with a page
/// that says what happened. Requests for other paths (a favicon) are
/// answered 404 and waited past.
async fn callback(listener: &tokio::net::TcpListener, expected_state: &str) -> anyhow::Result<(String, String)> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut n = 0;
        while n < buf.len() {
            let m = sock.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            continue;
        };
        if url.path() != "/callback" {
            let _ = sock
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            continue;
        }
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        let outcome = match (q.get("error"), q.get("code"), q.get("state")) {
            (Some(e), _, _) => Err(format!(
                "the provider refused: {e}{}",
                q.get("error_description").map(|d| format!(" ({d})")).unwrap_or_default()
            )),
            (None, Some(_), Some(s)) if s != expected_state => Err(
                "the redirect's state is not the one this login started with (a forged or stale redirect); run 'infra login' again"
                    .into(),
            ),
            (None, Some(c), Some(s)) => Ok((c.clone(), s.clone())),
            _ => Err("the redirect carries no code and state".into()),
        };
        let page = match &outcome {
            Ok(_) => "Logged in to Infra. You can close this tab and go back to the terminal.".to_owned(),
            Err(e) => format!("Login failed: {e}"),
        };
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>Infra</title><p>{}</p>",
            html(&page)
        );
        let _ = sock
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return outcome.map_err(anyhow::Error::msg);
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Opens `url` with `$BROWSER`, or xdg-open; quietly does nothing when
/// neither exists (the URL is printed anyway).
fn open_browser(url: &str) {
    let cmd = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "xdg-open".into());
    let _ = std::process::Command::new(cmd)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

pub(crate) async fn device(api: &Api, provider: &str) -> anyhow::Result<LoginResponse> {
    let d: DeviceStart = api
        .post(
            &format!("/api/providers/{}/device", enc(provider)),
            &serde_json::json!({}),
        )
        .await?;
    eprintln!(
        "To log in through {provider}, open {} on any device and enter the code:\n\n  {}\n",
        d.verification_uri, d.user_code
    );
    if let Some(u) = &d.verification_uri_complete {
        eprintln!("(or open {u})\n");
    }
    eprintln!("Waiting for you to finish...");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(d.expires_in.min(3600));
    let mut interval = Duration::from_secs(d.interval.clamp(1, 60));
    loop {
        tokio::time::sleep(interval).await;
        let req = LoginRequest {
            provider: Some(provider.to_owned()),
            device_code: Some(d.device_code.clone()),
            ..Default::default()
        };
        match api.post::<_, LoginResponse>("/api/login", &req).await {
            Ok(r) => return Ok(r),
            Err(e) => match e.downcast_ref::<crate::client::ApiError>() {
                Some(a) if a.status == 428 && a.message.contains("slow_down") => {
                    interval = (interval + Duration::from_secs(5)).min(Duration::from_secs(60));
                }
                Some(a) if a.status == 428 => {}
                _ => return Err(e),
            },
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the code expired before the login finished; run 'infra login --device' again");
        }
    }
}
