//! The HTTP side of forward-auth: the endpoint nginx, Caddy and Traefik
//! call (`/api/forward-auth`), Envoy's HTTP `ext_authz` service
//! (`/api/ext-authz/...`), the callback that keeps a browser's token as a
//! cookie for the application's host, and the loop that keeps the
//! decision's inputs current.

use std::time::Duration;

use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use infra_core::{AppOrigin, ReturnPath};
use infra_store::now_ms;
use infra_tunnel::credential;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{Apps, Ask, Ready, Verdict};
use crate::authn::Source;
use crate::state::AppState;

/// Rebuilt at least this often without a change, like connectors'
/// snapshots.
const REFRESH: Duration = Duration::from_secs(30);

/// Keeps [`Apps`] current: now, on every change signal and every
/// [`REFRESH`], until `shutdown`.
pub(crate) async fn keep(state: AppState, shutdown: CancellationToken) {
    let mut changes = state.hub.subscribe();
    loop {
        match build(&state).await {
            Ok(r) => state.forward_auth.set(r),
            Err(e) => tracing::warn!(error = %e, "cannot read forward-auth destinations; keeping the last ones"),
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(REFRESH) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn build(state: &AppState) -> Result<Ready, infra_store::StoreError> {
    let rows = {
        let mut c = state.store.conn().await?;
        infra_store::connectors::forward_auth_destinations(&mut c).await?
    };
    let apps: Vec<(String, AppOrigin)> = rows
        .into_iter()
        .filter_map(|(n, u)| AppOrigin::parse(&u).ok().map(|o| (n, o)))
        .collect();
    let names: Vec<String> = apps.iter().map(|(n, _)| n.clone()).collect();
    let s = crate::grants_snapshot::grants_snapshot(state, &names).await?;
    let issuer = state.settings.public_url.clone();
    let decider = infra_auth::decide::Decider::new(
        &s.jwks,
        std::sync::Arc::new(s.grant_view()),
        &s.revoked_sessions,
        &issuer,
        &[],
    );
    Ok(Ready::new(decider, apps, issuer))
}

/// Which proxy protocol asked: named in the audit detail.
#[derive(Clone, Copy)]
enum Via {
    ForwardAuth,
    ExtAuthzHttp,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::ForwardAuth => "forward-auth",
            Via::ExtAuthzHttp => "ext-authz-http",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Options {
    /// `true`: answer a browser's page load with a redirect to sign in
    /// instead of a 401 (for proxies that hand the answer to the client:
    /// Caddy, Traefik). nginx's `auth_request` takes only 2xx, 401, 403.
    #[serde(default)]
    redirect: bool,
}

fn text<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Ask whether a request may reach a forward-auth destination (for nginx
/// `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth): 200 with
/// identity headers, 401 with a sign-in `Location`, or 403 with a reason.
#[utoipa::path(get, path = "/api/forward-auth", tag = "forward-auth",
    params(("redirect" = Option<bool>, Query, description = "answer a browser's page load with a 302 to sign in instead of a 401")),
    responses((status = 200), (status = 302), (status = 401, body = infra_api::ErrorBody), (status = 403, body = infra_api::ErrorBody)))]
///
/// The original request as the proxy describes it, in one spelling:
/// `X-Forwarded-Host` (required: the proxy sets it itself, as each
/// documented configuration does, since it names the application decided
/// about), `X-Forwarded-Method`, `X-Forwarded-Uri`.
pub(crate) async fn forward_auth(
    State(state): State<AppState>,
    Source(source): Source,
    Query(opts): Query<Options>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(host) = text(&headers, "x-forwarded-host") else {
        return error(
            400,
            "the proxy must name the application in X-Forwarded-Host (see docs/forward-auth.md)",
        );
    };
    let ask = Ask {
        host,
        method: text(&headers, "x-forwarded-method")
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(method),
        uri: text(&headers, "x-forwarded-uri").unwrap_or("/"),
        headers: &headers,
    };
    answer(&state, &source, Via::ForwardAuth, &ask, opts.redirect)
}

/// `/api/ext-authz/<original path>`: Envoy's HTTP authorization service
/// sends the original method, the original `Host`, and the path after
/// its `path_prefix`. The host is read from `Host` only: a client's own
/// `X-Forwarded-Host` must not choose which application is decided about.
pub(crate) async fn ext_authz(
    State(state): State<AppState>,
    Source(source): Source,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    // HTTP/1.1 carries it in `Host`, HTTP/2 in `:authority`.
    let Some(host) = text(&headers, header::HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str())) else {
        return error(400, "the request has no Host");
    };
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let ask = Ask {
        host,
        method,
        uri: pq
            .strip_prefix(EXT_AUTHZ_PREFIX)
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/"),
        headers: &headers,
    };
    answer(&state, &source, Via::ExtAuthzHttp, &ask, true)
}

/// Envoy's `path_prefix` for the HTTP service.
pub(crate) const EXT_AUTHZ_PREFIX: &str = "/api/ext-authz";
/// The same, within the `/api` router.
pub(crate) const EXT_AUTHZ_SUBPATH: &str = "/ext-authz";

fn answer(state: &AppState, source: &str, via: Via, ask: &Ask<'_>, redirect_browsers: bool) -> Response {
    let Some(ready) = state.forward_auth.current() else {
        return error(
            503,
            "the server is still loading its forward-auth destinations; try again shortly",
        );
    };
    let started = std::time::Instant::now();
    let verdict = ready.decide(ask, now_ms());
    if !record(state, ask, &verdict, via.as_str(), source, started) {
        return error(503, "the audit log is behind; try again shortly");
    }
    match verdict {
        Verdict::Allow {
            ident, upstream_cookie, ..
        } => {
            let mut r = StatusCode::OK.into_response();
            let h = r.headers_mut();
            for (name, value) in super::upstream_headers(&ident) {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            // What the upstream gets as `Cookie` (Infra's own removed):
            // nginx and Caddy set it from this header, Envoy from `cookie`.
            let cookie = upstream_cookie.unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                h.insert(HeaderName::from_static("x-infra-cookie"), v.clone());
                if matches!(via, Via::ExtAuthzHttp) && !cookie.is_empty() {
                    h.insert(header::COOKIE, v);
                }
            }
            let mut remove = super::headers_to_remove(ask.headers);
            if matches!(via, Via::ExtAuthzHttp) && cookie.is_empty() && ask.headers.contains_key(header::COOKIE) {
                remove.push("cookie".into());
            }
            if let Ok(v) = HeaderValue::from_str(&remove.join(",")) {
                h.insert(HeaderName::from_static("x-envoy-auth-headers-to-remove"), v);
            }
            no_store(r)
        }
        Verdict::Deny {
            status,
            message,
            sign_in,
            ..
        } => {
            if let Some(to) = &sign_in
                && redirect_browsers
                && credential::wants_html(ask.headers, &ask.method)
                && let Ok(v) = HeaderValue::from_str(to)
            {
                let mut r = StatusCode::FOUND.into_response();
                r.headers_mut().insert(header::LOCATION, v);
                return no_store(r);
            }
            let mut r = error(status, &message);
            if let Some(v) = sign_in.and_then(|s| HeaderValue::from_str(&s).ok()) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let body = axum::Json(infra_api::ErrorBody {
        code: status.as_u16(),
        message: message.to_owned(),
    });
    no_store((status, body).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Callback {
    token: Option<String>,
    rd: Option<String>,
}

/// `/.infra/callback?token=…&rd=/path` on a forward-auth application's
/// host (its proxy routes `/.infra/` here): keeps the token as a cookie
/// for that host only, and goes back to the page. The token is checked
/// first, so a forged link cannot plant a cookie that would let anyone
/// in.
pub(crate) async fn callback(State(state): State<AppState>, Query(q): Query<Callback>, headers: HeaderMap) -> Response {
    let Some(host) = text(&headers, "x-forwarded-host").or_else(|| text(&headers, header::HOST.as_str())) else {
        return error(400, "the proxy must send the original host (X-Forwarded-Host or Host)");
    };
    let Some(token) = q.token else {
        return error(400, "missing token");
    };
    let Some(ready) = state.forward_auth.current() else {
        return error(
            503,
            "the server is still loading its forward-auth destinations; try again shortly",
        );
    };
    let Some(dest) = ready.destination_for(host).map(|(d, _)| d.to_owned()) else {
        return error(404, "no forward-auth destination has this host");
    };
    let Ok(claims) = ready.decider.verify(&token, &dest) else {
        return error(
            401,
            "the token in this link is invalid or expired; open the application again",
        );
    };
    if let Err(d) = ready.decider.authorize(&claims, &dest, now_ms()) {
        return error(d.status, &d.message);
    }
    let rd = ReturnPath::or_root(q.rd.as_deref().unwrap_or("/"));
    let max_age = (claims.exp - now_ms() / 1000).max(0);
    let cookie = credential::token_set_cookie(&token, max_age);
    let mut r = StatusCode::FOUND.into_response();
    if let (Ok(loc), Ok(c)) = (HeaderValue::from_str(rd.as_str()), HeaderValue::from_str(&cookie)) {
        r.headers_mut().insert(header::LOCATION, loc);
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    no_store(r)
}

/// For `/authorize`: the forward-auth destination at this origin.
pub(crate) fn destination_at(apps: &Apps, host: &str, port: u16) -> Option<(String, String)> {
    let ready = apps.current()?;
    ready
        .destination_at(host, port)
        .map(|(d, o)| (d.to_owned(), o.to_string()))
}

/// Records a decision in the audit log (through the server's one audit
/// writer); `false` if it could not be queued, and then the proxy is told
/// to try again rather than let a request through unrecorded.
pub(super) fn record(
    state: &AppState,
    ask: &Ask<'_>,
    verdict: &Verdict,
    via: &'static str,
    source: &str,
    started: std::time::Instant,
) -> bool {
    let (destination, allowed) = match verdict {
        Verdict::Allow { destination, .. } => (destination.as_str(), true),
        // An unknown host is the client's word: not a label.
        Verdict::Deny { destination, .. } => (destination.as_deref().unwrap_or("unknown"), false),
    };
    crate::metrics::decided(destination, via, allowed, started.elapsed());
    let uri: String = ask.uri.chars().take(512).collect();
    let ev = match verdict {
        Verdict::Allow { destination, ident, .. } => infra_store::NewAuditEvent {
            actor: ident.email.clone(),
            action: "forward_auth.allow".into(),
            target: destination.clone(),
            source: source.to_owned(),
            result: "success".into(),
            detail: format!("via={via} method={} uri={uri}", ask.method),
        },
        Verdict::Deny {
            destination,
            status,
            message,
            user,
            ..
        } => infra_store::NewAuditEvent {
            actor: user.clone(),
            action: "forward_auth.deny".into(),
            target: destination
                .clone()
                .unwrap_or_else(|| ask.host.chars().take(100).collect()),
            source: source.to_owned(),
            result: "denied".into(),
            detail: format!(
                "via={via} method={} uri={uri} status={status} reason={message}",
                ask.method
            ),
        },
    };
    state.audit_intake.record(ev)
}
